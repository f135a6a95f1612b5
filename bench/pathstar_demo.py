"""
The path-star demo (`make demo`): on the same G(2,5) graphs, next-token training fails (~1/d,
the Clever-Hans cheat), reverse targets fix it, and a masked-diffusion denoiser solves it when it
decodes in confidence order (random order and one parallel pass do not).

    python bench/pathstar_demo.py                  # datasets + 3 trainings (2 at a time) + table
    python bench/pathstar_demo.py --max_iters=300  # shorter (every run scales with it)
    python bench/pathstar_demo.py --reuse          # only print the table of finished runs
    python bench/pathstar_demo.py --runs=all       # also G(5,5) and the multi-token runs

Each run is `train.py config/<run>.py --max_iters=M --lr_decay_iters=M` on one thread, M = the
run's scale x --max_iters (see RUNS), logging to <out_dir>/train.log; every minute a progress
line shows each run's iteration. The table evaluates each run's final checkpoint
(pathstar.evaluate_checkpoint: the same report as train-time evaluation). Datasets are made with
pathstar.py when missing, and made again when their meta.pkl records other generation arguments
(pathstar.ensure_dataset).
"""

import argparse
import os
import re
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import pathstar  # noqa: E402
from configurator import ArgumentParser, ConfigError, load_config, run_cli  # noqa: E402
from train import DEFAULTS  # noqa: E402
from utils import DataError  # noqa: E402

G25 = ['--d=2', '--l=5', '--N=50']
# (label, config, pathstar.py flags, the known result, extra train.py flags, steps scale):
# a run trains scale x --max_iters iterations. The denoiser 2x: 3 x 128 at lr 1e-3 is solved by
# 3,000 steps for 3 of 5 seeds, the default among them (docs/RESULTS.md, "Masked diffusion on
# path-star": the sweep of issue 22); G(5,5) 2x.
RUNS = [
    ('G(2,5) next-token, forward', 'config/pathstar_d2_l5.py', G25, '~1/2 (Clever Hans)', [], 1),
    (
        'G(2,5) next-token, reverse',
        'config/pathstar_d2_l5_rev.py',
        G25 + ['--reverse'],
        '>= 0.99',
        [],
        1,
    ),
    ('G(2,5) masked diffusion', 'config/diffusion_pathstar_d2_l5.py', G25, '', [], 2),
    (
        'G(5,5) next-token, forward',
        'config/pathstar_d5_l5.py',
        ['--d=5', '--l=5', '--N=50'],
        '~1/5',
        [],
        2,
    ),
] + [  # multi-token prediction: same data and steps, k heads
    (
        f'G(2,5) next-token, {k} heads (MTP)',
        'config/pathstar_d2_l5.py',
        G25,
        '?',
        [f'--n_future={k}', f'--out_dir=out-pathstar-d2-l5-mtp{k}'],
        1,
    )
    for k in (2, 4)
]
DEMO = '0,1,2'  # what `make demo` runs
# the denoiser's three decodings, each a table row: (label, key of pathstar.path_report, expected)
DECODINGS = [
    ('confidence order', 'exact_match', '>= 0.99'),
    ('random order', 'random', 'below confidence'),
    ('one parallel pass', 'parallel', 'low'),
]
# wall seconds per step of a demo run, its evaluations included, two runs side by side on 2 idle
# cores (make demo on a clean clone, docs/RESULTS.md: 4.0 min for 1,500 next-token steps; the
# 3 x 128 denoiser's median step 0.40 s beside another run)
SEC_PER_STEP = {'pathstar': 0.16, 'unmasking': 0.40}


def last_eval(log, max_iters):
    """The k=v pairs of the log's 'step <max_iters>:' line, or None if the run is unfinished."""
    if not os.path.exists(log):
        return None
    lines = [ln for ln in open(log) if ln.startswith(f'step {max_iters}:')]
    if not lines:
        return None
    return dict(p.strip().split('=', 1) for p in lines[-1].split(':', 1)[1].split(', ') if '=' in p)


def progress(running, t0):
    """One line: minutes so far and each running job's last logged iteration."""
    parts = []
    for label, _proc, _, log, M in running:
        it = '0'
        if os.path.exists(log):
            hits = re.findall(r'^iter (\d+)/', open(log).read(), re.M)
            it = hits[-1] if hits else '0'
        parts.append(f"{label}: iter {it}/{M}")
    print(f"[{(time.time() - t0) / 60:.1f} min] " + ' | '.join(parts), flush=True)


def estimate_minutes(runs, jobs):
    """Wall-time estimate: runs packed longest first onto `jobs` single-thread lanes."""
    lanes = [0.0] * jobs
    for sec in sorted((SEC_PER_STEP[obj] * M for *_, obj, M in runs), reverse=True):
        lanes[lanes.index(min(lanes))] += sec
    return max(lanes) / 60


