"""
The loss curves of a train.py run, from its out_dir/metrics.jsonl, to a PNG (no wandb needed).

    python bench/plot_run.py --out_dir=out-shakespeare-char              # -> <out_dir>/loss.png
    python bench/plot_run.py --out_dir=out-shakespeare-char --png=a.png

Top: training loss per logged iteration, and the evaluated train/val losses. Bottom: the
gradient norm before clipping. A resumed run appends to metrics.jsonl, so iterations run again
after the last checkpoint appear twice: the last row of each iteration is the one drawn.
"""

import json
import os
import sys

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from configurator import load_config, run_cli  # noqa: E402
from utils import DataError, atomic_write  # noqa: E402

DEFAULTS = dict(out_dir='out', png='')


def read_metrics(path):
    """{'train': {iter: row}, 'eval': {iter: row}}: the last row of each iteration; a line cut
    by a killed run is skipped."""
    if not os.path.isfile(path):
        raise DataError(f"{path} not found: --out_dir must be a train.py out_dir")
    rows = {'train': {}, 'eval': {}}
    with open(path, encoding='utf-8') as f:
        for line in f:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(row, dict) and row.get('kind') in rows:
                rows[row['kind']][row['iter']] = row
    if not rows['train'] and not rows['eval']:
        raise DataError(f"{path} has no train or eval rows: let the run log a few iterations")
    return rows


def plot(rows, png, title):
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 6), sharex=True, height_ratios=(3, 1))
    train = sorted(rows['train'].items())
    if train:
        top.plot(
            [i for i, _ in train],
            [r['loss'] for _, r in train],
            lw=0.8,
            color='0.55',
            label='train (step)',
        )
        gn = [(i, r['grad_norm']) for i, r in train if 'grad_norm' in r]
        bottom.plot([i for i, _ in gn], [g for _, g in gn], lw=0.8, color='tab:gray')
    ev = sorted(rows['eval'].items())
    for split, color in (('train', 'tab:blue'), ('val', 'tab:orange')):
        pts = [(i, r[split]) for i, r in ev if split in r]
        if pts:
            top.plot(*zip(*pts), 'o-', ms=3, color=color, label=f'{split} (eval)')
    top.set_ylabel('loss')
    top.set_title(title)
    top.legend()
    top.grid(alpha=0.3)
    bottom.set_ylabel('grad norm')
    bottom.set_xlabel('iteration')
    bottom.grid(alpha=0.3)
    fig.tight_layout()

    def write(tmp):
        fig.savefig(tmp, format='png', dpi=100)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600 files

    atomic_write(png, write)
    plt.close(fig)


def main(argv=None):
    cfg, _ = load_config(DEFAULTS, sys.argv[1:] if argv is None else argv)
    rows = read_metrics(os.path.join(cfg['out_dir'], 'metrics.jsonl'))
    png = cfg['png'] or os.path.join(cfg['out_dir'], 'loss.png')
    plot(rows, png, cfg['out_dir'])
    print(f"wrote {png} ({len(rows['train'])} train rows, {len(rows['eval'])} evaluations)")
    return png


if __name__ == '__main__':
    run_cli(main)
