"""
Path-star graph datasets and path accuracy (after Bachmann & Nagarajan 2024, "The pitfalls of
next-token prediction", and Noroozizadeh et al. 2025, "Deep sequence models tend to memorize
geometrically").

    python pathstar.py --mode=incontext --d=2 --l=5 --N=50          # data/incontext_pathstar_d2_l5_n50
    python pathstar.py --mode=inweights --d=10 --l=5                 # data/inweights_pathstar_d10_l5
    python pathstar.py --evaluate=out-pathstar-d2-l5/ckpt.pt         # path accuracy of a checkpoint

A path-star G(d, l): a source s with d arms of l-1 nodes each; l counts the nodes of the answer
path s ... g, both ends included. In-context rows (one fresh graph per row, ids as in the paper's
code: node i = i, '|' = N, '=' = N+1, '/' = N+2, '$' = N+3, then PAUSE, PAD):
    u1 v1 | u2 v2 | ... uE vE / s g = [PAUSE]*k p1 ... pl        (E = d(l-1), prefix 3E+3 tokens)
In-weights rows (one fixed graph per dataset, node ids permuted), padded with PAD:
    [EDGE] u v   (or [EDGE] u > v / [EDGE] v < u)      [PATH] leaf [PAUSE]*k root ... leaf
meta.pkl also records objective 'pathstar' (train.py picks it without --objective), the
generation arguments (meta['args']: ensure_dataset regenerates a dataset made with others), the
command that re-makes it (meta['prepare']) and each split's dtype and token count.
"""

import argparse
import os
import shlex
import sys
import time

import numpy as np
import torch

import diffusion
from checkpoint import load_model
from configurator import ArgumentParser, run_cli
from utils import DataError, TokenFile, load_meta, remake_hint, token_dtype, write_rows


def _progress(done, total, t0, what):
    rate = done / max(time.time() - t0, 1e-9)
    print(
        f"\r{what}: {done:,}/{total:,} ({rate:,.0f}/s)",
        end='' if done < total else '\n',
        file=sys.stderr,
        flush=True,
    )


# ------------------------------------------------------------------------ in-context
def incontext_graphs(rng, n, d, l, N):
    """n fresh graphs: s (n,), arms (n, d, l-1) of distinct labels in [0, N), goal arm (n,)."""
    m = d * (l - 1) + 1
    # distinct labels per row: the first m of a random permutation (argsort of uniforms)
    labels = np.argsort(rng.random((n, N), dtype=np.float32), axis=1)[:, :m].astype(np.int64)
    goal = rng.integers(0, d, size=n)
    return labels[:, 0], labels[:, 1:].reshape(n, d, l - 1), goal


def incontext_rows(
    rng, s, arms, goal, N, pauses=0, reverse=False, grouped=False, query_first=False
):
    """Token rows (n, 3E+3+k+l) for graphs from incontext_graphs (vectorised)."""
    n, d, a = arms.shape
    E = d * a
    bar, eq, sl, pause = N, N + 1, N + 2, N + 4
    u = np.concatenate([s[:, None, None].repeat(d, 1), arms[:, :, :-1]], axis=2).reshape(n, E)
    v = arms.reshape(n, E)
    if not grouped:  # shuffle the E edges of each row independently
        perm = np.argsort(rng.random((n, E), dtype=np.float32), axis=1)
        u, v = np.take_along_axis(u, perm, 1), np.take_along_axis(v, perm, 1)
    edges = np.stack([u, v, np.full_like(u, bar)], axis=2).reshape(n, 3 * E)[
        :, :-1
    ]  # drop last '|'
    g = arms[np.arange(n), goal, -1]
    path = np.concatenate([s[:, None], arms[np.arange(n), goal]], axis=1)  # (n, l)
    if reverse:
        path = path[:, ::-1]
    col = lambda t: np.full((n, 1), t, dtype=np.int64)  # noqa: E731
    if query_first:
        prefix = [s[:, None], g[:, None], col(sl), edges, col(eq)]
    else:
        prefix = [edges, col(sl), s[:, None], g[:, None], col(eq)]
    return np.concatenate(prefix + [np.full((n, pauses), pause, np.int64), path], axis=1)


