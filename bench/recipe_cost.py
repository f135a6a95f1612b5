"""
What each config/gpt2_124m_*.py recipe costs: parameters, tokens, FLOPs and GPU time at an MFU.

    python bench/recipe_cost.py                      # 40% of an H100's 989 TFLOP/s, 8 GPUs
    python bench/recipe_cost.py --mfu=0.3 --peak_flops=312e12 --gpus=8   # A100s at 30%

FLOPs = 6 N D (forward + backward, Kaplan et al.), N = the model's parameters without the
position embedding (GPT.get_num_params, as nanoGPT's MFU), D = max_iters x batch_size x
block_size x gradient_accumulation_steps. Attention adds 12 L T d per token (train.py's MFU line
counts it: +15% at 12 x 768, T = 1024); it is left out here, as in the 6ND rule. A recipe from
GPT-2 weights (init_from=gpt2*) has GPT-2's shape and biases; its vocabulary is the data's
(50304 for data/webtext, 50261 for GPT-2 BPE chats), +2 ids for the masked objectives.
Estimates, not measurements: nothing here runs a GPU.
"""

import glob
import os
import sys

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import batches  # noqa: E402
import train  # noqa: E402
from configurator import ArgumentParser, load_config, run_cli  # noqa: E402
from model import GPT, GPTConfig  # noqa: E402

GPT2_SHAPES = {  # name -> (n_layer, n_head, n_embd), Radford et al. 2019
    'gpt2': (12, 12, 768),
    'gpt2-medium': (24, 16, 1024),
    'gpt2-large': (36, 20, 1280),
    'gpt2-xl': (48, 25, 1600),
}
VOCAB = {'sft': 50257 + 4, 'next_token': 50304}  # the data's ids; masked objectives add 2


def recipe(path):
    cfg, _ = load_config(train.DEFAULTS, [path])
    shape = dict(n_layer=cfg['n_layer'], n_head=cfg['n_head'], n_embd=cfg['n_embd'])
    bias = cfg['bias']
    if cfg['init_from'] in GPT2_SHAPES:
        shape = dict(zip(('n_layer', 'n_head', 'n_embd'), GPT2_SHAPES[cfg['init_from']]))
        bias = True
    masked = not batches.OBJECTIVES[cfg['objective']].causal
    vocab = VOCAB.get(cfg['objective'], 50304) + (2 if masked else 0)
    with torch.device('meta'):  # shapes only, no memory
        model = GPT(GPTConfig(**shape, block_size=cfg['block_size'], vocab_size=vocab, bias=bias))
    tokens_per_step = cfg['batch_size'] * cfg['block_size'] * cfg['gradient_accumulation_steps']
    return cfg, model.get_num_params(), tokens_per_step


def duration(seconds):
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def main():
    p = ArgumentParser(description=__doc__)
    p.add_argument('--mfu', type=float, default=0.4)
    p.add_argument('--peak_flops', type=float, default=989e12, help='per GPU (H100 bf16 dense)')
    p.add_argument('--gpus', type=int, default=8)
    args = p.parse_args()
    os.chdir(ROOT)  # the configs exec config/gpt2_124m_common.py by a relative path
    rate = args.mfu * args.peak_flops
    print(
        f"at {100 * args.mfu:.0f}% MFU of {args.peak_flops / 1e12:.0f} TFLOP/s per GPU\n"
        f"| recipe | objective | init | N | tokens/step | steps | tokens | FLOPs (6ND) | "
        f"1 GPU | {args.gpus} GPUs |\n|---|---|---|---|---|---|---|---|---|---|"
    )
    for path in sorted(glob.glob('config/gpt2_124m_*.py')):
        if path.endswith('_common.py'):
            continue
        cfg, n, per_step = recipe(path)
        tokens = per_step * cfg['max_iters']
        flops = 6 * n * tokens
        seconds = flops / rate
        print(
            f"| {os.path.basename(path)} | {cfg['objective']} | {cfg['init_from']} | "
            f"{n / 1e6:.1f}M | {per_step:,} | {cfg['max_iters']:,} | {tokens / 1e9:.3g}B | "
            f"{flops:.2g} | {duration(seconds)} | {duration(seconds / args.gpus)} |"
        )


if __name__ == '__main__':
    run_cli(main)
