"""
Decoding order and remasking at equal NFE on checkable tasks (tasks.py: L&O-NAE-SAT, Sudoku;
in-context path-star): success +- s.e. per strategy and NFE budget, the paper's figure beside.

    python bench/tasks_eval.py --denoiser=out-naesat-s1/ckpt.pt,out-naesat-s2/ckpt.pt \
        --nfe=50 --remasks=none,random --num_eval=1000 --png=docs/tasks_naesat.png

Strategies: order random (the paper's "vanilla"), confidence ("top-prob") and margin
("top-prob-margin"), each with no remasking, random remasking (`--remask_schedule=cap`: ReMDM's
max-capped schedule with eta = --remask_ratio), the learned remaskers of --remaskers
(name:ckpt,...; their passes count: NFE = 2 steps - 1, so they run fewer denoiser steps) and,
with --hybrid=<ckpts>, that hybrid model's own rows: no remasking and --remask=self (one pass
per step drafts and flags). --nfe: budgets, ints or L, L/2, L/4 (L = answer length: one
token per pass). Success: NAE-SAT observation accuracy (unconditional samples), Sudoku / path-star
solved share. Every strategy decodes the same first --num_eval val rows with the same seed;
several checkpoints (training seeds) give mean +- s.e. over the seeds (each seed's own figure in
the table); one gives the s.e. over the instances. Prints a markdown table and the command,
saves a PNG and (--json) the raw figures; --combine=a.json,b.json prints one table of runs that
were split over processes (one per order, or one per training seed: rows of the same strategy
and budget are merged over their seeds).
"""

import json
import math
import os
import shlex
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import diffusion  # noqa: E402
import tasks  # noqa: E402
from checkpoint import load_model  # noqa: E402
from configurator import ConfigError, load_config, run_cli  # noqa: E402
from utils import atomic_write  # noqa: E402

DEFAULTS = dict(
    denoiser='',  # comma-separated unmasking checkpoints (training seeds)
    hybrid='',  # comma-separated hybrid checkpoints: their plain rows and --remask=self
    remaskers='',  # name:ckpt,... learned remaskers, used with every denoiser
    orders='random,confidence,margin',
    remasks='none,random',  # for the denoisers: none, random (learned: via --remaskers)
    nfe='L,L/2,L/4',
    num_eval=1000,
    batch_size=250,
    temperature=1.0,  # token draws (the paper samples values)
    score_temperature=0.0,  # > 0: Gumbel-noised order (log score / T + Gumbel)
    remask_schedule='cap',
    remask_ratio=0.05,  # cap: ReMDM's eta
    remask_threshold=0.5,
    seed=0,
    num_threads=1,
    png='',
    json='',
    combine='',  # comma-separated --json files of earlier runs: their table and PNG, no decoding
)

# the papers' figures (Kim, Shah et al. 2025): NAE-SAT Table 1 (19M MDM, 50 steps), Sudoku
# Table 2 (6M MDM); keyed by the task's size and then by order (no remasking). (10, 110) is not
# in the paper: there, the standalone reference ../shared/reference/mdm_naesat_ref.py (0.35M,
# 3,000 iterations, 40 passes, 300 samples; its log).
PAPER = {
    ('naesat', 10, 110): {'random': 73.45, 'confidence': 87.64, 'margin': 87.48},
    ('naesat', 25, 275): {'random': 78.06, 'margin': 93.76},
    ('naesat', 50, 250): {'random': 67.94, 'margin': 90.01},
    ('naesat', 100, 200): {'random': 62.84, 'margin': 88.91},
    ('sudoku',): {'random': 6.88, 'confidence': 18.51, 'margin': 89.49},
}
NAMES = {'random': 'random (vanilla)', 'confidence': 'top-prob', 'margin': 'top-prob-margin'}


def paper_figure(meta, order, remask):
    task = tasks.task_of(meta)
    key = (task, meta.get('N'), meta.get('P')) if task == 'naesat' else (task,)
    fig = PAPER.get(key, {}).get(order) if remask == 'none' else None
    return f"{fig:.2f}" if fig is not None else ''


def budgets(spec, L):
    out = []
    for item in spec.split(','):
        item = item.strip()
        if item.startswith('L'):
            div = int(item[2:]) if '/' in item else 1
            out.append(math.ceil(L / div))
        else:
            out.append(int(item))
    return out