def main(argv=None):
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument('--max_iters', type=int, default=1500)
    p.add_argument('--jobs', type=int, default=2, help='trainings at once, one thread each')
    p.add_argument('--num_train', type=int, default=50_000)
    p.add_argument('--reuse', action='store_true', help='keep finished runs, print the table')
    p.add_argument('--num_eval', type=int, default=1000, help='val and train rows evaluated')
    p.add_argument('--runs', default=DEMO, help="which RUNS (indices); 'all' for every one")
    a = p.parse_args(argv)
    os.chdir(ROOT)
    runs = []
    try:
        chosen = RUNS if a.runs == 'all' else [RUNS[int(i)] for i in a.runs.split(',')]
    except (ValueError, IndexError):
        raise ConfigError(
            f"--runs={a.runs}: comma-separated indices 0..{len(RUNS) - 1} into RUNS, or 'all'"
        ) from None
    for label, config, flags, expect, extra, scale in chosen:
        cfg, _ = load_config(DEFAULTS, [config] + extra)
        pathstar.ensure_dataset(  # (re)generated unless made with exactly these arguments
            [
                '--mode=incontext',
                f'--num_train={a.num_train}',
                f"--data_root={cfg['data_root']}",
                f"--name={cfg['dataset']}",
            ]
            + flags
        )
        log = os.path.join(cfg['out_dir'], 'train.log')
        runs.append((label, [config] + extra, log, expect, cfg['objective'], a.max_iters * scale))
    todo = [r for r in runs if not (a.reuse and last_eval(r[2], r[-1]))]
    todo.sort(key=lambda r: -SEC_PER_STEP[r[4]] * r[5])  # the longest first: the shortest wall
    if todo:
        print(
            f"{len(todo)} trainings, {a.jobs} at a time: expect about "
            f"{estimate_minutes(todo, a.jobs):.0f} min on this machine's 2 cores "
            f"(+ ~1 min of evaluation); progress every minute",
            flush=True,
        )
    env = dict(os.environ, OMP_NUM_THREADS='1', WANDB_MODE='disabled')
    running, walls, t0, shown = [], {}, time.time(), time.time()
    while todo or running:
        while todo and len(running) < a.jobs:
            label, config, log, _, _, M = todo.pop(0)
            os.makedirs(os.path.dirname(log), exist_ok=True)
            cmd = [
                sys.executable,
                'train.py',
                *config,
                f'--max_iters={M}',
                f'--lr_decay_iters={M}',
                f'--eval_interval={max(1, M // 3)}',
                '--num_threads=1',
            ]
            print(' '.join(cmd[1:]) + f' > {log}', flush=True)
            proc = subprocess.Popen(cmd, stdout=open(log, 'w'), stderr=subprocess.STDOUT, env=env)
            running.append((label, proc, time.time(), log, M))
        time.sleep(2)
        if time.time() - shown >= 60:
            progress(running, t0)
            shown = time.time()
        for r in list(running):
            if r[1].poll() is not None:
                running.remove(r)
                walls[r[0]] = time.time() - r[2]
                if r[1].returncode:
                    raise DataError(f"{r[0]} failed (exit {r[1].returncode}): see {r[3]}")
    print(
        f"\npath accuracy (models of the configs; {a.num_train // 1000}k train graphs; exact match on "
        f"{a.num_eval} held-out and {a.num_eval} train graphs; next-token runs decode greedily)\n"
    )
    print(
        '| run | decoding | iterations | val exact-match | train exact-match | val per-position '
        '| expected | wall |'
    )
    print('|---|---|---|---|---|---|---|---|')
    for label, _, log, expect, objective, M in runs:
        if last_eval(log, M) is None:
            print(f'| {label} | | {M} | (no finished run in {log}) |||||')
            continue
        r = pathstar.evaluate_checkpoint(os.path.dirname(log), a.num_eval, verbose=False)
        wall = f"{walls[label] / 60:.1f} min" if label in walls else '(reused)'
        v, t = r['val'], r['train']
        if objective != 'unmasking':
            print(
                f"| {label} | greedy | {M} | {v['exact_match']:.3f} | {t['exact_match']:.3f} | "
                f"{pathstar.fmt(v['per_position'])} | {expect} | {wall} |"
            )
            continue
        for how, key, want in DECODINGS:
            pos = pathstar.fmt(v['per_position']) if key == 'exact_match' else ''
            print(
                f"| {label} | {how} | {M} | {v[key]:.3f} | {t[key]:.3f} | {pos} | {want} | {wall} |"
            )


if __name__ == '__main__':
    run_cli(main)
