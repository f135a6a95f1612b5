"""
Why the masked-diffusion path-star denoiser stays on its plateau: one factor at a time from
config/diffusion_pathstar_d2_l5.py (docs/RESULTS.md, "Masked diffusion on path-star").

    python bench/diffusion_ablation.py --rows=untied,emb1 --jobs=2   # train those rows, print the table
    python bench/diffusion_ablation.py --reuse                       # only the table of finished logs
    python bench/diffusion_ablation.py --list                        # the rows and their flags

Each row is `train.py <config> <flags> --max_iters=S --lr_decay_iters=S --eval_interval=E` on one
thread, logging to out-ablation/<row>/train.log. A run stops early once it is solved (confidence-
order exact match >= --solved on the eval rows, at one evaluation). The table gives the step at
which it left the plateau (first evaluation with confidence-order exact match >= 0.5), the step
at which it was solved, and the confidence / random / one-pass exact match at its last evaluation.
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
from configurator import ArgumentParser, ConfigError, run_cli  # noqa: E402

CONFIG = 'config/diffusion_pathstar_d2_l5_gpt2init.py'  # the earlier recipe: the base row
DATA = ['--mode=incontext', '--d=2', '--l=5', '--N=50']
# the optimizer of a plain AdamW script: each one on its own, then all four
OPT = {
    'wd0': ['--weight_decay=0.0'],
    'constlr': ['--decay_lr=False', '--warmup_iters=0'],
    'noclip': ['--grad_clip=0.0'],
    'beta2': ['--beta2=0.999'],
}
BOTH = ['--tie_embeddings=False', '--emb_init_std=1.0']
REF = BOTH + ['--linear_init=pytorch'] + [f for v in OPT.values() for f in v]
ROWS = {  # name -> flags on top of CONFIG
    'base': [],
    'untied': ['--tie_embeddings=False'],
    'emb1': ['--emb_init_std=1.0'],
    'both': BOTH,
    # the reference's local edit of model.py (PyTorch init everywhere, untied) + plain AdamW:
    # config/diffusion_pathstar_d2_l5.py; then one factor of it back at a time
    'reference_edit': REF,
    'reference_edit_emb002': [f for f in REF if f != '--emb_init_std=1.0'],
    'reference_edit_tied': [f for f in REF if f != '--tie_embeddings=False'],
    'reference_edit_repo_opt': BOTH + ['--linear_init=pytorch'],
    **{f'reference_edit_s{s}': REF + [f'--seed={s}'] for s in (2, 3)},
    **{f'both_{k}': BOTH + v for k, v in OPT.items()},
    'both_plain_adamw': BOTH + [f for v in OPT.values() for f in v],
    'reference_edit_tclamp': REF + ['--mask_t_min=0.2', '--mask_min_one=True'],
    'reference_edit_iid_t': REF + ['--mask_stratified=False'],
}
EVAL = re.compile(r'^step (\d+): (.*)$')


def evals(log):
    """[(step, {key: value})] of a train.log's evaluation lines."""
    out = []
    if os.path.exists(log):
        for line in open(log):
            m = EVAL.match(line)
            if m:
                kv = dict(p.split('=', 1) for p in m.group(2).split(', ') if '=' in p)
                out.append((int(m.group(1)), kv))
    return out


def summary(log, solved):
    ev = evals(log)
    if not ev:
        return None
    conf = [(s, float(kv.get('val_path_acc_conf', 0))) for s, kv in ev]
    left = next((s for s, c in conf if c >= 0.5), None)
    done = next((s for s, c in conf if c >= solved), None)
    step, kv = ev[-1]
    return dict(
        left=left,
        solved=done,
        step=step,
        conf=kv.get('val_path_acc_conf'),
        rand=kv.get('val_path_acc_rand'),
        one=kv.get('val_path_acc_parallel'),
    )


def command(name, a, seed=None):
    out = os.path.join(a.out_root, name)
    cmd = [
        'train.py',
        CONFIG,
        *ROWS[name],
        f'--max_iters={a.steps}',
        f'--lr_decay_iters={a.steps}',
        f'--eval_interval={a.eval_interval}',
        f'--diffusion_eval_rows={a.eval_rows}',
        f'--out_dir={out}',
        '--num_threads=1',
    ]
    return cmd + ([f'--seed={seed}'] if seed is not None else []), os.path.join(out, 'train.log')


def main(argv=None):
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument('--rows', default=','.join(ROWS), help='comma-separated row names')
    p.add_argument('--jobs', type=int, default=2, help='trainings at once, one thread each')
    p.add_argument('--steps', type=int, default=16000)
    p.add_argument('--eval_interval', type=int, default=1000)
    p.add_argument('--eval_rows', type=int, default=500)
    p.add_argument('--solved', type=float, default=0.99)
    p.add_argument('--out_root', default='out-ablation')
    p.add_argument('--reuse', action='store_true', help='only print the table of existing logs')
    p.add_argument('--list', action='store_true')
    a = p.parse_args(argv)
    os.chdir(ROOT)
    names = a.rows.split(',')
    for n in names:
        if n not in ROWS:
            raise ConfigError(f"--rows: unknown row {n!r}; rows: {', '.join(ROWS)}")
    if a.list:
        for n in names:
            print(f"{n}: python {' '.join(command(n, a)[0])}")
        return
    if not a.reuse:  # the config's dataset, (re)generated unless made with exactly DATA
        pathstar.ensure_dataset(DATA + ['--name=incontext_pathstar_d2_l5_n50'])
        run(names, a)
    print(
        f"\n| row | flags on top of {CONFIG} | left plateau (conf >= 0.5) | solved (>= {a.solved}) "
        f"| last eval step | conf / random / one pass |"
    )
    print('|---|---|---|---|---|---|')
    for n in names:
        s = summary(command(n, a)[1], a.solved)
        if s is None:
            print(f'| {n} | `{" ".join(ROWS[n])}` | (no log) |||')
            continue
        print(
            f"| {n} | `{' '.join(ROWS[n]) or '(none)'}` | {s['left'] or '-'} | {s['solved'] or '-'} | "
            f"{s['step']} | {s['conf']} / {s['rand']} / {s['one']} |"
        )


def run(names, a):
    env = dict(os.environ, OMP_NUM_THREADS='1', WANDB_MODE='disabled')
    todo, running = list(names), []
    while todo or running:
        while todo and len(running) < a.jobs:
            n = todo.pop(0)
            cmd, log = command(n, a)
            os.makedirs(os.path.dirname(log), exist_ok=True)
            print(f"python {' '.join(cmd)} > {log}", flush=True)
            running.append(
                (
                    n,
                    log,
                    subprocess.Popen(
                        [sys.executable, *cmd],
                        stdout=open(log, 'w'),
                        stderr=subprocess.STDOUT,
                        env=env,
                    ),
                )
            )
        time.sleep(5)
        for n, log, proc in list(running):
            s = summary(log, a.solved)
            if proc.poll() is None and s and s['solved'] is not None:
                proc.terminate()  # solved: the rest of the budget goes to the next row
                proc.wait()
            if proc.poll() is not None:
                running.remove((n, log, proc))
                print(f"{n}: done ({summary(log, a.solved)})", flush=True)


if __name__ == '__main__':
    run_cli(main)
