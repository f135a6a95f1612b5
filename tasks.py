"""
Checkable tasks for masked diffusion: row datasets whose answers a program can verify exactly
(Kim, Shah et al. 2025, "Train for the Worst, Plan for the Best", Sec. 3.3 and 4).

    python tasks.py --task=naesat --N=25 --P=275                 # data/naesat_n25_p275
    python tasks.py --task=sudoku --givens=36 --tier=naked        # data/sudoku_g36_naked

L&O-NAE-SAT: N binary latents x ~ U{0,1}^N, then P observations, observation j = NAE(x_a, x_b,
x_c) = 1 - [x_a == x_b == x_c] for a fixed random triple (a, b, c) (drawn once from
--triple_seed, recorded in meta['triples']). Tokens 0/1. Generation is unconditional: the whole
row is the answer span (answer_start 0). Metric (the paper's): the share of generated
observation tokens equal to NAE of the generated latents; always answering 1 scores ~75%.

Sudoku: row = puzzle (81 cells, '.' = blank, id 0; digits 1-9 are ids 1-9) then its solution
(81 cells); the answer span is the solution. Difficulty: the number of givens and the tier, i.e.
which strategies a solver needs: 'naked' (naked singles alone solve it), 'hidden' (naked
singles stall, naked + hidden singles solve it), 'search' (singles stall; the solution is still
unique, checked by a backtracking solver). Every puzzle has exactly one solution; no solution
grid is in both train and val. Checker: the answer is a valid grid that keeps every given.

Path-star rows (pathstar.py) have a checker here too (`path_valid`: the answer is a path of
the row's own edges from s to g). Harder ones than G(2,5): `python pathstar.py --mode=incontext
--d=5 --l=5 --N=50` (G(5,5)) and `--d=3 --l=8` (G(3,8)).

Every dataset's meta records objective 'unmasking' (train.py picks it without --objective; the
other masked objectives read the same rows), task, row_len, answer_start, answer_len, itos,
the generation arguments and the command that re-makes it.
"""

import argparse
import math
import os
import shlex
import sys
import time

import numpy as np
import torch

import diffusion
from configurator import run_cli
from utils import DataError, TokenFile, load_meta, token_dtype, write_rows

TASKS = ('naesat', 'sudoku')
TIERS = ('naked', 'hidden', 'search')


# ------------------------------------------------------------------------ L&O-NAE-SAT
def naesat_triples(N, P, seed):
    """(P, 3) int64: distinct latent indices per observation, from their own seed."""
    rng = np.random.default_rng(seed)
    return np.argsort(rng.random((P, N)), axis=1)[:, :3]


def nae(latents, triples):
    """latents (n, N) in {0, 1} -> observations (n, P): 1 unless the triple's values are equal."""
    v = latents[:, triples]  # (n, P, 3)
    return 1 - ((v[..., 0] == v[..., 1]) & (v[..., 1] == v[..., 2])).astype(np.int64)


def naesat_rows(latents, triples):
    return np.concatenate([latents, nae(latents, triples)], axis=1)


def keys_of(a):
    """One hashable key per row of a 2-D integer array: (n,) void bytes."""
    a = np.ascontiguousarray(a, dtype=np.int64)
    return a.view(np.dtype((np.void, a.shape[1] * 8))).ravel()


def make_naesat(N, P, num_train, num_val, seed=0, triple_seed=0):
    """(train rows, val rows, meta). Train latents are i.i.d. (as fresh draws); val latents
    are never train latents when the latent space allows it (2^N >= 4 x num_train; else
    meta['val_disjoint'] is False: at N = 10 train covers all 1,024 latents)."""
    if N < 3 or P < 1:
        raise DataError(f"--N={N} --P={P}: need N >= 3 latents (a triple) and P >= 1")
    rng = np.random.default_rng(seed)
    triples = naesat_triples(N, P, triple_seed)
    train_lat = rng.integers(0, 2, (num_train, N))
    disjoint = 2**N >= 4 * num_train
    val_lat = rng.integers(0, 2, (num_val, N))
    if disjoint:
        seen = keys_of(train_lat)
        while True:
            fresh = ~np.isin(keys_of(val_lat), seen)
            if fresh.all():
                break
            val_lat[~fresh] = rng.integers(0, 2, (int((~fresh).sum()), N))
    train, val = naesat_rows(train_lat, triples), naesat_rows(val_lat, triples)
    args = dict(task='naesat', N=N, P=P, num_train=num_train, num_val=num_val)
    args.update(seed=seed, triple_seed=triple_seed)
    meta = dict(
        **written_meta(args, train, val, 2),
        row_len=N + P,
        answer_start=0,  # unconditional: every position is generated
        answer_len=N + P,
        N=N,
        P=P,
        triples=triples.tolist(),
        val_disjoint=bool(disjoint),
        itos={0: '0', 1: '1'},
        stoi={'0': 0, '1': 1},
    )
    return train, val, meta


