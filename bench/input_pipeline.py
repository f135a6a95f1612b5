"""
Does the input pipeline keep up with a GPU? On the host (CPU), at GPT-2 124M shapes (B=12,
T=1024, V=50304) on synthetic GPT-2 tokens:
  1. the time to build one micro-batch (host_batch: what the prefetch thread does per
     micro-batch) for every objective; on-policy drafts (a frozen denoiser) are a forward pass on
     the training device, so only their host part is timed here;
  2. a source's start-up time and memory on a large (sparse) train.bin;
  3. host syncs per training step (outside log lines), counted on a tiny model.

    python bench/input_pipeline.py                    # all three (about a minute)
    python bench/input_pipeline.py --tokens=20000000 --startup_gb=10

Targets (issue "Ready for the GPU"): every objective <= 10 ms per micro-batch on the host,
start-up < 5 s on any file size, no host sync per step except on log lines.
"""

import argparse
import os
import pickle
import resource
import statistics
import sys
import tempfile
import time

import numpy as np
import torch
from torch.overrides import TorchFunctionMode

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import batches  # noqa: E402
import train  # noqa: E402
from configurator import run_cli  # noqa: E402
from model import GPT  # noqa: E402
from utils import seeded  # noqa: E402

NEWLINE = 198  # GPT-2 '\n': lines for the MLM packing


