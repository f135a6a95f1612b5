"""
DDP equivalence: `torchrun --nproc_per_node=2` (gloo on CPU) vs one process with the same global
batch (gradient_accumulation_steps=2). Prints both loss curves' max absolute difference.

    python bench/ddp_check.py config/train_shakespeare_char.py --max_iters=50
Any train.py flag is passed to both runs (each run gets its own out_dir under /tmp).
"""

import os
import re
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(cmd, out_dir):
    env = dict(os.environ, OMP_NUM_THREADS='1', WANDB_MODE='disabled')
    p = subprocess.run(cmd + [f'--out_dir={out_dir}'], env=env, capture_output=True, text=True)
    if p.returncode:
        sys.exit(p.stdout[-2000:] + p.stderr[-3000:])
    return [float(m) for m in re.findall(r'^iter \d+/\d+: loss ([-\d.]+)', p.stdout, re.M)]


def main(argv):
    args = argv + ['--gradient_accumulation_steps=2', '--log_interval=1', '--num_threads=1']
    train = os.path.join(ROOT, 'train.py')
    tmp = tempfile.mkdtemp(prefix='ddp_check_')
    single = run([sys.executable, train] + args, os.path.join(tmp, 'single'))
    ddp = run(
        [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2', train]
        + args,
        os.path.join(tmp, 'ddp'),
    )
    assert len(single) == len(ddp) > 0, (len(single), len(ddp))
    diff = max(abs(a - b) for a, b in zip(single, ddp))
    print(
        f"{len(ddp)} steps: single-process final loss {single[-1]:.6f}, DDP x2 {ddp[-1]:.6f}, "
        f"max |difference| over all steps {diff:.2e}"
    )
    return diff


if __name__ == '__main__':
    main(sys.argv[1:])
