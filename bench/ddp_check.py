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
sys.path.insert(0, ROOT)
import train  # noqa: E402
from configurator import load_config, run_cli  # noqa: E402
from utils import DataError  # noqa: E402


def run(cmd, out_dir):
    """The logged losses of a train.py run; a failed run is a DataError naming its log."""
    env = dict(os.environ, OMP_NUM_THREADS='1', WANDB_MODE='disabled')
    p = subprocess.run(cmd + [f'--out_dir={out_dir}'], env=env, capture_output=True, text=True)
    if p.returncode:
        os.makedirs(out_dir, exist_ok=True)
        log = os.path.join(out_dir, 'train.log')
        with open(log, 'w', encoding='utf-8') as f:
            f.write(p.stdout + p.stderr)
        raise DataError(f"a run failed (exit {p.returncode}): {' '.join(cmd[1:])}; see {log}")
    return [float(m) for m in re.findall(r'^iter \d+/\d+: loss ([-\d.]+)', p.stdout, re.M)]


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = argv + ['--gradient_accumulation_steps=2', '--log_interval=1', '--num_threads=1']
    load_config(train.DEFAULTS, args)  # a bad flag is one line here, not two failed runs
    script = os.path.join(ROOT, 'train.py')
    tmp = tempfile.mkdtemp(prefix='ddp_check_')
    single = run([sys.executable, script] + args, os.path.join(tmp, 'single'))
    ddp = run(
        [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2']
        + [script]
        + args,
        os.path.join(tmp, 'ddp'),
    )
    if not len(single) == len(ddp) > 0:
        raise DataError(f"{len(single)} single-process and {len(ddp)} DDP loss lines in {tmp}")
    diff = max(abs(a - b) for a, b in zip(single, ddp))
    print(
        f"{len(ddp)} steps: single-process final loss {single[-1]:.6f}, DDP x2 {ddp[-1]:.6f}, "
        f"max |difference| over all steps {diff:.2e}"
    )
    return diff


if __name__ == '__main__':
    run_cli(main)
