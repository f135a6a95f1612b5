"""
What keeps the masked-diffusion path-star denoiser on its plateau, and what shortens it
(docs/RESULTS.md, "Masked diffusion on path-star"): rows of flags on top of a base config, each
trained on one thread per seed, stopped once solved; the table gives the steps to solve per seed.

    python bench/diffusion_ablation.py --rows=lr3e-3,bs64 --seeds=3,1337 --steps=3000   # screen
    python bench/diffusion_ablation.py --rows=lr3e-3 --seeds=1337,2,3,4,6 --steps=4000  # confirm
    python bench/diffusion_ablation.py --rows=untied,emb1 --steps=16000 --eval_interval=1000
    python bench/diffusion_ablation.py --rows=lr3e-3 --seeds=3,1337 --reuse  # only the table
    python bench/diffusion_ablation.py --list                                # rows and flags

Each (row, seed) is `train.py <base config> <flags> --max_iters=S --lr_decay_iters=S
--eval_interval=E --seed=<seed>` on one thread, logging to out-ablation/<row>/seed<seed>/train.log
(without --seeds: the row's own seed, out-ablation/<row>/train.log). A run stops early once it is
solved (confidence-order exact match >= --solved on the eval rows, at one evaluation). The table
gives, per seed, the step at which it was solved and, in brackets, the step at which it left the
plateau (first evaluation with confidence-order exact match >= 0.5); '>S' = not solved within the
budget. --jobs_file: a file holding the most trainings allowed at once (at most --jobs), read
again before each launch (a shared machine can lower it while the sweep runs).
"""

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import pathstar  # noqa: E402
from configurator import ArgumentParser, ConfigError, run_cli  # noqa: E402

