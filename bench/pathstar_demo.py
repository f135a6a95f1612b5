"""
The path-star demo (README "Path-star"): the Clever-Hans failure of teacher forcing, and a
masked-diffusion denoiser (reported to avoid it; not reproduced here, README "Masked diffusion").

    python bench/pathstar_demo.py                  # datasets + 4 trainings (2 at a time) + table
    python bench/pathstar_demo.py --max_iters=600  # shorter
    python bench/pathstar_demo.py --reuse          # only print the table of finished runs
    python bench/pathstar_demo.py --runs=all       # also the multi-token-prediction runs

Each run is `train.py config/<run>.py --max_iters=M --lr_decay_iters=M` on one thread, M = the
run's scale x --max_iters (see RUNS), logging to <out_dir>/train.log; the table evaluates each run's
final checkpoint (pathstar.evaluate_checkpoint). Datasets are made with pathstar.py when missing,
and made again when their meta.pkl records other generation arguments (pathstar.ensure_dataset).
"""

import argparse
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import pathstar  # noqa: E402
from configurator import load_config  # noqa: E402
from train import DEFAULTS  # noqa: E402

# (label, config, pathstar.py flags, the known result, extra train.py flags, steps scale):
# a run trains scale x --max_iters iterations. G(5,5) needs 2x (it stays on its plateau through
# 2500 iterations of a 2500 schedule); the denoiser 4x (README "Masked diffusion").
RUNS = [
    (
        'G(5,5) forward, teacher forcing',
        'config/pathstar_d5_l5.py',
        ['--d=5', '--l=5', '--N=50'],
        '~1/5',
        [],
        2,
    ),
    (
        'G(2,5) forward, teacher forcing',
        'config/pathstar_d2_l5.py',
        ['--d=2', '--l=5', '--N=50'],
        '~1/2',
        [],
        1,
    ),
    (
        'G(2,5) reverse targets',
        'config/pathstar_d2_l5_rev.py',
        ['--d=2', '--l=5', '--N=50', '--reverse'],
        '>= 0.99',
        [],
        1,
    ),
    (
        'G(2,5) masked diffusion, confidence order',
        'config/diffusion_pathstar_d2_l5.py',
        ['--d=2', '--l=5', '--N=50'],
        '~1 reported (not reached here)',
        ['--learning_rate=3e-3', '--min_lr=3e-4', '--pathstar_online=True'],
        4,
    ),
] + [  # multi-token prediction: same data and steps, k heads
    (
        f'G(2,5) forward, {k} heads (MTP)',
        'config/pathstar_d2_l5.py',
        ['--d=2', '--l=5', '--N=50'],
        '?',
        [f'--n_future={k}', f'--out_dir=out-pathstar-d2-l5-mtp{k}'],
        1,
    )
    for k in (2, 4)
]


def last_eval(log, max_iters):
    """The k=v pairs of the log's 'step <max_iters>:' line, or None if the run is unfinished."""
    if not os.path.exists(log):
        return None
    lines = [ln for ln in open(log) if ln.startswith(f'step {max_iters}:')]
    if not lines:
        return None
    out = {}
    for part in lines[-1].split(':', 1)[1].split(', '):
        k, v = part.strip().split('=', 1)
        out[k] = v
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument('--max_iters', type=int, default=1500)
    p.add_argument('--jobs', type=int, default=2, help='trainings at once, one thread each')
    p.add_argument('--num_train', type=int, default=50_000)
    p.add_argument('--reuse', action='store_true', help='keep finished runs, print the table')
    p.add_argument('--num_eval', type=int, default=500, help='val and train rows evaluated')
    p.add_argument('--runs', default='0,1,2,3', help="which RUNS (indices); 'all' for every one")
    a = p.parse_args(argv)
    os.chdir(ROOT)
    runs = []
    chosen = RUNS if a.runs == 'all' else [RUNS[int(i)] for i in a.runs.split(',')]
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
        runs.append((label, [config] + extra, log, expect, a.max_iters * scale))
    todo = [r for r in runs if not (a.reuse and last_eval(r[2], r[4]))]
    env = dict(os.environ, OMP_NUM_THREADS='1', WANDB_MODE='disabled')
    running, walls = [], {}
    while todo or running:
        while todo and len(running) < a.jobs:
            label, config, log, _, M = todo.pop(0)
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
            running.append(
                (
                    label,
                    subprocess.Popen(cmd, stdout=open(log, 'w'), stderr=subprocess.STDOUT, env=env),
                    time.time(),
                )
            )
        time.sleep(2)
        for r in list(running):
            if r[1].poll() is not None:
                running.remove(r)
                walls[r[0]] = time.time() - r[2]
                if r[1].returncode:
                    sys.exit(f"{r[0]} failed (exit {r[1].returncode}): see its train.log")
    print(
        f"\npath accuracy (3 layers x 64, {a.num_train // 1000}k train graphs; {a.num_eval} "
        f"held-out and {a.num_eval} train rows; greedy decoding, for the denoiser confidence "
        f"order; 'given the true prefix' = teacher-forced accuracy of each answer token)\n"
    )
    print(
        '| run | iterations | val exact-match | val per-position | val per-position given the '
        'true prefix | train exact-match | expected | wall |'
    )
    print('|---|---|---|---|---|---|---|---|')
    for label, _, log, expect, M in runs:
        if last_eval(log, M) is None:
            print(f'| {label} | {M} | (no finished run in {log}) ||||||')
            continue
        r = pathstar.evaluate_checkpoint(os.path.dirname(log), a.num_eval, verbose=False)
        wall = f"{walls[label] / 60:.1f} min" if label in walls else '(reused)'
        v = r['val']
        tf = pathstar.fmt(v['tf_per_position']) if 'tf_per_position' in v else '-'
        print(
            f"| {label} | {M} | {v['exact_match']:.3f} | {pathstar.fmt(v['per_position'])} | "
            f"{tf} | {r['train']['exact_match']:.3f} | {expect} | {wall} |"
        )


if __name__ == '__main__':
    main()
