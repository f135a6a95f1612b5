"""
Where a CPU training step goes: torch.profiler over a few train.py-style steps, top ops by self
CPU time (the profiling pass in docs/RESULTS.md, Performance).

    python bench/profile_step.py config/train_shakespeare_char.py --dataset=shakespeare --num_threads=1
Any train.py key works (e.g. --objective=mlm).
"""

import os
import sys

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import train  # noqa: E402
from configurator import load_config, run_cli  # noqa: E402
from throughput import make_step  # noqa: E402


def main(argv=None):
    cfg, explicit = load_config(
        dict(train.DEFAULTS, prof_steps=5, prof_rows=12), sys.argv[1:] if argv is None else argv
    )
    if cfg['num_threads'] > 0:
        torch.set_num_threads(cfg['num_threads'])
    cfg['device'] = 'cpu'
    step, _ = make_step(cfg, explicit)  # the step bench/throughput.py times
    for _ in range(2):
        step()  # warm-up
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(cfg['prof_steps']):
            step()
    print(prof.key_averages().table(sort_by='self_cpu_time_total', row_limit=cfg['prof_rows']))


if __name__ == '__main__':
    run_cli(main)