def strategies(cfg, remaskers):
    """[(label, order, remask, remasker name, model kind)]: kind 'denoiser' or 'hybrid'."""
    out = []
    orders = cfg['orders'].split(',')
    for order in orders:
        for remask in cfg['remasks'].split(','):
            if remask not in ('none', 'random'):
                raise ConfigError(
                    f"--remasks={cfg['remasks']}: none / random (learned: --remaskers)"
                )
            if cfg['denoiser']:
                out.append((f"{NAMES[order]}, remask {remask}", order, remask, None, 'denoiser'))
        for name in remaskers:
            out.append(
                (f"{NAMES[order]}, learned remask ({name})", order, 'learned', name, 'denoiser')
            )
        if cfg['hybrid']:
            out.append((f"hybrid: {NAMES[order]}, remask none", order, 'none', None, 'hybrid'))
            out.append((f"hybrid: {NAMES[order]}, remask self", order, 'self', None, 'hybrid'))
    return out


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    cfg, _ = load_config(DEFAULTS, argv)
    torch.set_num_threads(cfg['num_threads'])
    if cfg['combine']:  # runs split over several processes, one table
        runs = [read_part(p) for p in cfg['combine'].split(',')]
        first = load_model((runs[0]['cfg']['denoiser'] or runs[0]['cfg']['hybrid']).split(',')[0])
        for run in runs:  # which checkpoints a row decoded: the same ones twice are not 2 seeds
            for r in run['results']:
                r.setdefault('source', run['cfg'][row_kind(r)])
        results = merge_seeds([r for run in runs for r in run['results']])
        for run in runs:
            print(f"part: python bench/tasks_eval.py {shlex.join(run['argv'])}")
        report(
            results,
            {**runs[0]['cfg'], 'png': cfg['png'], 'json': ''},
            first[1]['meta'],
            runs[0]['n'],
            argv,
        )
        return results
    paths = {k: [p for p in cfg[k].split(',') if p] for k in ('denoiser', 'hybrid')}
    if not paths['denoiser'] and not paths['hybrid']:
        raise ConfigError("--denoiser (or --hybrid): give at least one checkpoint")
    models = {k: [load_model(p) for p in v] for k, v in paths.items()}
    first = (models['denoiser'] or models['hybrid'])[0][1]
    meta = first['meta']
    for _, ck in models['hybrid']:
        diffusion.check_self_remask(ck, 'a --hybrid checkpoint')
    remaskers = {}
    for item in filter(None, cfg['remaskers'].split(',')):
        name, path = item.split(':', 1)
        remaskers[name] = diffusion.load_remasker(path, meta)
    rows = tasks.val_rows(first)[: cfg['num_eval']]
    L = meta['answer_len']
    results = []
    for nfe in budgets(cfg['nfe'], L):
        for label, order, remask, rname, kind in strategies(cfg, remaskers):
            steps = (nfe + 1) // 2 if remask == 'learned' else nfe
            per_seed, t0 = [], time.time()
            for model, _ in models[kind]:
                out, info = tasks.decode(
                    model,
                    rows,
                    meta,
                    steps,
                    batch_size=cfg['batch_size'],
                    seed=cfg['seed'],
                    order=order,
                    temperature=cfg['temperature'],
                    score_temperature=cfg['score_temperature'],
                    remask=remask,
                    remask_ratio=cfg['remask_ratio'],
                    remask_schedule=cfg['remask_schedule'],
                    remask_threshold=cfg['remask_threshold'],
                    remasker=remaskers.get(rname),
                )
                per_seed.append(tasks.score(rows, out.numpy(), meta))
                used = info['nfe']
            means = [float(s.mean()) for s in per_seed]
            if len(per_seed) > 1:
                mean, se = tasks.mean_se(means)
            else:
                mean, se = tasks.mean_se(per_seed[0])
            r = dict(strategy=label, order=order, remask=remask, budget=nfe, nfe=used, steps=steps)
            r['kind'], r['source'] = kind, cfg[kind]
            r.update(mean=mean, se=se, seeds=means, sec=time.time() - t0)
            r['paper'] = paper_figure(meta, order, remask) if kind == 'denoiser' else ''
            results.append(r)
            print(
                f"{label:50s} NFE {used:4d} (steps {steps:4d}): {100 * mean:6.2f} ± "
                f"{100 * se:.2f} % ({r['sec']:.0f} s)",
                flush=True,
            )
    report(results, cfg, meta, len(rows), argv)
    return results


def row_kind(r):
    """'denoiser' or 'hybrid': the model a row decoded with (parts written before rows carried
    'kind' say it in the label only)."""
    return r.get('kind') or ('hybrid' if r['strategy'].startswith('hybrid') else 'denoiser')


def read_part(path):
    """One --json file of an earlier run; a missing or foreign file is one line naming it."""
    try:
        with open(path) as f:
            run = json.load(f)
    except OSError as e:
        raise ConfigError(f"--combine: cannot read {path}: {e.strerror}") from None
    except ValueError:
        run = None
    if not (isinstance(run, dict) and {'cfg', 'results', 'argv', 'n'} <= run.keys()):
        raise ConfigError(
            f"--combine: {path} is not a --json file of bench/tasks_eval.py "
            "(write one with --json=...)"
        )
    return run


