"""
GPT-2 in and out at full size, offline: a randomly initialised GPT2LMHeadModel of a GPT-2 shape
(transformers' own init; no download) -> pretrained.load_model -> export.py -> transformers again,
and the largest logit difference of each hop. tests/test_pretrained.py checks the same on tiny
models; this shows nothing breaks at 124M (1024 positions, 50257 ids).

    python bench/gpt2_roundtrip.py                 # gpt2 (124M)
    python bench/gpt2_roundtrip.py --shape=gpt2-medium
"""

import os
import sys
import tempfile
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import checkpoint  # noqa: E402
import export  # noqa: E402
import pretrained  # noqa: E402
from configurator import ArgumentParser, run_cli  # noqa: E402

SHAPES = {'gpt2': (12, 12, 768), 'gpt2-medium': (24, 16, 1024)}  # n_layer, n_head, n_embd


def main():
    p = ArgumentParser(description=__doc__)
    p.add_argument('--shape', choices=SHAPES, default='gpt2')
    p.add_argument('--tokens', type=int, default=256)
    p.add_argument('--bpe_dir', default=os.path.join(ROOT, '..', 'shared', 'data', 'gpt2_bpe'))
    args = p.parse_args()
    import transformers  # bench-only dependency

    n_layer, n_head, n_embd = SHAPES[args.shape]
    torch.manual_seed(0)
    hf_config = transformers.GPT2Config(n_layer=n_layer, n_head=n_head, n_embd=n_embd)
    hf = transformers.GPT2LMHeadModel(hf_config).eval()
    x = torch.randint(hf_config.vocab_size, (2, args.tokens))
    with tempfile.TemporaryDirectory() as tmp:
        hf.save_pretrained(os.path.join(tmp, 'hf'))
        t0 = time.time()
        ours, ckpt = pretrained.load_model(os.path.join(tmp, 'hf'), flag='--init_from')
        load_s = time.time() - t0
        with torch.no_grad():
            want = hf(x).logits
            got = ours(x)[0]
        opt = ours.configure_optimizers(0.1, 1e-4, (0.9, 0.95), 'cpu')
        ckpt_path = os.path.join(tmp, 'ckpt.pt')
        checkpoint.save(ckpt_path, ours, opt, {'objective': 'next_token'}, ckpt['meta'], 0, 0.0)
        export.export({'ckpt': ckpt_path, 'out': os.path.join(tmp, 'out'), 'bpe_dir': args.bpe_dir})
        back = transformers.GPT2LMHeadModel.from_pretrained(os.path.join(tmp, 'out')).eval()
        with torch.no_grad():
            again = back(x).logits
    n = sum(p.numel() for p in ours.parameters())
    print(f"{args.shape}: {n / 1e6:.2f}M parameters, loaded in {load_s:.1f} s")
    print(f"HF -> ours:        max |logit difference| {(got - want).abs().max():.2e}")
    print(f"ours -> export.py: max |logit difference| {(again - got).abs().max():.2e}")
    print(f"(mean |logit| {want.abs().mean():.3f}, {x.numel()} positions)")


if __name__ == '__main__':
    run_cli(main)
