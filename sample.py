"""
Sample from a trained checkpoint (after nanoGPT's sample.py).

    python sample.py --out_dir=out-shakespeare-char --start="ROMEO:" --num_samples=3

mode=next_token: autoregressive sampling with a causal model (temperature=0: greedy;
--speculative=True: greedy with self-speculative decoding by the extra heads, see mtp.py).
mode=chat: --start is a user message, rendered with the chat template; prints the assistant's
reply, stopped at its end-of-turn token (checkpoints trained on data/chat/prepare.py data).
mode=diffusion: masked-diffusion sampling from an `unmasking` checkpoint (diffusion.py;
    keys steps, length, order, score_temperature, block_len, remask, remask_ratio, ...).
Decoding uses the meta stored in the checkpoint (char vocab or GPT-2 BPE).
"""
import os
import sys

import torch

import diffusion
from configurator import ConfigError, load_config
from model import GPT, GPTConfig
from utils import DataError, gpt2_encoding, run_cli

DEFAULTS = dict(
    out_dir='out', ckpt='', mode='next_token', start='\n', num_samples=3, max_new_tokens=500,
    temperature=0.8, top_k=200, seed=1337, device='cpu', bpe_dir='',
    speculative=False,  # greedy self-speculative decoding with the extra heads of an n_future > 1 model
    **diffusion.SAMPLE_DEFAULTS,
)


def load_checkpoint(path, device='cpu'):
    if not os.path.isfile(path):
        raise DataError(f"checkpoint {path} not found: check --out_dir / --ckpt")
    ckpt = torch.load(path, map_location='cpu', weights_only=False)
    model = GPT(GPTConfig(**ckpt['model_args']))
    model.load_state_dict({k.removeprefix('_orig_mod.'): v for k, v in ckpt['model'].items()})
    return model.eval().to(device), ckpt


def codec(meta, bpe_dir=''):
    """(encode, decode) for a checkpoint's vocabulary."""
    meta = meta or {}
    if 'stoi' in meta:
        stoi, itos = meta['stoi'], meta['itos']
        unknown = '?'
        return (lambda s: [stoi[c] for c in s if c in stoi],
                lambda ids: ''.join(itos.get(int(i), unknown) for i in ids))
    enc = gpt2_encoding(bpe_dir or None)
    return (lambda s: enc.encode(s, allowed_special={'<|endoftext|>'}),
            lambda ids: enc.decode([int(i) for i in ids if int(i) < enc.n_vocab]))


def main(argv=None):
    cfg, _ = load_config(DEFAULTS, sys.argv[1:] if argv is None else argv)
    torch.manual_seed(cfg['seed'])
    path = cfg['ckpt'] or os.path.join(cfg['out_dir'], 'ckpt.pt')
    model, ckpt = load_checkpoint(path, cfg['device'])
    if cfg['mode'] == 'chat':  # --start is the user message; stops at <|end|> (chat.py)
        from chat import sample_chat
        return sample_chat(model, ckpt, cfg)
    if cfg['mode'] == 'diffusion':
        return diffusion.sample_main(cfg, model, ckpt, path)
    if cfg['mode'] != 'next_token':
        raise ConfigError(f"--mode={cfg['mode']} is unknown; this sample.py knows: next_token, "
                          f"chat, diffusion")
    if not model.config.causal:
        raise ConfigError(f"{path} is a bidirectional model (objective "
                          f"'{ckpt.get('objective')}'): next-token sampling needs a causal one")
    encode, decode = codec(ckpt.get('meta'), cfg['bpe_dir'])
    start = cfg['start']
    if start.startswith('FILE:'):
        with open(start[5:], encoding='utf-8') as f:
            start = f.read()
    ids = encode(start)
    if not ids:
        raise ConfigError(f"--start={cfg['start']!r} has no token in this vocabulary")
    x = torch.tensor(ids, dtype=torch.long, device=cfg['device'])[None]
    outs = []
    if cfg['speculative'] and model.config.n_future < 2:
        raise ConfigError(f"--speculative=True needs a checkpoint with extra heads (n_future > 1); "
                          f"{path} has n_future={model.config.n_future}")
    for _ in range(cfg['num_samples']):
        if cfg['speculative']:  # greedy; equals temperature=0 sampling, in fewer forward passes
            from mtp import speculative_generate
            y, stats = speculative_generate(model, x, cfg['max_new_tokens'])
            print(f"speculative: {stats['nfe']} forward passes for {cfg['max_new_tokens']} tokens, "
                  f"draft acceptance rate {stats['acceptance_rate']:.3f}")
        else:
            y = model.generate(x, cfg['max_new_tokens'], temperature=cfg['temperature'],
                               top_k=cfg['top_k'])
        outs.append(decode(y[0].tolist()))
        print(outs[-1])
        print('---------------')
    return outs


if __name__ == '__main__':
    run_cli(main)