def merge_seeds(results):
    """Rows of the same strategy and budget from several parts (e.g. one per training seed)
    become one row over all their seeds: mean +- s.e. over the seeds."""
    out, seen = {}, {}
    for r in results:
        key = (r['strategy'], r['budget'])
        if r.get('source') is not None and r['source'] in seen.setdefault(key, set()):
            continue  # the same checkpoints decoded twice (deterministic): the same figure
        seen[key].add(r.get('source'))
        if key in out:
            seeds = out[key]['seeds'] + r['seeds']
            mean, se = tasks.mean_se(seeds)
            out[key] = {**out[key], 'seeds': seeds, 'mean': mean, 'se': se}
        else:
            out[key] = dict(r)
    return list(out.values())


def revision_gains(results):
    """The revision target's figure: each remasking row (random, learned, self) against the best
    row without remasking at the same budget, in points and in s.e. of the difference
    (sqrt(se_a^2 + se_b^2): unpaired, so conservative when both decode the same instances)."""
    lines = []
    for b in dict.fromkeys(r['budget'] for r in results):
        plain = [r for r in results if r['budget'] == b and r['remask'] == 'none']
        if not plain:
            continue
        best = max(plain, key=lambda r: r['mean'])
        for r in results:
            if r['budget'] != b or r['remask'] == 'none':
                continue
            diff, se = r['mean'] - best['mean'], math.hypot(r['se'], best['se'])
            z = diff / se if se > 0 else float('nan')
            lines.append(
                f"NFE {b}: {r['strategy']} vs {best['strategy']}: {100 * diff:+.1f} points "
                f"({z:+.1f} s.e.)"
            )
    return ['', *lines] if lines else []


def report(results, cfg, meta, n, argv):
    task = tasks.task_of(meta)
    what = {'naesat': 'observation accuracy', 'sudoku': 'puzzles solved'}.get(task, 'paths valid')
    size = f" (N, P) = ({meta['N']}, {meta['P']})" if task == 'naesat' else ''
    k = max(len(r['seeds']) for r in results)
    spread = 'over the seeds' if k > 1 else f'over the {n} instances'
    print(
        f"\n{task}{size}: {what} in %, mean ± s.e. {spread}; {n} instances, seed {cfg['seed']}, "
        f"temperature {cfg['temperature']}, remask {cfg['remask_schedule']} "
        f"eta/ratio {cfg['remask_ratio']}\n"
    )
    budgets = sorted(set(r['budget'] for r in results), reverse=True)
    print("| strategy | paper (ref.) | " + " | ".join(f"NFE {b}" for b in budgets) + " |")
    print("|---|---|" + "---|" * len(budgets))
    for label in dict.fromkeys(r['strategy'] for r in results):
        rs = {r['budget']: r for r in results if r['strategy'] == label}
        cells = []
        for b in budgets:
            if b not in rs:  # parts with other budgets: an empty cell
                cells.append('')
                continue
            r = rs[b]
            seeds = f" ({' / '.join(f'{100 * m:.1f}' for m in r['seeds'])})" if k > 1 else ''
            steps = f" [{r['steps']} steps]" if r['steps'] != b else ''
            cells.append(f"**{100 * r['mean']:.1f}** ± {100 * r['se']:.1f}{seeds}{steps}")
        first_row = next(iter(rs.values()))
        paper = first_row['paper'] if row_kind(first_row) == 'denoiser' else ''
        print(f"| {label} | {paper} | " + " | ".join(cells) + " |")
    for line in revision_gains(results):
        print(line)
    print(f"\ncommand: python bench/tasks_eval.py {shlex.join(argv)}")
    if cfg['json']:
        text = json.dumps(dict(cfg=cfg, results=results, argv=argv, n=n), indent=1)

        def write_json(tmp):
            with open(tmp, 'w') as f:
                f.write(text)

        atomic_write(cfg['json'], write_json)
    if cfg['png']:
        plot(results, cfg['png'], f"{task}{size}: {what}")


def plot(results, path, title):
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for label in dict.fromkeys(r['strategy'] for r in results):
        rs = sorted((r for r in results if r['strategy'] == label), key=lambda r: r['nfe'])
        ax.errorbar(
            [r['nfe'] for r in rs],
            [100 * r['mean'] for r in rs],
            yerr=[100 * r['se'] for r in rs],
            marker='o',
            capsize=3,
            label=label,
        )
    ax.set_xscale('log', base=2)
    ticks = sorted({r['budget'] for r in results})  # a learned row's NFE is 2 steps - 1
    ax.set_xticks(ticks, [str(t) for t in ticks])
    ax.minorticks_off()
    ax.set_xlabel('NFE per sample (forward passes of every model)')
    ax.set_ylabel('success (%)')
    ax.set_title(title)
    ax.legend(fontsize=7)
    fig.tight_layout()

    def write(tmp):
        fig.savefig(tmp, format='png', dpi=110)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600 files

    atomic_write(path, write)
    plt.close(fig)
    print(f"saved {path}")


if __name__ == '__main__':
    run_cli(main)