OLD = 'config/diffusion_pathstar_d2_l5_gpt2init.py'  # the earlier recipe (on the plateau)
NEW = 'config/diffusion_pathstar_d2_l5.py'  # the current recipe, the sweep's base
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
ABLATION = {  # name -> flags on top of OLD: one factor at a time (the plateau's causes)
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


def cosine(warmup, min_lr):
    return ['--decay_lr=True', f'--warmup_iters={warmup}', f'--min_lr={min_lr}']


LR3 = ['--learning_rate=3e-3']
SWEEP = {  # name -> flags on top of NEW: what shortens the plateau (issue 22)
    # the learning rate (issue 14's recipe: 1e-3; the config now has 3e-3)
    **{f'lr{lr}': [f'--learning_rate={lr}'] for lr in ('1e-3', '2e-3', '3e-3', '5e-3', '1e-2')},
    # on top of lr 3e-3: tokens per step, the masking-ratio distribution, heads, schedule, Adam
    'lr3e-3_bs256': LR3 + ['--batch_size=256'],
    'lr5e-3_bs256': ['--learning_rate=5e-3', '--batch_size=256'],
    'lr3e-3_bs64': LR3 + ['--batch_size=64'],
    'lr3e-3_bs32': LR3 + ['--batch_size=32'],
    'lr2e-3_bs64': ['--learning_rate=2e-3', '--batch_size=64'],
    'lr2e-3_bs32': ['--learning_rate=2e-3', '--batch_size=32'],
    'lr3e-3_tpow2': LR3 + ['--mask_t_power=2.0'],
    'lr3e-3_tpow0.5': LR3 + ['--mask_t_power=0.5'],
    'lr3e-3_bs64_tpow0.5': LR3 + ['--batch_size=64', '--mask_t_power=0.5'],
    'lr3e-3_invt': LR3 + ['--unmasking_loss=inv_t', '--mask_t_min=0.2', '--mask_min_one=True'],
    'lr3e-3_tclamp': LR3 + ['--mask_t_min=0.2', '--mask_min_one=True'],
    'lr3e-3_iid_t': LR3 + ['--mask_stratified=False'],
    'lr3e-3_heads2': LR3 + ['--n_head=2'],
    'lr3e-3_heads8': LR3 + ['--n_head=8'],
    'lr3e-3_heads16': LR3 + ['--n_head=16'],
    'lr3e-3_emb0.3': LR3 + ['--emb_init_std=0.3'],
    'lr3e-3_emb3': LR3 + ['--emb_init_std=3.0'],
    'lr3e-3_cosine': LR3 + cosine(100, 3e-4),
    'lr5e-3_cosine': ['--learning_rate=5e-3'] + cosine(200, 5e-4),
    'lr3e-3_beta2_0.99': LR3 + ['--beta2=0.99'],
    'lr3e-3_beta1_0.8': LR3 + ['--beta1=0.8'],
    'lr3e-3_online': LR3 + ['--pathstar_online=True'],
    # equal FLOPs per token (~12 L C^2): 3 x 64 = 2 x 80 = 4 x 56 = 6 x 44 (heads of 16 or 20)
    'lr3e-3_2x80': LR3 + ['--n_layer=2', '--n_embd=80'],
    'lr3e-3_4x56': LR3 + ['--n_layer=4', '--n_embd=56'],
    # width (the residual stream), not the head size and not the position encoding: at lr 1e-3
    'w128': ['--learning_rate=1e-3', '--n_embd=128'],
    'w128_lr2e-3': ['--learning_rate=2e-3', '--n_embd=128'],
    'w128_lr3e-3': ['--learning_rate=3e-3', '--n_embd=128'],
    'heads2': ['--learning_rate=1e-3', '--n_head=2'],  # heads of 32 at width 64
    'rope': ['--learning_rate=1e-3', '--pos_emb=rope'],
}
# the sweep ran on the config's width 64 with a constant lr: pinned, so its rows keep their
# meaning now that the config is 3 x 128 with a cooldown (a row's own flags come after)
SWEEP_BASE = ['--n_embd=64', '--cooldown_frac=0.0']


def on_base(base, flags):
    """`flags` after the flags of `base` that they do not set again."""
    keys = {f.split('=', 1)[0] for f in flags}
    return [f for f in base if f.split('=', 1)[0] not in keys] + flags


ROWS = {
    **{k: (OLD, v) for k, v in ABLATION.items()},
    **{k: (NEW, on_base(SWEEP_BASE, v)) for k, v in SWEEP.items()},
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
    """Of a run's train.log (and metrics.jsonl beside it): the steps at which it left the plateau
    and was solved (None: not yet), its last evaluation, the wall seconds from its first
    evaluation to the solving one, its median ms per logged training step, and what its
    evaluations cost against training (needs --log_interval dividing --eval_interval)."""
    ev = evals(log)
    if not ev:
        return None
    conf = [(s, float(kv.get('val_path_acc_conf', 0))) for s, kv in ev]
    left = next((s for s, c in conf if c >= 0.5), None)
    done = next((s for s, c in conf if c >= solved), None)
    step, kv = ev[-1]
    times, dts, after_eval = {}, [], []
    metrics = os.path.join(os.path.dirname(log), 'metrics.jsonl')
    if os.path.exists(metrics):
        for line in open(metrics):
            r = json.loads(line)
            if r['kind'] == 'eval':
                times.setdefault(r['iter'], r['time'])
            elif r['iter'] in times and r['iter'] > 0:  # this step's dt includes the evaluation
                after_eval.append(r['dt_ms'])
            elif r['iter'] > 0:
                dts.append(r['dt_ms'])
    wall = times[done] - times[0] if done is not None and 0 in times and done in times else None
    ms = statistics.median(dts) if dts else None
    interval = min((b - a for a, b in zip(times, list(times)[1:])), default=None)
    eval_share = (  # evaluation time per eval_interval over training time per eval_interval
        (statistics.median(after_eval) - ms) / (ms * interval) if ms and after_eval else None
    )
    return dict(
        left=left,
        solved=done,
        step=step,
        conf=kv.get('val_path_acc_conf'),
        rand=kv.get('val_path_acc_rand'),
        one=kv.get('val_path_acc_parallel'),
        wall=wall,
        ms=ms,
        eval_share=eval_share,
    )


def command(name, a, seed=None):
    """(train.py argv, its log) of row `name` with `seed` (None: the row's own seed)."""
    config, flags = ROWS[name]
    out = os.path.join(a.out_root, name, *([f'seed{seed}'] if seed is not None else []))
    cmd = [
        'train.py',
        config,
        *flags,
        f'--max_iters={a.steps}',
        f'--lr_decay_iters={a.steps}',
        f'--eval_interval={a.eval_interval}',
        f'--diffusion_eval_rows={a.eval_rows}',
        f'--eval_iters={a.eval_iters}',
        f'--log_interval={a.log_interval}',
        f'--out_dir={out}',
        '--num_threads=1',
    ]
    return cmd + ([f'--seed={seed}'] if seed is not None else []), os.path.join(out, 'train.log')


def cell(s, steps):
    """One seed's table cell: 'solved (left)', '>steps (conf at the last evaluation)', or
    the running run's last evaluation."""
    if s is None:
        return '(no log)'
    if s['solved'] is not None:
        return f"{s['solved']:,} ({s['left']:,})"
    if s['step'] >= steps:
        return f">{s['step']:,} ({float(s['conf']):.2f})"
    return f"(at {s['step']:,}: {float(s['conf']):.2f})"


def main(argv=None):
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument('--rows', default=','.join(SWEEP), help='comma-separated row names')
    p.add_argument('--seeds', default='', help="comma-separated seeds ('': each row's own)")
    p.add_argument('--jobs', type=int, default=2, help='trainings at once, one thread each')
    p.add_argument('--jobs_file', default='', help='file holding --jobs, read before each launch')
    p.add_argument('--steps', type=int, default=4000)
    p.add_argument('--eval_interval', type=int, default=250)
    p.add_argument('--eval_rows', type=int, default=500)
    p.add_argument('--eval_iters', type=int, default=2)
    p.add_argument('--log_interval', type=int, default=50)
    p.add_argument('--solved', type=float, default=0.99)
    p.add_argument('--out_root', default='out-ablation')
    p.add_argument('--reuse', action='store_true', help='only print the table of existing logs')
    p.add_argument('--rerun', action='store_true', help='also train (row, seed)s already done')
    p.add_argument(
        '--extend',
        action='store_true',
        help='resume runs that ended unsolved at a smaller --steps (constant lr: the same run)',
    )
    p.add_argument('--list', action='store_true')
    a = p.parse_args(argv)
    os.chdir(ROOT)
    names = a.rows.split(',')
    for n in names:
        if n not in ROWS:
            raise ConfigError(f"--rows: unknown row {n!r}; rows: {', '.join(ROWS)}")
    try:
        seeds = [int(s) for s in a.seeds.split(',')] if a.seeds else [None]
    except ValueError:
        raise ConfigError(f'--seeds: expected comma-separated integers, got {a.seeds!r}') from None
    jobs = [(n, s) for n in names for s in seeds]
    if a.list:
        for n, s in jobs:
            print(f"{n}: python {' '.join(command(n, a, s)[0])}")
        return
    if not a.reuse:  # the config's dataset, (re)generated unless made with exactly DATA
        pathstar.ensure_dataset(DATA + ['--name=incontext_pathstar_d2_l5_n50'])
        run([(n, s) for n, s in jobs if a.rerun or not finished(command(n, a, s)[1], a)], a)
    heads = [f'seed {s}' if s is not None else "row's seed" for s in seeds]
    print(
        f"\nsteps to solve (confidence order >= {a.solved} on {a.eval_rows} val graphs, "
        f"evaluated every {a.eval_interval}; in brackets: left the plateau, >= 0.5)\n"
    )
    print(
        f"| row | base + flags | {' | '.join(heads)} | solved | max steps | max wall | ms/step "
        f"| eval cost |"
    )
    print('|---|---|' + '---|' * (len(seeds) + 5))
    for n in names:
        config, flags = ROWS[n]
        ss = [summary(command(n, a, s)[1], a.solved) for s in seeds]
        done = [s for s in ss if s and s['solved'] is not None]
        full = len(done) == len(seeds)
        walls = [s['wall'] for s in done if s['wall'] is not None]
        ms = [s['ms'] for s in ss if s and s['ms']]
        ev = [s['eval_share'] for s in ss if s and s['eval_share'] is not None]
        most = f"{max(s['solved'] for s in done):,}" if full else '-'
        wall = f'{max(walls) / 60:.1f} min' if full and len(walls) == len(done) else '-'
        print(
            f"| {n} | `{os.path.basename(config)} {' '.join(flags)}` | "
            + ' | '.join(cell(s, a.steps) for s in ss)
            + f" | {len(done)}/{len(seeds)} | {most} | {wall} | "
            + (f'{statistics.median(ms):.0f} | ' if ms else '- | ')
            + (f'{100 * statistics.median(ev):.0f}% |' if ev else '- |')
        )


def finished(log, a):
    """Solved, or evaluated at the end of the budget."""
    s = summary(log, a.solved)
    return s is not None and (s['solved'] is not None or s['step'] >= a.steps)


def allowed(a):
    """Trainings allowed at once now: --jobs, or fewer if --jobs_file says so."""
    if a.jobs_file:
        try:
            return max(0, min(a.jobs, int(open(a.jobs_file).read().strip())))
        except (OSError, ValueError):
            pass  # unreadable: keep --jobs
    return a.jobs


def run(jobs, a):
    env = dict(os.environ, OMP_NUM_THREADS='1', WANDB_MODE='disabled')
    todo, running = list(jobs), []
    while todo or running:
        while todo and len(running) < allowed(a):
            n, seed = todo.pop(0)
            cmd, log = command(n, a, seed)
            os.makedirs(os.path.dirname(log), exist_ok=True)
            more = a.extend and summary(log, a.solved) is not None and not a.rerun
            cmd += ['--init_from=resume'] if more else []  # from its last checkpoint, log appended
            print(f"python {' '.join(cmd)} {'>>' if more else '>'} {log}", flush=True)
            proc = subprocess.Popen(
                [sys.executable, *cmd],
                stdout=open(log, 'a' if more else 'w'),
                stderr=subprocess.STDOUT,
                env=env,
            )
            running.append((n, seed, log, proc))
        time.sleep(5)
        for n, seed, log, proc in list(running):
            s = summary(log, a.solved)
            if proc.poll() is None and s and s['solved'] is not None:
                proc.terminate()  # solved: the rest of the budget goes to the next run
                proc.wait()
            if proc.poll() is not None:
                running.remove((n, seed, log, proc))
                print(f"{n} seed {seed}: {cell(summary(log, a.solved), a.steps)}", flush=True)


if __name__ == '__main__':
    run_cli(main)