def naesat_accuracy(out, meta):
    """out (n, N+P) generated rows -> (n,) float64: share of observations equal to NAE of the
    generated latents (the paper's observation accuracy)."""
    out = np.asarray(out)
    N = meta['N']
    return (out[:, N:] == nae(out[:, :N], np.asarray(meta['triples']))).mean(1)


# ------------------------------------------------------------------------ Sudoku
def _units():
    """(27, 9) cell indices of the rows, columns and boxes; (81, 3) the units of each cell."""
    r, c = np.arange(81) // 9, np.arange(81) % 9
    rows = [np.flatnonzero(r == i) for i in range(9)]
    cols = [np.flatnonzero(c == i) for i in range(9)]
    boxes = [np.flatnonzero((r // 3) * 3 + c // 3 == i) for i in range(9)]
    units = np.array(rows + cols + boxes)
    of_cell = np.stack([r, 9 + c, 18 + (r // 3) * 3 + c // 3], 1)
    return units, of_cell


UNITS, CELL_UNITS = _units()


POPCOUNT = np.array([bin(i).count('1') for i in range(512)])  # digits in a 9-bit mask
LOG2 = np.zeros(512, np.int64)  # the digit index of a one-digit mask
LOG2[1 << np.arange(9)] = np.arange(9)


def unit_masks(grid):
    """grid (n, 81) in 0..9 (0 = empty) -> (n, 27) int: bit d set iff digit d+1 is in unit u."""
    bits = np.where(grid > 0, 1 << np.clip(grid - 1, 0, 8), 0)
    return np.bitwise_or.reduce(bits[:, UNITS], axis=2)


def seen_masks(used):
    """(n, 27) unit masks -> (n, 81): the digits each cell's row, column and box show."""
    return used[:, CELL_UNITS[:, 0]] | used[:, CELL_UNITS[:, 1]] | used[:, CELL_UNITS[:, 2]]


def free_masks(grid):
    """(n, 81) int: bit d set iff digit d+1 fits the empty cell (absent from its row, column
    and box); 0 at filled cells."""
    return np.where(grid == 0, 511 & ~seen_masks(unit_masks(grid)), 0)


def propagate(grid, hidden):
    """Fill forced cells until none is left: naked singles (one candidate in a cell) and, with
    hidden, hidden singles (a digit with one place in a unit). (n, 81) -> (n, 81); a puzzle is
    solved by these strategies iff no 0 is left. Deductions are forced, so on a puzzle made from
    a valid solution they always agree with it."""
    g = np.array(grid, dtype=np.int64)
    while True:
        free = free_masks(g)
        fill = np.where(POPCOUNT[free] == 1, LOG2[free] + 1, 0)  # naked singles
        if hidden:
            in_unit = (free[:, UNITS][..., None] >> np.arange(9)) & 1  # (n, 27, 9 cells, 9)
            once = in_unit.sum(2) == 1  # (n, 27, 9): digit d has one place in unit u
            b, u, d = np.nonzero(once)
            cell = UNITS[u, in_unit[b, u, :, d].argmax(1)]
            fill[b, cell] = d + 1
        fill[g != 0] = 0
        if not fill.any():
            return g
        g = np.where(fill > 0, fill, g)


def random_grids(rng, n):
    """Complete valid grids (m <= n, about half of n), filled cell by cell in a random
    most-constrained-first order with uniform digits among the candidates; a grid that runs
    into a cell with no candidate is dropped (no backtracking: vectorised over the batch)."""
    g = np.zeros((n, 81), np.int64)
    used = np.zeros((n, 27), np.int64)  # unit masks, kept up to date
    alive, ar = np.ones(n, bool), np.arange(n)
    for _ in range(81):
        free = np.where(g == 0, 511 & ~seen_masks(used), 0)
        count = np.where(g == 0, POPCOUNT[free], 99) + 0.5 * rng.random((n, 81))  # random ties
        cell = count.argmin(1)
        c = (free[ar, cell][:, None] >> np.arange(9)) & 1  # (n, 9)
        alive &= c.any(1)
        digit = (rng.random((n, 9)) * c).argmax(1)
        g[ar, cell] = np.where(alive, digit + 1, 0)
        used[ar[:, None], CELL_UNITS[cell]] |= np.where(alive, 1 << digit, 0)[:, None]
    return g[alive]


def naked_removals(rng, solutions, givens):
    """Cells removed one at a time, each a naked single where it is removed (its row, column
    and box still show the 8 other digits): filling them back in reverse order solves the
    puzzle with naked singles, so no solver runs. Stops at `givens` or when no cell qualifies."""
    p = np.array(solutions, dtype=np.int64)
    ar = np.arange(len(p))
    for _ in range(81 - givens):
        seen = seen_masks(unit_masks(p))  # (n, 81): its own digit + the 8 others = 511
        removable = (p > 0) & (seen == 511) & ((p > 0).sum(1) > givens)[:, None]
        if not removable.any():
            break
        cell = (removable * rng.random(p.shape)).argmax(1)
        p[ar, cell] = np.where(removable.any(1), 0, p[ar, cell])
    return p


def remove_while_solved(rng, puzzles, givens, hidden):
    """More removals, each kept only if the strategies (naked singles; with hidden, also hidden
    singles) still solve the puzzle: every filled cell is tried once, in a random order, until
    a puzzle has `givens` givens."""
    p = np.array(puzzles, dtype=np.int64)
    order = np.argsort(rng.random(p.shape), axis=1)
    for k in range(81):
        cell = order[:, k]
        idx = np.flatnonzero((p[np.arange(len(p)), cell] > 0) & ((p > 0).sum(1) > givens))
        if len(idx) == 0:
            break
        q = p[idx]
        q[np.arange(len(idx)), cell[idx]] = 0
        ok = (propagate(q, hidden) > 0).all(1)
        p[idx[ok], cell[idx[ok]]] = 0
    return p


def count_solutions(puzzle, limit=2):
    """Solutions of one puzzle (81 ints, 0 = empty), counted up to `limit` by depth-first
    search on bit masks (fewest candidates first)."""
    rows, cols, boxes = [0] * 9, [0] * 9, [0] * 9
    empty = []
    for i, v in enumerate(int(x) for x in puzzle):
        r, c, b = i // 9, i % 9, (i // 27) * 3 + (i % 9) // 3
        if v:
            bit = 1 << v
            if (rows[r] | cols[c] | boxes[b]) & bit:
                return 0
            rows[r] |= bit
            cols[c] |= bit
            boxes[b] |= bit
        else:
            empty.append((r, c, b))
    full = 0b1111111110

    def search():
        if not empty:
            return 1
        best, best_free = None, None
        for k, (r, c, b) in enumerate(empty):
            free = full & ~(rows[r] | cols[c] | boxes[b])
            if best is None or bin(free).count('1') < bin(best_free).count('1'):
                best, best_free = k, free
                if free == 0:
                    return 0
        r, c, b = empty.pop(best)
        found = 0
        for v in range(1, 10):
            bit = 1 << v
            if best_free & bit:
                rows[r] |= bit
                cols[c] |= bit
                boxes[b] |= bit
                found += search()
                rows[r] &= ~bit
                cols[c] &= ~bit
                boxes[b] &= ~bit
                if found >= limit:
                    break
        empty.insert(best, (r, c, b))
        return found

    return search()


def solved_by(puzzles, tier):
    """(n,) bool: the puzzles belong to `tier` (see the module doc); 'search' also checks that
    the solution is unique (count_solutions)."""
    naked = (propagate(puzzles, hidden=False) > 0).all(1)
    if tier == 'naked':
        return naked
    singles = (propagate(puzzles, hidden=True) > 0).all(1)
    if tier == 'hidden':
        return singles & ~naked
    stalled = np.flatnonzero(~singles)
    out = np.zeros(len(puzzles), bool)
    out[stalled] = [count_solutions(puzzles[i]) == 1 for i in stalled]
    return out


def make_puzzles(rng, solutions, givens, tier):
    """(puzzles, solutions) of `tier` with exactly `givens` givens, one per solution at most:
    'naked' / 'hidden': naked_removals, then remove_while_solved with the tier's strategies
    ('hidden' keeps the puzzles naked singles alone do not solve); 'search': cells removed while
    the solution stays unique (count_solutions, pure Python: slow, for test sets), keeping the
    puzzles singles do not solve. Solutions whose puzzle does not get there are dropped."""
    solutions = np.asarray(solutions, dtype=np.int64)
    if tier == 'search':
        p = solutions.copy()
        for i in range(len(p)):
            for cell in rng.permutation(81):
                if (p[i] > 0).sum() <= givens:
                    break
                v, p[i, cell] = p[i, cell], 0
                if count_solutions(p[i]) != 1:
                    p[i, cell] = v
    else:
        p = naked_removals(rng, solutions, givens)
        p = remove_while_solved(rng, p, givens, hidden=tier == 'hidden')
    ok = ((p > 0).sum(1) == givens) & solved_by(p, tier)
    return p[ok], solutions[ok]


def make_sudoku(givens, tier, num_train, num_val, seed=0, chunk=20_000, quiet=False):
    """(train rows, val rows, meta): rows = puzzle then solution (162 ids); no solution grid of
    val is in train (nor twice in a split)."""
    if tier not in TIERS:
        raise DataError(f"--tier={tier}: choose one of {', '.join(TIERS)}")
    if not 17 <= givens <= 80:
        raise DataError(f"--givens={givens}: a unique Sudoku needs 17 to 80 givens")
    rng = np.random.default_rng(seed)
    out, seen = {}, np.zeros(0, dtype=np.dtype((np.void, 81 * 8)))
    for split, want in (('train', num_train), ('val', num_val)):
        parts, have, tries, t0 = [], 0, 0, time.time()
        while have < want:
            sols = random_grids(rng, min(chunk, 4 * (want - have) + 16))  # ~half survive
            k = keys_of(sols)
            _, first = np.unique(k, return_index=True)  # distinct grids within the draw
            fresh = np.zeros(len(sols), bool)
            fresh[first] = True
            fresh &= ~np.isin(k, seen)
            p, s = make_puzzles(rng, sols[fresh], givens, tier)
            parts.append(np.concatenate([p, s], 1))
            seen = np.concatenate([seen, keys_of(s)])  # also no grid twice within a split
            have, tries = have + len(p), tries + 1
            if tries >= 5 and have == 0:
                raise DataError(
                    f"--givens={givens} --tier={tier}: no puzzle in {tries} draws of "
                    f"{len(sols)} grids; use more givens (naked, hidden) or fewer (search)"
                )
            if not quiet:
                rate = have / max(time.time() - t0, 1e-9)
                print(
                    f"\r{split}: {min(have, want):,}/{want:,} ({rate:,.0f}/s)",
                    end='',
                    file=sys.stderr,
                    flush=True,
                )
        if not quiet:
            print(file=sys.stderr)
        out[split] = np.concatenate(parts)[:want]
        if split == 'train':  # what val must avoid: the train grids kept
            seen = keys_of(out['train'][:, 81:])
    args = dict(task='sudoku', givens=givens, tier=tier, num_train=num_train, num_val=num_val)
    args.update(seed=seed)
    itos = {0: '.', **{d: str(d) for d in range(1, 10)}}
    meta = dict(
        **written_meta(args, out['train'], out['val'], 10),
        row_len=162,
        answer_start=81,
        answer_len=81,
        givens=givens,
        tier=tier,
        itos=itos,
        stoi={v: k for k, v in itos.items()},
    )
    return out['train'], out['val'], meta


def sudoku_valid(rows, answers):
    """rows (n, 162) (the puzzle is rows[:, :81]), answers (n, 81) -> (n,) bool: the answer is a
    complete valid grid (every row, column and box holds 1-9 once) that keeps every given."""
    rows, answers = np.asarray(rows), np.asarray(answers)
    puzzle = rows[:, :81]
    digits = (answers >= 1) & (answers <= 9)
    onehot = np.eye(10, dtype=np.int64)[np.clip(answers, 0, 9)][..., 1:]  # (n, 81, 9)
    per_unit = onehot[:, UNITS].sum(2)  # (n, 27, 9)
    keeps = (puzzle == 0) | (puzzle == answers)
    return digits.all(1) & (per_unit == 1).all((1, 2)) & keeps.all(1)


# ------------------------------------------------------------------------ path-star
def path_valid(rows, answers, meta):
    """In-context path-star rows (n, row_len) (pathstar.py's default layout: edges, '/', s, g,
    '=', pauses, answer) and answers (n, l) -> (n,) bool: the answer starts at s, ends at g, and
    each consecutive pair is an edge u -> v of the row's own graph."""
    if meta.get('format') != 'incontext' or meta.get('reverse') or meta.get('query_first'):
        raise DataError("path_valid reads in-context rows without --reverse / --query_first")
    rows, answers = np.asarray(rows), np.asarray(answers)
    E = meta['d'] * (meta['l'] - 1)
    u, v = rows[:, 0 : 3 * E : 3], rows[:, 1 : 3 * E : 3]  # (n, E)
    s, g = rows[:, 3 * E], rows[:, 3 * E + 1]
    a, b = answers[:, :-1, None], answers[:, 1:, None]  # (n, l-1, 1)
    edges = ((u[:, None] == a) & (v[:, None] == b)).any(2).all(1)
    return (answers[:, 0] == s) & (answers[:, -1] == g) & edges


def wrong_arm(rows, meta):
    """(n, l-1): the nodes, from s's child down to its leaf, of an arm that does not lead to g
    (of the rows' own graphs; the layout of path_valid): the wrong decision a planner can make."""
    rows = np.asarray(rows)
    E, a = meta['d'] * (meta['l'] - 1), meta['answer_start']
    u, v = rows[:, 0 : 3 * E : 3], rows[:, 1 : 3 * E : 3]  # (n, E) edges u -> v
    s, on_path = rows[:, 3 * E], rows[:, a + 1]  # s and the goal arm's first node
    arm = [np.where((u == s[:, None]) & (v != on_path[:, None]), v, -1).max(1)]
    for _ in range(meta['l'] - 2):
        arm.append(np.where(u == arm[-1][:, None], v, -1).max(1))
    return np.stack(arm, 1)


# ------------------------------------------------------------------------ decoding + scores
def task_of(meta):
    """'naesat', 'sudoku' or 'pathstar' (in-context path-star rows), else None."""
    if meta.get('task') in TASKS:
        return meta['task']
    return 'pathstar' if meta.get('format') == 'incontext' else None


def score(rows, out, meta):
    """(n,) float64 success of decoded rows `out` (n, row_len) for the task of `meta`: NAE-SAT
    observation accuracy; Sudoku and path-star 1.0 / 0.0 (valid grid / valid path)."""
    task = task_of(meta)
    a, L = meta['answer_start'], meta['answer_len']
    out = np.asarray(out)
    if task == 'naesat':
        return naesat_accuracy(out, meta)
    if task == 'sudoku':
        return sudoku_valid(rows, out[:, a : a + L]).astype(np.float64)
    if task == 'pathstar':
        return path_valid(rows, out[:, a : a + L], meta).astype(np.float64)
    raise DataError(f"no checker for this dataset (meta task {meta.get('task')!r})")


@torch.no_grad()
def decode(model, rows, meta, steps, device='cpu', batch_size=500, seed=0, **sampler):
    """Decode the answer span of `rows` (n, row_len) (NAE-SAT: the whole row, unconditional)
    with `steps` sampler steps; `sampler`: diffusion.diffusion_sample's options (order, remask,
    temperature, ...; mask/vocab ids from meta). Returns (out (n, row_len) long, info): info
    'nfe' = forward passes per row, 'remasked' (n,) = tokens sent back per row.
    Draws come from one generator seeded by `seed`, so every strategy sees the same seed."""
    base, mask_id, wrong_id = diffusion.vocab_ids(meta)
    a, L = meta['answer_start'], meta['answer_len']
    pad = (meta.get('special_tokens') or {}).get('PAD')
    gen = torch.Generator().manual_seed(seed)
    rows = torch.as_tensor(np.asarray(rows), dtype=torch.long)
    outs, remasked, nfe = [], [], 0
    for chunk in rows.split(batch_size):
        canvas = chunk.clone()
        canvas[:, a : a + L] = mask_id
        attn = (chunk != pad).to(device) if pad is not None else None
        x, info = diffusion.diffusion_sample(
            model,
            canvas.to(device),
            steps,
            mask_id,
            base,
            wrong_id=wrong_id,
            attention_mask=attn,
            gen=gen,
            **sampler,
        )
        outs.append(x.cpu())
        nfe = info['nfe']
        back = info['remasked']
        remasked.append(torch.stack(back).sum(0).cpu() if back else torch.zeros(len(chunk)))
    return torch.cat(outs), {'nfe': nfe, 'remasked': torch.cat(remasked)}


def val_rows(ckpt):
    """(n, row_len) int64 val rows of the dataset a masked-diffusion checkpoint was trained on."""
    cfg, meta = ckpt.get('config') or {}, ckpt['meta']
    data_dir = os.path.join(cfg['data_root'], cfg['dataset'])
    if meta.get('args') != (load_meta(data_dir, required=False) or {}).get('args'):
        raise DataError(
            f"{data_dir} is not the dataset {ckpt['path']} was trained on (other generation "
            f"arguments): re-make it with {meta.get('prepare', 'its prepare command')}"
        )
    file_meta = {**meta, 'vocab_size': meta['base_vocab_size']}
    return TokenFile(data_dir, 'val', file_meta).rows(meta['row_len']).numpy()


def mean_se(x):
    """(mean, standard error) of a 1-D array."""
    x = np.asarray(x, dtype=np.float64)
    return float(x.mean()), float(x.std(ddof=1) / math.sqrt(len(x))) if len(x) > 1 else 0.0


@torch.no_grad()
def task_report(model, rows, meta, n, device='cpu'):
    """Train-time evaluation of a denoiser on the first n val rows: success with random order
    and with margin order, min(50, answer_len) steps (the paper's 50 reverse steps), tokens
    sampled at temperature 1 (NAE-SAT: n unconditional samples)."""
    was_training = model.training
    model.eval()
    steps = min(50, meta['answer_len'])
    out = {}
    for order in ('random', 'margin'):
        dec, _ = decode(model, rows[:n], meta, steps, device, order=order)
        out[f"val_{task_of(meta)}_{order}"] = mean_se(score(rows[:n], dec.numpy(), meta))[0]
    model.train(was_training)
    return out


# ------------------------------------------------------------------------ files
def written_meta(args, train, val, vocab_size):
    """The meta keys every task dataset records: objective, task, vocabulary, the generation
    arguments and the command that re-makes it, each split's dtype and token count."""
    flags = [f'--{k}={v}' for k, v in args.items()]
    return dict(
        objective='unmasking',
        task=args['task'],
        vocab_size=vocab_size,
        args=dict(args),
        prepare=shlex.join(['python', 'tasks.py', *flags]),
        dtype=np.dtype(token_dtype(vocab_size)).name,
        split_tokens={'train': int(train.size), 'val': int(val.size)},
    )


def default_name(a):
    if a.task == 'naesat':
        name = f"naesat_n{a.N}_p{a.P}" + (f"_t{a.triple_seed}" if a.triple_seed else '')
    else:
        name = f"sudoku_g{a.givens}_{a.tier}"
    return name + (f"_s{a.seed}" if a.seed else '')


def arg_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument('--task', choices=TASKS, required=True)
    p.add_argument('--N', type=int, default=25, help='naesat: binary latents')
    p.add_argument('--P', type=int, default=275, help='naesat: observations')
    p.add_argument('--triple_seed', type=int, default=0, help='naesat: seed of the fixed triples')
    p.add_argument('--givens', type=int, default=36, help='sudoku: givens per puzzle')
    p.add_argument('--tier', choices=TIERS, default='naked', help='sudoku: strategies needed')
    p.add_argument('--num_train', type=int, default=100_000)
    p.add_argument('--num_val', type=int, default=2_000)
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--data_root', default='data')
    p.add_argument('--name', default=None, help='dataset folder name (default: descriptive)')
    return p


def main(argv=None):
    a = arg_parser().parse_args(argv)
    if a.num_train < 1 or a.num_val < 1:
        raise DataError(f"--num_train={a.num_train} --num_val={a.num_val}: both must be >= 1")
    t0 = time.time()
    if a.task == 'naesat':
        train, val, meta = make_naesat(a.N, a.P, a.num_train, a.num_val, a.seed, a.triple_seed)
    else:
        train, val, meta = make_sudoku(a.givens, a.tier, a.num_train, a.num_val, a.seed)
    out_dir = os.path.join(a.data_root, a.name or default_name(a))
    write_rows(out_dir, train, val, meta)
    print(
        f"wrote {out_dir}: {len(train):,} train / {len(val):,} val rows of {meta['row_len']} "
        f"tokens ({time.time() - t0:.1f} s)"
    )
    return out_dir


if __name__ == '__main__':
    run_cli(main)
