"""
Fixed-window masked LM vs SEP-varlen MLM on shakespeare_char: same model, steps, corruption
and seed; both scored on the same val metric (val_mlm: CE on positions replaced by [MASK] at
ratio mlm_eval_ratio, see mlm.evaluate). The two runs train side by side, one thread each.

    python bench/mlm_compare.py                      # the README figures (~15 min on 2 cores)
    python bench/mlm_compare.py --max_iters=200      # any train.py flag is passed to both runs
    python bench/mlm_compare.py --tag=_s2 --seed=2   # --tag: suffix of out-mlm-<packing> and PNG

Prints the eval table and the final figures, and saves the curves to docs/mlm_compare.png.
"""

import json
import os
import subprocess
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import train  # noqa: E402
from configurator import load_config, run_cli  # noqa: E402
from utils import DataError  # noqa: E402

COMMON = [
    '--dataset=shakespeare_char',
    '--objective=mlm',
    '--device=cpu',
    '--compile=False',
    '--num_threads=1',
    '--n_layer=4',
    '--n_head=4',
    '--n_embd=128',
    '--block_size=128',
    '--batch_size=16',
    '--dropout=0.0',
    '--learning_rate=1e-3',
    '--min_lr=1e-4',
    '--beta2=0.99',
    '--warmup_iters=100',
    '--max_iters=2000',
    '--lr_decay_iters=2000',
    '--eval_interval=200',
    '--eval_iters=10',
    '--log_interval=50',
    '--always_save_checkpoint=False',
    '--mlm_probability=0.15',
    '--seed=1337',
]
RUNS = ('window', 'sep')


def worker(packing, flags, tag=''):
    out = os.path.join(ROOT, f'out-mlm-{packing}{tag}')
    hist = train.main(COMMON + flags + [f'--mlm_packing={packing}', f'--out_dir={out}'])
    with open(os.path.join(out, 'history.json'), 'w') as f:
        json.dump(hist, f)


def unigram_entropy(path):
    d = np.fromfile(path, dtype=np.uint16)
    p = np.bincount(d) / len(d)
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


def main(argv=None):
    """Both runs side by side (or, with --worker=<packing>, one of them: the subprocess)."""
    args = sys.argv[1:] if argv is None else argv
    tag = ''.join(a.split('=', 1)[1] for a in args if a.startswith('--tag='))
    flags = [a for a in args if not a.startswith('--tag=')]
    if flags and flags[0].startswith('--worker='):
        return worker(flags[0].split('=', 1)[1], flags[1:], tag)
    load_config(train.DEFAULTS, COMMON + flags)  # a bad flag is one line here, not two failed runs
    procs = {}
    for p in RUNS:
        os.makedirs(os.path.join(ROOT, f'out-mlm-{p}{tag}'), exist_ok=True)
        log = open(os.path.join(ROOT, f'out-mlm-{p}{tag}', 'log.txt'), 'w')
        env = dict(os.environ, OMP_NUM_THREADS='1', WANDB_MODE='disabled')
        procs[p] = subprocess.Popen(
            [sys.executable, __file__, f'--worker={p}', f'--tag={tag}'] + flags,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=ROOT,
        )
    for p, proc in procs.items():
        if proc.wait() != 0:
            raise DataError(f"the {p} run failed: see out-mlm-{p}{tag}/log.txt")
    hist = {
        p: json.load(open(os.path.join(ROOT, f'out-mlm-{p}{tag}', 'history.json'))) for p in RUNS
    }
    H = unigram_entropy(os.path.join(ROOT, 'data', 'shakespeare_char', 'train.bin'))
    print(f"unigram entropy of train.bin: {H:.4f} nats/char")
    print("iter | val_mlm window | val_mlm sep | sep - window | attn_probe (sep, nomask - mask)")
    ev = {p: {e['iter']: e for e in hist[p]['eval']} for p in RUNS}
    for it in sorted(ev['window']):
        w, s = ev['window'][it], ev['sep'].get(it)
        if s:
            print(
                f"{it:5d} | {w['val_mlm']:.4f} | {s['val_mlm']:.4f} | "
                f"{s['val_mlm'] - w['val_mlm']:+.4f} | {s['attn_probe']:+.4f}"
            )
    last = {p: hist[p]['eval'][-1] for p in RUNS}
    print(
        f"final: window val_mlm {last['window']['val_mlm']:.4f}, sep val_mlm "
        f"{last['sep']['val_mlm']:.4f}, difference {last['sep']['val_mlm'] - last['window']['val_mlm']:+.4f}; "
        f"sep without key mask {last['sep']['val_mlm_nomask']:.4f} (probe {last['sep']['attn_probe']:+.4f})"
    )
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(11, 4))
    for p in RUNS:
        e = hist[p]['eval']
        ax[0].plot([x['iter'] for x in e], [x['val_mlm'] for x in e], 'o-', label=f'{p}: val_mlm')
        t = hist[p]['train']
        ax[1].plot([x['iter'] for x in t], [x['loss'] for x in t], label=f'{p}: train loss')
    e = hist['sep']['eval']
    ax[0].plot(
        [x['iter'] for x in e],
        [x['val_mlm_nomask'] for x in e],
        'x--',
        label='sep: val_mlm, no key mask (probe)',
    )
    for a in ax:
        a.axhline(H, color='gray', ls=':', label=f'unigram entropy {H:.2f}')
        a.set_xlabel('iter')
        a.legend()
    ax[0].set_ylabel('CE on [MASK] positions (nats/char)')
    ax[0].set_title('val: 15% [MASK], same metric')
    ax[1].set_title('train loss (80/10/10, 15%)')
    fig.tight_layout()
    png = os.path.join(ROOT, 'docs', f'mlm_compare{tag}.png')
    fig.savefig(png, dpi=100)
    print(f"saved {png}")


if __name__ == '__main__':
    run_cli(main)