def write_gpt2_like(d, n_tokens, seed=0):
    """A next-token dataset of n_tokens uniform GPT-2 ids with a newline every ~40 tokens."""
    os.makedirs(d, exist_ok=True)
    rng = np.random.default_rng(seed)
    for split, n in (('train', n_tokens), ('val', max(n_tokens // 20, 1 << 16))):
        ids = rng.integers(0, 50257, n, dtype=np.uint16)
        ids[rng.random(n) < 1 / 40] = NEWLINE
        ids.tofile(os.path.join(d, f'{split}.bin'))
    meta = {'vocab_size': 50304, 'tokenizer': 'gpt2', 'dtype': 'uint16', 'objective': 'next_token'}
    with open(os.path.join(d, 'meta.pkl'), 'wb') as f:
        pickle.dump(meta, f)


def write_chat_like(d, n_tokens, seed=0):
    """SFT shards (data/chat/prepare.py's layout): tokens + a 0/1 mask, half supervised."""
    rng = np.random.default_rng(seed)
    for split, n in (('train', n_tokens), ('val', 1 << 16)):
        os.makedirs(os.path.join(d, split), exist_ok=True)
        rng.integers(0, 50257, n, dtype=np.uint16).tofile(f'{d}/{split}/shard_000.bin')
        (rng.random(n) < 0.5).astype(np.uint8).tofile(f'{d}/{split}/shard_000_mask.bin')
    special = {'<|system|>': 50257, '<|user|>': 50258, '<|assistant|>': 50259, '<|end|>': 50260}
    meta = {'vocab_size': 50304, 'tokenizer': 'gpt2', 'dtype': 'uint16', 'special': special}
    with open(os.path.join(d, 'meta.pkl'), 'wb') as f:
        pickle.dump({**meta, 'objective': 'sft'}, f)


def cfg_for(root, dataset, objective, B, T, **over):
    return {
        **train.DEFAULTS,
        'data_root': root,
        'dataset': dataset,
        'objective': objective,
        'batch_size': B,
        'block_size': T,
        **over,
    }


def time_host_batches(source, B, reps):
    """Median ms of one host_batch (the prefetch thread's work per micro-batch)."""
    times = []
    for i in range(reps + 2):
        t = time.perf_counter()
        source.draw('train', B, seeded(0, i, 0))
        times.append(time.perf_counter() - t)
    return 1000 * statistics.median(times[2:])


class SyncCounter(TorchFunctionMode):
    """Counts the calls that make a host wait for a CUDA device (values read back, data-dependent
    shapes); thread-local, so the prefetch thread's host tensors are not counted."""

    SYNCS = {
        torch.Tensor.item,
        torch.Tensor.tolist,
        torch.Tensor.__bool__,
        torch.Tensor.__int__,
        torch.Tensor.__float__,
        torch.Tensor.__index__,
        torch.Tensor.cpu,
        torch.Tensor.numpy,
        torch.Tensor.nonzero,
        torch.nonzero,
        torch.masked_select,
        torch.unique,
    }

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in self.SYNCS:
            self.count += 1
        return func(*args, **(kwargs or {}))


def fused_adamw(self, weight_decay, learning_rate, betas, device_type):
    """GPT.configure_optimizers as on CUDA (fused AdamW): the CPU's for-loop AdamW reads each
    parameter's step count back with .item(), a CPU-only cost the count should not include."""
    decay = [p for p in self.parameters() if p.dim() >= 2]
    rest = [p for p in self.parameters() if p.dim() < 2]
    groups = [
        {'params': decay, 'weight_decay': weight_decay},
        {'params': rest, 'weight_decay': 0.0},
    ]
    return torch.optim.AdamW(groups, lr=learning_rate, betas=betas, fused=True)


def syncs_per_step(root, objective, dataset, extra):
    """(host syncs of a run of n steps with one log line) difference over two lengths: the
    syncs of a training step that logs nothing, with the optimizer of a CUDA run."""
    counts = {}
    GPT.configure_optimizers = fused_adamw
    for n in (4, 12):
        args = [
            f'--data_root={root}',
            f'--dataset={dataset}',
            f'--objective={objective}',
            '--device=cpu',
            '--compile=False',
            '--n_layer=1',
            '--n_head=2',
            '--n_embd=32',
            '--batch_size=4',
            '--eval_iters=1',
            f'--max_iters={n}',
            f'--eval_interval={n}',
            f'--log_interval={n}',  # one log line (iteration 0) in both runs
            f'--out_dir={root}/out-sync-{objective}-{n}',
            *extra,
        ]
        with SyncCounter() as c, open(os.devnull, 'w') as null:
            stdout, sys.stdout = sys.stdout, null
            try:
                train.main(args)
            finally:
                sys.stdout = stdout
        counts[n] = c.count
    return (counts[12] - counts[4]) / 8


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument('--tokens', type=int, default=20_000_000, help='synthetic train tokens')
    p.add_argument('--batch_size', type=int, default=12)
    p.add_argument('--block_size', type=int, default=1024)
    p.add_argument('--reps', type=int, default=20)
    p.add_argument('--startup_gb', type=float, default=10.0, help='size of the sparse train.bin')
    p.add_argument('--skip_syncs', action='store_true')
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    B, T = a.batch_size, a.block_size
    with tempfile.TemporaryDirectory() as root:
        write_gpt2_like(f'{root}/web', a.tokens)
        write_chat_like(f'{root}/chat', a.tokens // 4)
        print(f"1. host batch build, B={B} T={T} V=50304, {a.tokens:,} synthetic tokens, 1 thread")
        print("| objective | ms per micro-batch (host) | source start-up (s) |")
        print("|---|---|---|")
        rows = [
            ('next_token', 'web', {}),
            ('mlm', 'web', {}),
            ('sft', 'chat', {}),
            ('unmasking', 'web', {}),
            ('remasking', 'web', {}),
            ('hybrid', 'web', {}),
        ]
        for objective, dataset, over in rows:
            t = time.perf_counter()
            src = batches.make_source(cfg_for(root, dataset, objective, B, T, **over), seed=0)
            startup = time.perf_counter() - t
            ms = time_host_batches(src, B, a.reps)
            print(f"| {objective} | {ms:.2f} | {startup:.2f} |")
        # on-policy drafts: the host part is the uniform-proposal work minus the proposals
        # (a seed is drawn instead); the forward runs in device_batch on the GPU
        print(
            "| remasking / hybrid, on-policy | host part < the uniform rows above (the draft is"
            " a forward pass in device_batch, on the training device) | |"
        )

        gb = a.startup_gb
        big = f'{root}/big'
        os.makedirs(big)
        with open(f'{big}/train.bin', 'wb') as f:
            f.truncate(int(gb * 2**30) // 2 * 2)
        with open(f'{big}/val.bin', 'wb') as f:
            f.truncate(1 << 20)
        with open(f'{big}/meta.pkl', 'wb') as f:
            pickle.dump({'vocab_size': 50304, 'tokenizer': 'gpt2', 'dtype': 'uint16'}, f)
        print(f"\n2. start-up on a sparse {gb:g} GB train.bin ({int(gb * 2**29):,} tokens)")
        print("| objective | start-up (s) | peak RSS growth (MB) | first batch (ms) |")
        print("|---|---|---|---|")
        for objective in ('next_token', 'mlm', 'unmasking'):
            rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            t = time.perf_counter()
            src = batches.make_source(cfg_for(root, 'big', objective, B, T), seed=0)
            startup = time.perf_counter() - t
            t = time.perf_counter()
            src.draw('train', B, seeded(0, 0, 0))
            first = 1000 * (time.perf_counter() - t)
            rss = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024
            print(f"| {objective} | {startup:.3f} | {rss:.0f} | {first:.1f} |")

        if a.skip_syncs:
            return
        write_gpt2_like(f'{root}/small', 200_000)
        print("\n3. host syncs per training step outside log lines (tiny model, CPU, counted)")
        print("| objective | syncs per step |")
        print("|---|---|")
        for objective in ('next_token', 'mlm', 'unmasking', 'remasking', 'hybrid'):
            n = syncs_per_step(root, objective, 'small', ['--block_size=64'])
            print(f"| {objective} | {n:g} |")


if __name__ == '__main__':
    run_cli(main)