def graph_keys(s, arms, goal):
    """One hashable key per (graph, query), independent of edge order: (n,) void bytes."""
    order = np.argsort(arms[:, :, 0], axis=1)  # arms sorted by their first node
    sorted_arms = np.take_along_axis(arms, order[:, :, None], 1).reshape(len(s), -1)
    g = arms[np.arange(len(s)), goal, -1]
    k = np.ascontiguousarray(np.concatenate([s[:, None], g[:, None], sorted_arms], 1), np.int64)
    return k.view(np.dtype((np.void, k.shape[1] * 8))).ravel()


def make_incontext(
    d,
    l,
    N,
    num_train,
    num_val,
    pauses=0,
    reverse=False,
    grouped=False,
    query_first=False,
    seed=0,
    chunk=100_000,
    quiet=False,
):
    """Returns (train rows, val rows, meta). Val (graph, query)s never occur in train."""
    check_params(d, l, N, pauses)
    if num_train < 1 or num_val < 1:
        raise DataError(f"--num_train={num_train} --num_val={num_val}: both must be >= 1")
    rng = np.random.default_rng(seed)
    chunk = max(1000, min(chunk, 20_000_000 // N))  # the (chunk, N) label argsort stays < 80 MB
    fmt = dict(pauses=pauses, reverse=reverse, grouped=grouped, query_first=query_first)
    out, seen, t0 = {}, None, time.time()
    for split, want in (('train', num_train), ('val', num_val)):
        parts, keys, have, tries = [], [], 0, 0
        while have < want:
            n = min(chunk, want - have)
            s, arms, goal = incontext_graphs(rng, n, d, l, N)
            if seen is not None:  # val: reject (graph, query)s that are in train
                keep = ~np.isin(graph_keys(s, arms, goal), seen)
                s, arms, goal = s[keep], arms[keep], goal[keep]
                tries += 1
                if tries > 100 and have + len(s) < want:
                    raise DataError(
                        f"G(d={d}, l={l}, N={N}) has too few distinct graphs for "
                        f"{num_val} val examples unseen in train: raise --N"
                    )
            if split == 'train':
                keys.append(graph_keys(s, arms, goal))
            parts.append(incontext_rows(rng, s, arms, goal, N, **fmt))
            have += len(s)
            if not quiet:
                _progress(have, want, t0, f"{split} graphs")
        out[split] = np.concatenate(parts)[:want]
        if split == 'train':
            seen = np.concatenate(keys)
    E = d * (l - 1)
    prefix_len = 3 * E + 3
    special = {'|': N, '=': N + 1, '/': N + 2, '$': N + 3, 'PAUSE': N + 4, 'PAD': N + 5}
    args = dict(mode='incontext', d=d, l=l, N=N, num_train=num_train, num_val=num_val)
    args.update(fmt, seed=seed)
    meta = dict(
        **written_meta(args, out['train'], out['val']),
        vocab_size=N + 6,
        row_len=prefix_len + pauses + l,
        format='incontext',
        d=d,
        l=l,
        N=N,
        seed=seed,
        special_tokens=special,
        prefix_len=prefix_len,
        answer_start=prefix_len + pauses,
        answer_len=l,
        teacherless_token=N + 3,
        **fmt,
    )
    return out['train'], out['val'], meta


def online_rows(meta, n, gen):
    """n fresh in-context rows (n, row_len) with the dataset's parameters, for training on a new
    graph every example (--pathstar_online=True: nothing to memorise). Seeded from the torch
    Generator `gen`, so resume and DDP stay exact. Not checked against val: for G(2,5,N=50)
    there are ~1e15 graphs, so 2M draws meet one of 5k val graphs with probability ~1e-5."""
    if meta.get('format') != 'incontext':
        raise DataError("--pathstar_online=True needs an in-context path-star dataset")
    rng = np.random.default_rng(int(torch.randint(2**62, (1,), generator=gen)))
    s, arms, goal = incontext_graphs(rng, n, meta['d'], meta['l'], meta['N'])
    return incontext_rows(
        rng,
        s,
        arms,
        goal,
        meta['N'],
        pauses=meta['pauses'],
        reverse=meta['reverse'],
        grouped=meta['grouped'],
        query_first=meta['query_first'],
    )


def check_params(d, l, N, pauses):
    if d < 1 or l < 2:
        raise DataError(f"--d={d} --l={l}: need d >= 1 arms and l >= 2 nodes on the path")
    if N < d * (l - 1) + 1:
        raise DataError(
            f"--N={N} is too small for G(d={d}, l={l}): the {d * (l - 1) + 1} nodes "
            f"must be distinct, so use --N >= {d * (l - 1) + 1}"
        )
    if pauses < 0:
        raise DataError(f"--pauses={pauses} must be >= 0")
    if N + 8 > 65536:
        raise DataError(f"--N={N}: ids must fit uint16; use --N <= 65528")


# ------------------------------------------------------------------------ in-weights
def make_inweights(d, l, N=None, pauses=0, directions=False, holdout=0.25, balance=True, seed=0):
    """One fixed graph: train = all edge facts (both directions) + path examples of the train
    leaves (replicated to match the edge count when balance); val = held-out leaves' paths."""
    N = N or d * (l - 1) + 1
    check_params(d, l, N, pauses)
    n_hold = int(round(d * holdout))
    if not 1 <= n_hold <= d - 1:
        raise DataError(
            f"--holdout={holdout} with d={d} holds out {n_hold} of {d} leaves: need at "
            f"least one train and one held-out leaf (raise --d or change --holdout)"
        )
    rng = np.random.default_rng(seed)
    labels = rng.permutation(N)[: d * (l - 1) + 1]
    root, arms = labels[0], labels[1:].reshape(d, l - 1)
    EDGE, PATH, FWD, BWD, PAUSE, PAD = range(N, N + 6)
    parent = np.concatenate([np.full((d, 1), root), arms[:, :-1]], 1).ravel()
    child = arms.ravel()
    if directions:
        fwd = np.stack([np.full_like(parent, EDGE), parent, np.full_like(parent, FWD), child], 1)
        bwd = np.stack([np.full_like(parent, EDGE), child, np.full_like(parent, BWD), parent], 1)
    else:
        fwd = np.stack([np.full_like(parent, EDGE), parent, child], 1)
        bwd = np.stack([np.full_like(parent, EDGE), child, parent], 1)
    row_len = 2 + pauses + l
    paths = np.concatenate(
        [
            np.full((d, 1), PATH),
            arms[:, -1:],
            np.full((d, pauses), PAUSE),
            np.full((d, 1), root),
            arms,
        ],
        1,
    )  # (d, row_len)
    held = rng.permutation(d)[:n_hold]
    is_held = np.isin(np.arange(d), held)
    edges = np.concatenate([fwd, bwd])
    reps = max(1, int(round(len(edges) / (d - n_hold)))) if balance else 1
    train = np.concatenate([pad_rows(edges, row_len, PAD), np.repeat(paths[~is_held], reps, 0)])
    train = train[rng.permutation(len(train))]
    e_len = edges.shape[1]
    special = {'EDGE': EDGE, 'PATH': PATH, '>': FWD, '<': BWD, 'PAUSE': PAUSE, 'PAD': PAD}
    args = dict(mode='inweights', d=d, l=l, N=N, pauses=pauses, directions=directions)
    args.update(holdout=holdout, balance=balance, seed=seed)
    meta = dict(
        **written_meta(args, train, paths[is_held]),
        vocab_size=N + 6,
        row_len=row_len,
        format='inweights',
        d=d,
        l=l,
        N=N,
        seed=seed,
        pauses=pauses,
        directions=directions,
        holdout=holdout,
        balance=balance,
        path_repeat=reps,
        special_tokens=special,
        root=int(root),
        heldout_leaves=[int(x) for x in arms[held, -1]],
        answer_start=2 + pauses,
        answer_len=l,
        prefix_len=2,
        # answer span (start, len) of a row, by its first token (edge rows end in v)
        answer_by_first_token={EDGE: (e_len - 1, 1), PATH: (2 + pauses, l)},
    )
    return train, paths[is_held], meta


def pad_rows(rows, row_len, pad):
    return np.concatenate([rows, np.full((len(rows), row_len - rows.shape[1]), pad)], 1)


def written_meta(args, train, val):
    """The meta keys every path-star dataset records beside its format: what it is (objective),
    its generation arguments (args: a demo regenerates a dataset made with others, see
    ensure_dataset), the command that re-makes it, and each split's dtype and token count
    (checked against the .bin sizes by utils.TokenFile)."""
    N = args['N']
    return dict(
        objective='pathstar',
        args=dict(args),
        prepare=shlex.join(['python', 'pathstar.py', *cli_flags(args)]),
        dtype=np.dtype(token_dtype(N + 6)).name,
        split_tokens={'train': int(train.size), 'val': int(val.size)},
        split_max_token={'train': int(train.max()), 'val': int(val.max())},
    )


def cli_flags(args):
    """meta['args'] -> the pathstar.py flags that generate the same data."""
    out = []
    for k, v in args.items():
        if k == 'balance':
            out += [] if v else ['--no_balance']
        elif isinstance(v, bool):
            out += [f'--{k}'] if v else []
        else:
            out.append(f'--{k}={v}')
    return out


def generation_args(a):
    """Parsed pathstar.py flags -> the meta['args'] that make_incontext / make_inweights record
    for them (what ensure_dataset compares)."""
    if a.mode == 'incontext':
        keys = ('d', 'l', 'num_train', 'num_val', 'pauses', 'reverse', 'grouped', 'query_first')
        return dict(mode=a.mode, N=a.N or 50, seed=a.seed, **{k: getattr(a, k) for k in keys})
    return dict(
        mode=a.mode,
        d=a.d,
        l=a.l,
        N=a.N or a.d * (a.l - 1) + 1,
        pauses=a.pauses,
        directions=a.directions,
        holdout=a.holdout,
        balance=not a.no_balance,
        seed=a.seed,
    )


# ------------------------------------------------------------------------ metadata
def pause_pad_ids(meta):
    """(PAUSE id, PAD id) of a path-star meta (None where it has none). Metas of the older
    style (top-level pause_token / pad_token) are mapped by utils.normalise_meta on load."""
    st = meta.get('special_tokens') or {}
    return st.get('PAUSE'), st.get('PAD')


def answer_mask(rows, meta):
    """(n, T) bool: True at the answer tokens of each row (row layout positions)."""
    n, T = rows.shape
    pos = torch.arange(T)
    table = meta.get('answer_by_first_token')
    if table:
        V = meta['vocab_size']
        start, length = torch.zeros(V, dtype=torch.long), torch.zeros(V, dtype=torch.long)
        for tok, (a, L) in table.items():
            start[tok], length[tok] = a, L
        a, L = start[rows[:, 0]][:, None], length[rows[:, 0]][:, None]
        return (pos >= a) & (pos < a + L)
    a, L = meta['answer_start'], meta['answer_len']
    return ((pos >= a) & (pos < a + L)).expand(n, T)


# ------------------------------------------------------------------------ evaluation
@torch.no_grad()
def evaluate_paths(
    model,
    rows,
    meta,
    mode='greedy',
    answer_start=None,
    answer_len=None,
    device='cpu',
    batch_size=500,
):
    """Exact-match and per-position accuracy of the answers of `rows` (n, row_len).

    greedy: autoregressive argmax decoding from the prefix rows[:, :answer_start].
    parallel (teacherless): one pass over the prefix + answer_len-1 '$' tokens; position
    answer_start-1+i predicts answer token i. Returns dict(exact_match, per_position, n), and
    for greedy tf_per_position: accuracy of each answer token given the true earlier ones."""
    rows = torch.from_numpy(np.asarray(rows, dtype=np.int64))  # host rows
    a = meta['answer_start'] if answer_start is None else answer_start
    L = meta['answer_len'] if answer_len is None else answer_len
    was_training = model.training
    model.eval()
    preds, tf = [], []
    for chunk in rows.split(batch_size):
        idx = chunk[:, :a].to(device)
        if mode == 'greedy':
            for _ in range(L):
                logits, _ = model(idx, last_only=True)
                idx = torch.cat([idx, logits[:, -1].argmax(-1, keepdim=True)], 1)
            preds.append(idx[:, a:].cpu())
            # teacher-forced: each answer token given the TRUE previous ones (one pass)
            logits, _ = model(chunk[:, : a + L - 1].to(device))
            tf.append(logits[:, a - 1 :].argmax(-1).cpu())
        elif mode == 'parallel':
            dollar = meta.get('teacherless_token')
            if dollar is None:
                raise DataError("mode='parallel' needs meta['teacherless_token'] (in-context data)")
            x = torch.cat([idx, torch.full((len(idx), L - 1), dollar, device=device)], 1)
            logits, _ = model(x)
            preds.append(logits[:, a - 1 : a - 1 + L].argmax(-1).cpu())
        else:
            raise ValueError(f"mode={mode!r}: use 'greedy' or 'parallel'")
    model.train(was_training)
    correct = torch.cat(preds) == rows[:, a : a + L]  # (n, L)
    out = dict(
        exact_match=correct.all(1).float().mean().item(),
        per_position=correct.float().mean(0).tolist(),
        n=len(rows),
    )
    if tf:
        out['tf_per_position'] = (torch.cat(tf) == rows[:, a : a + L]).float().mean(0).tolist()
    return out


def read_rows(data_dir, split, meta):
    """(n, row_len) int64 rows of a path-star split, checked (utils.TokenFile)."""
    return TokenFile(data_dir, split, meta).rows(meta['row_len']).numpy()


def path_rows(rows, meta):
    """The rows that ask for a path (in-weights data also holds edge-fact rows)."""
    if meta.get('format') == 'inweights':
        return rows[rows[:, 0] == meta['special_tokens']['PATH']]
    return rows


@torch.no_grad()
def path_report(model, rows_by_split, meta, how, n, device='cpu'):
    """Path accuracy of `model` on the first n path rows of each split: the one report behind
    train-time evaluation and `pathstar.py --evaluate`.

    how: 'greedy' (next-token decoding), 'parallel' (teacherless, one pass) or 'diffusion' (a
    denoiser: confidence order, plus random order, one parallel pass and the one-lookup probe).
    Returns {split: dict(exact_match, per_position, n, ...)} and, for in-weights data with
    a train split, 'edge_acc': is v recalled from u on the edge facts."""
    was_training = model.training
    model.eval()
    out = {}
    for split, rows in rows_by_split.items():
        rows = torch.from_numpy(np.asarray(path_rows(rows, meta)[:n], dtype=np.int64))
        if 'answer_start' not in meta or len(rows) == 0:
            continue
        if how == 'diffusion':
            r = dict(
                diffusion.path_accuracy(model, rows, meta, 'confidence', 0, device), n=len(rows)
            )
            r['random'] = diffusion.path_accuracy(model, rows, meta, 'random', 0, device)[
                'exact_match'
            ]
            r['parallel'] = diffusion.path_accuracy(model, rows, meta, 'confidence', 1, device)[
                'exact_match'
            ]
            r['single_position'] = diffusion.single_position_accuracy(model, rows, meta, device)
        else:
            r = evaluate_paths(model, rows, meta, how, device=device)
        out[split] = r
    if meta.get('format') == 'inweights' and 'train' in rows_by_split:
        rows = torch.from_numpy(np.asarray(rows_by_split['train'], dtype=np.int64))
        edge = meta['special_tokens']['EDGE']
        a, _ = meta['answer_by_first_token'][edge]
        out['edge_acc'] = evaluate_paths(
            model, rows[rows[:, 0] == edge][:n], meta, 'greedy', a, 1, device=device
        )['exact_match']
    model.train(was_training)
    return out


def report_keys(report):
    """path_report -> the flat key=value pairs of an evaluation log line."""
    out = {}
    for split, r in report.items():
        if split == 'edge_acc':
            out['edge_acc'] = r
        elif 'random' in r:  # a denoiser
            out[f'{split}_path_acc_conf'] = r['exact_match']
            out['conf_pos_acc' if split == 'val' else f'{split}_conf_pos_acc'] = fmt(
                r['per_position']
            )
            out['conf_order' if split == 'val' else f'{split}_conf_order'] = fmt(r['order'], 1)
            out[f'{split}_path_acc_rand'] = r['random']
            out[f'{split}_path_acc_parallel'] = r['parallel']
            if split == 'val':
                out['single_pos_acc'] = fmt(r['single_position'])
        else:
            out[f'{split}_path_acc'] = r['exact_match']
            out[f'{split}_pos_acc'] = fmt(r['per_position'])
            if split == 'val' and 'tf_per_position' in r:  # given the true prefix
                out['val_tf_pos_acc'] = fmt(r['tf_per_position'])
    return out


def default_name(a):
    if a.mode == 'incontext':
        name = f"incontext_pathstar_d{a.d}_l{a.l}_n{a.N or 50}"
    else:
        name = f"inweights_pathstar_d{a.d}_l{a.l}" + (f"_n{a.N}" if a.N else '')
    for flag, tag in (
        (a.pauses, f"_p{a.pauses}"),
        (a.reverse, '_rev'),
        (a.grouped, '_grouped'),
        (a.query_first, '_qfirst'),
        (a.directions, '_dir'),
    ):
        name += tag if flag else ''
    return name + (f"_s{a.seed}" if a.seed else '')


def fmt(xs, digits=3):
    return ' '.join(f"{x:.{digits}f}" for x in xs)


def evaluate_checkpoint(path, num_eval=1000, device='cpu', verbose=True):
    """path_report of a checkpoint (or out_dir) on the first num_eval val and train rows of the
    dataset it was trained on."""
    model, ckpt = load_model(path, device, flag='--evaluate')
    cfg, meta = ckpt.get('config') or {}, ckpt['meta'] or {}
    if 'row_len' not in meta or 'answer_start' not in meta:
        raise DataError(
            f"--evaluate={path}: not a path-star checkpoint (objective "
            f"{ckpt.get('objective')!r}, dataset {cfg.get('dataset')!r})"
        )
    data_dir = os.path.join(cfg['data_root'], cfg['dataset'])
    denoiser = ckpt.get('objective') == 'unmasking'
    how = 'diffusion' if denoiser else 'parallel' if cfg.get('pathstar_teacherless') else 'greedy'
    if 'args' in meta and (load_meta(data_dir, required=False) or {}).get('args') != meta['args']:
        raise DataError(
            f"--evaluate={path}: {data_dir} is not the dataset this checkpoint was trained on "
            f"(made with other generation arguments since): {remake_hint(meta, data_dir)}"
        )
    file_meta = {**meta, 'vocab_size': meta.get('base_vocab_size', meta['vocab_size'])}
    rows = {s: read_rows(data_dir, s, file_meta) for s in ('val', 'train')}
    out = path_report(model, rows, meta, how, num_eval, device)
    for split in ('val', 'train') if verbose else ():
        r = out[split]
        extra = ''
        if 'tf_per_position' in r:
            extra = '; given the true prefix ' + fmt(r['tf_per_position'])
        if 'random' in r:
            extra = (
                f"; random order {r['random']:.4f}, one pass {r['parallel']:.4f}; only that "
                f"position masked " + fmt(r['single_position'])
            )
        print(
            f"{split}: exact-match {r['exact_match']:.4f} on {r['n']} rows "
            f"({'diffusion, confidence order' if denoiser else how}), per position "
            + fmt(r['per_position'])
            + extra
        )
    return out


def arg_parser():
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument('--mode', choices=['incontext', 'inweights'], default='incontext')
    p.add_argument('--d', type=int, default=2)
    p.add_argument('--l', type=int, default=5)
    p.add_argument('--N', type=int, default=None, help='label count (in-context default 50)')
    p.add_argument('--num_train', type=int, default=50_000)
    p.add_argument('--num_val', type=int, default=5_000)
    p.add_argument('--pauses', type=int, default=0, help='PAUSE tokens right before the answer')
    p.add_argument('--reverse', action='store_true', help='answer path g ... s (in-context)')
    p.add_argument('--grouped', action='store_true', help='edges grouped by arm, not shuffled')
    p.add_argument('--query_first', action='store_true', help='layout s g / edges = path')
    p.add_argument('--directions', action='store_true', help="in-weights: '>'/'<' edge tokens")
    p.add_argument('--holdout', type=float, default=0.25, help='in-weights: held-out leaf share')
    p.add_argument('--no_balance', action='store_true', help='in-weights: no path replication')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--data_root', default='data')
    p.add_argument('--name', default=None, help='dataset folder name (default: descriptive)')
    p.add_argument('--evaluate', default=None, help='checkpoint or out_dir: its path accuracy')
    p.add_argument('--num_eval', type=int, default=1000)
    p.add_argument('--device', default='cpu')
    return p


def main(argv=None):
    a = arg_parser().parse_args(argv)
    if a.evaluate:
        return evaluate_checkpoint(a.evaluate, a.num_eval, a.device)
    if a.mode == 'incontext':
        train, val, meta = make_incontext(
            a.d,
            a.l,
            a.N or 50,
            a.num_train,
            a.num_val,
            a.pauses,
            a.reverse,
            a.grouped,
            a.query_first,
            a.seed,
        )
    else:
        if a.reverse or a.grouped or a.query_first:
            raise DataError("--reverse/--grouped/--query_first are in-context options")
        train, val, meta = make_inweights(
            a.d, a.l, a.N, a.pauses, a.directions, a.holdout, not a.no_balance, a.seed
        )
    out_dir = os.path.join(a.data_root, a.name or default_name(a))
    write_rows(out_dir, train, val, meta)
    print(
        f"wrote {out_dir}: {len(train):,} train / {len(val):,} val rows of {meta['row_len']} "
        f"tokens, vocab_size {meta['vocab_size']}"
    )
    return out_dir


def ensure_dataset(argv):
    """The folder of the dataset pathstar.py writes for `argv`, generated (main(argv)) unless a
    dataset made with the same generation arguments is already there and whole. A folder
    whose meta.pkl records other arguments, or none (made before they were recorded), or whose
    files do not match it, is regenerated; what happens and why is printed. For scripts that
    train on a dataset they name (bench/pathstar_demo.py, bench/diffusion_ablation.py)."""
    a = arg_parser().parse_args(argv)
    out_dir = os.path.join(a.data_root, a.name or default_name(a))
    want = generation_args(a)
    try:
        meta = load_meta(out_dir, required=False)
        if meta is None:
            why = 'not found'
        elif 'args' not in meta:
            why = 'its meta.pkl records no generation arguments (made by an older pathstar.py)'
        elif meta['args'] != want:
            diff = sorted(
                k for k in set(want) | set(meta['args']) if meta['args'].get(k) != want.get(k)
            )
            why = 'made with ' + ', '.join(
                f"{k}={meta['args'].get(k)!r} (this run needs {want.get(k)!r})" for k in diff
            )
        else:
            for split in ('train', 'val'):  # whole: sizes as recorded
                TokenFile(out_dir, split, meta)
            return out_dir
    except DataError as e:
        why = str(e)
    verb = 'generating' if why == 'not found' else 'regenerating'
    print(f"{verb} {out_dir}: {why}", flush=True)
    return main(argv)


if __name__ == '__main__':
    run_cli(main)
