"""
Where a CPU training step goes: torch.profiler over a few train.py-style steps, top ops by self
CPU time (issue 7's profiling pass).

    python bench/profile_step.py config/train_shakespeare_char.py --dataset=shakespeare --num_threads=1
Any train.py key works (e.g. --objective=mlm).
"""
import os
import sys

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import batches  # noqa: E402
import train  # noqa: E402
from configurator import load_config  # noqa: E402
from model import supervised_weights  # noqa: E402


def main(argv=None):
    cfg, _ = load_config(dict(train.DEFAULTS, prof_steps=5, prof_rows=12),
                         sys.argv[1:] if argv is None else argv)
    if cfg['num_threads'] > 0:
        torch.set_num_threads(cfg['num_threads'])
    cfg['device'] = 'cpu'
    source = batches.make_source(cfg, seed=cfg['seed'])
    model, _ = train.build_model(cfg, set(), source, 'cpu')
    opt = model.configure_optimizers(cfg['weight_decay'], cfg['learning_rate'], (0.9, 0.95), 'cpu')

    def step():
        b = source.get_batch('train', cfg['batch_size'])
        norm = supervised_weights(b['y'], b.get('loss_mask'), b.get('attention_mask'),
                                  model.config.n_future)
        _, loss = model(b['x'], b['y'], loss_norm=norm, **train.forward_kwargs(b))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    for _ in range(2):
        step()  # warm-up
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(cfg['prof_steps']):
            step()
    print(prof.key_averages().table(sort_by='self_cpu_time_total', row_limit=cfg['prof_rows']))


if __name__ == '__main__':
    main()
