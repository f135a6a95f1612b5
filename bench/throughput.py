"""
Training-step throughput for a config: ms/step (median after warm-up), tokens/s, the share
of the step spent in the batch function, peak memory (CUDA) and the first step's seconds (with
--compile=True: the cold compile) — the same train.py code path.

    python bench/throughput.py config/train_shakespeare_char.py --device=cpu --compile=False
    python bench/throughput.py ... --bench_steps=30  (any train.py key works)
"""

import json
import os
import resource
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import batches  # noqa: E402
import train  # noqa: E402
from configurator import load_config, run_cli  # noqa: E402
from utils import resolve_device  # noqa: E402


def make_step(cfg, explicit=None):
    """(step, device): step() runs one optimisation step of cfg with train.py's own code
    (train.draw_batches, train.train_step) and returns the seconds spent drawing the batches.
    explicit: the keys given (load_config); with it the objective and block_size are chosen
    as train.py chooses them (batches.resolve_data). Shared by this script and
    bench/profile_step.py."""
    if explicit is not None:
        for line in batches.resolve_data(cfg, explicit):
            print(line)
    device = cfg['device'] = resolve_device(cfg['device'])
    device_type = 'cuda' if 'cuda' in device else 'cpu'
    source = batches.make_source(cfg, seed=cfg['seed'])
    torch.manual_seed(cfg['seed'])
    model = train.build_model(cfg, set(), source).to(device)
    opt = model.configure_optimizers(
        cfg['weight_decay'], cfg['learning_rate'], (cfg['beta1'], cfg['beta2']), device_type
    )
    fwd = torch.compile(model) if cfg['compile'] else model
    ctx = train.autocast_context(cfg, device_type)
    scaler = torch.amp.GradScaler(device_type, enabled=(cfg['dtype'] == 'float16'))
    it = iter(range(10**9))

    def step():
        i = next(it)
        t0 = time.perf_counter()
        micro = train.draw_batches(source, cfg, i, 0, cfg['gradient_accumulation_steps'], device)
        t_batch = time.perf_counter() - t0
        train.train_step(fwd, opt, scaler, micro, cfg, ctx, [i] * len(micro))
        return t_batch

    return step, device


def measure(cfg, steps=20, warmup=5, explicit=None):
    """Returns a dict of figures for `steps` timed optimisation steps of cfg (explicit: see
    make_step)."""
    step, device = make_step(cfg, explicit)
    use_cuda = 'cuda' in device
    sync = torch.cuda.synchronize if use_cuda else (lambda: None)
    step_t, batch_t = [], []
    for i in range(warmup + steps):
        sync()
        t0 = time.perf_counter()
        t_batch = step()
        sync()
        if i == 0:  # with --compile=True: the cold compile
            first = time.perf_counter() - t0
        if i >= warmup:
            step_t.append(time.perf_counter() - t0)
            batch_t.append(t_batch)
    ms = statistics.median(step_t) * 1000
    tokens = cfg['batch_size'] * cfg['block_size'] * cfg['gradient_accumulation_steps']
    peak = (
        torch.cuda.max_memory_allocated() / 2**20
        if use_cuda
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    )
    return {
        'ms_per_step': ms,
        'tokens_per_s': tokens / (ms / 1000),
        'batch_share': statistics.median(batch_t) / statistics.median(step_t),
        'peak_mem_mib': peak,
        'first_step_s': first,
    }


def main(argv=None):
    defaults = dict(train.DEFAULTS, bench_steps=20, bench_warmup=5, bench_json=False)
    cfg, explicit = load_config(defaults, sys.argv[1:] if argv is None else argv)
    if cfg['num_threads'] > 0:
        torch.set_num_threads(cfg['num_threads'])
    r = measure(cfg, cfg['bench_steps'], cfg['bench_warmup'], explicit)
    print(
        f"{cfg['objective']} {cfg['dataset']} B={cfg['batch_size']} T={cfg['block_size']} "
        f"L={cfg['n_layer']} C={cfg['n_embd']} threads={torch.get_num_threads()}: "
        f"{r['ms_per_step']:.1f} ms/step, {r['tokens_per_s']:,.0f} tokens/s, batch function "
        f"{100 * r['batch_share']:.1f}% of the step, peak memory {r['peak_mem_mib']:.0f} MiB, "
        f"first step {r['first_step_s']:.1f} s"
    )
    if cfg['bench_json']:  # one machine-readable line for bench/objectives.py
        print('JSON ' + json.dumps(r))
    return r


if __name__ == '__main__':
    run_cli(main)
