"""
Sample from a trained checkpoint (after nanoGPT's sample.py).

    python sample.py --out_dir=out-shakespeare-char --start="ROMEO:" --num_samples=3

mode=next_token: autoregressive sampling with a causal model (temperature=0: greedy;
--speculative=True: greedy with self-speculative decoding by the extra heads, see mtp.py).
mode=chat: --start is a user message, rendered with the chat template; prints the assistant's
reply, stopped at its end-of-turn token (checkpoints trained on data/chat/prepare.py data).
mode=diffusion: masked-diffusion sampling from an `unmasking` checkpoint (diffusion.py;
    keys steps, length, order, score_temperature, block_len, remask, remask_ratio, ...).
Decoding uses the meta stored in the checkpoint (char vocab or GPT-2 BPE); a nanoGPT checkpoint
uses data/<its config's dataset>/meta.pkl (as nanoGPT's sample.py), else GPT-2 BPE.
"""

import os
import sys

import torch

import diffusion
from chat import sample_chat
from checkpoint import check_kind
from configurator import ConfigError, check_device_keys, exit_if_help, load_config, run_cli
from mtp import speculative_generate
from pretrained import load_model
from utils import DataError, autocast, resolve_device, resolve_dtype, text_codec

DEFAULTS = dict(
    out_dir='out',
    ckpt='',
    mode='next_token',
    start='\n',
    num_samples=3,
    max_new_tokens=500,
    temperature=0.8,
    top_k=200,
    seed=1337,
    device='auto',
    dtype='auto',
    bpe_dir='',
    speculative=False,  # greedy self-speculative decoding with the extra heads of an n_future > 1 model
    **diffusion.SAMPLE_DEFAULTS,
)
# --help: one line per key of DEFAULTS (tests/test_help.py: exactly the keys of DEFAULTS)
HELP = dict(
    out_dir='read out_dir/ckpt.pt (train.py --out_dir)',
    ckpt='a checkpoint file or folder instead of out_dir/ckpt.pt; gpt2 (etc.) or a HF folder',
    mode="'next_token', 'chat' (--start is a user message) or 'diffusion'",
    start='the prompt, or FILE:path to read it from a file',
    num_samples='samples to draw',
    max_new_tokens='tokens generated per sample (next_token, chat)',
    temperature='sampling temperature (0: greedy)',
    top_k='sample among the top_k most likely tokens (next_token, chat)',
    seed='torch seed of the sampling',
    device="'auto' (cuda if available), 'cpu', 'cuda', 'cuda:1', ...",
    dtype="'auto' (bfloat16 on CUDA when supported), 'float32', 'bfloat16', 'float16'",
    bpe_dir='folder with vocab.bpe + encoder.json for GPT-2 BPE offline',
    speculative='greedy self-speculative decoding with the extra heads (n_future > 1)',
)
USAGE = 'usage: python sample.py [config.py ...] [--key=value ...]'
HELP_GROUPS = [('sampling', HELP), ('diffusion sampling (--mode=diffusion)', diffusion.SAMPLE_HELP)]


def prompt_text(cfg):
    """--start, or the contents of the file it names as FILE:path."""
    start = cfg['start']
    if not start.startswith('FILE:'):
        return start
    if not os.path.isfile(start[5:]):
        raise ConfigError(f"--start={start}: file {start[5:]} not found")
    with open(start[5:], encoding='utf-8') as f:
        return f.read()


def encode_prompt(encode, text, cfg):
    try:
        return encode(text)
    except DataError as e:
        raise ConfigError(
            f"--start={cfg['start']!r}: {e}; use characters of the training data"
        ) from None


def checkpoint_codec(ckpt, cfg):
    """text_codec of the checkpoint's vocabulary; a checkpoint without one (nanoGPT, no
    meta.pkl of its dataset) is GPT-2 BPE, and the error says why when that is unavailable."""
    try:
        return text_codec(ckpt['meta'], cfg['bpe_dir'])
    except DataError as e:
        if ckpt['meta'] is not None:
            raise
        where = ckpt.get('meta_path')
        where = f"{where} not found" if where else "its config names no dataset"
        raise DataError(
            f"{ckpt['flag']}={ckpt['path']} has no vocabulary of its own (a nanoGPT checkpoint; "
            f"{where}), so it is read as GPT-2 BPE: {e}"
        ) from None


def sample_diffusion(cfg, model, ckpt):
    """--mode=diffusion: prompt `start` (fixed) + [MASK] up to `length`."""
    meta, path = ckpt['meta'] or {}, ckpt['path']
    check_kind(
        ckpt,
        objectives=('unmasking', 'hybrid'),
        causal=False,
        fix='--mode=diffusion samples from a denoiser: train one with --objective=unmasking',
    )
    base, mask_id, wrong_id = diffusion.vocab_ids(meta)
    if cfg['remask'] == 'self':
        diffusion.check_self_remask(ckpt, path)
    encode, decode = text_codec(meta, cfg['bpe_dir'])
    L = cfg['length'] or model.config.block_size
    if L > model.config.block_size:
        raise ConfigError(f"--length={L} exceeds the model's block_size {model.config.block_size}")
    ids = encode_prompt(encode, prompt_text(cfg), cfg)[:L]
    canvas = torch.full((cfg['num_samples'], L), mask_id, dtype=torch.long, device=cfg['device'])
    canvas[:, : len(ids)] = torch.tensor(ids, dtype=torch.long, device=cfg['device'])
    remasker = None
    if cfg['remask'] == 'learned':
        remasker = diffusion.load_remasker(cfg['remasker_ckpt'], meta, cfg['device'])
    try:
        out, info = diffusion.diffusion_sample(
            model,
            canvas,
            cfg['steps'],
            mask_id,
            base,
            order=cfg['order'],
            temperature=cfg['temperature'],
            score_temperature=cfg['score_temperature'],
            block_len=cfg['block_len'],
            remask=cfg['remask'],
            remask_ratio=cfg['remask_ratio'],
            remask_schedule=cfg['remask_schedule'],
            remasker=remasker,
            wrong_id=wrong_id,
            remask_threshold=cfg['remask_threshold'],
            gen=torch.Generator().manual_seed(cfg['seed']),
        )
    except ValueError as e:
        raise ConfigError(str(e)) from None
    outs = [decode(row.tolist()) for row in out]
    for o in outs:
        print(o)
        print('---------------')
    print(f"NFE per sample: {info['nfe']}")
    return outs


def sample_next_token(cfg, model, ckpt):
    path = ckpt['path']
    check_kind(
        ckpt, causal=True, fix='next-token sampling needs one (--mode=diffusion: a denoiser)'
    )
    if cfg['speculative'] and model.config.n_future < 2:
        raise ConfigError(
            f"--speculative=True needs a checkpoint with extra heads (n_future > 1); "
            f"{path} has n_future={model.config.n_future}"
        )
    encode, decode = checkpoint_codec(ckpt, cfg)
    ids = encode_prompt(encode, prompt_text(cfg), cfg)
    if not ids:
        raise ConfigError(f"--start={cfg['start']!r} has no token in this vocabulary")
    x = torch.tensor(ids, dtype=torch.long, device=cfg['device'])[None]
    outs = []
    for _ in range(cfg['num_samples']):
        if cfg['speculative']:  # greedy; equals temperature=0 sampling, in fewer forward passes
            y, stats = speculative_generate(model, x, cfg['max_new_tokens'])
            print(
                f"speculative: {stats['nfe']} forward passes for {cfg['max_new_tokens']} tokens, "
                f"draft acceptance rate {stats['acceptance_rate']:.3f}"
            )
        else:
            y = model.generate(
                x, cfg['max_new_tokens'], temperature=cfg['temperature'], top_k=cfg['top_k']
            )
        outs.append(decode(y[0].tolist()))
        print(outs[-1])
        print('---------------')
    return outs


def chat_mode(cfg, model, ckpt):
    check_kind(ckpt, causal=True, fix='--mode=chat generates left to right')
    return sample_chat(cfg, model, ckpt, prompt_text(cfg))


MODES = {'next_token': sample_next_token, 'chat': chat_mode, 'diffusion': sample_diffusion}


def check_config(cfg):
    """sample.py's keys, checked before the checkpoint is read: a value that cannot mean
    anything is a ConfigError naming the flag (--length against the model's block_size is
    checked once the model is loaded)."""

    def bad(key, why):
        raise ConfigError(f"--{key}={cfg[key]}: {why}")

    check_device_keys(cfg)
    if cfg['num_samples'] < 1:
        bad('num_samples', "must be >= 1")
    if cfg['max_new_tokens'] < 0:
        bad('max_new_tokens', "must be >= 0")
    if cfg['temperature'] < 0:
        bad('temperature', "must be >= 0 (0 = greedy)")
    if cfg['top_k'] is not None and cfg['top_k'] < 1:
        bad('top_k', "must be >= 1 (or None: no top-k cut)")
    if cfg['steps'] < 1:
        bad('steps', "must be >= 1 (denoiser passes)")
    for key in ('length', 'block_len', 'score_temperature'):
        if cfg[key] < 0:
            bad(key, "must be >= 0" + (" (0 = the model's block_size)" if key == 'length' else ''))
    for key in ('remask_ratio', 'remask_threshold'):
        if not 0.0 <= cfg[key] <= 1.0:
            bad(key, "must be in [0, 1]")
    if cfg['order'] not in diffusion.ORDERS:
        bad('order', f"choose one of {', '.join(diffusion.ORDERS)}")
    if cfg['remask'] not in diffusion.REMASKS:
        bad('remask', f"choose one of {', '.join(diffusion.REMASKS)}")
    if cfg['remask_schedule'] not in diffusion.REMASK_SCHEDULES:
        bad('remask_schedule', f"choose one of {', '.join(diffusion.REMASK_SCHEDULES)}")
    if cfg['remask'] == 'learned' and not cfg['remasker_ckpt']:
        bad('remask', "learned remasking needs --remasker_ckpt=<a remasking checkpoint>")


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    exit_if_help(argv, USAGE, DEFAULTS, HELP_GROUPS)
    cfg, _ = load_config(DEFAULTS, argv)
    check_config(cfg)
    if cfg['mode'] not in MODES:
        raise ConfigError(
            f"--mode={cfg['mode']} is unknown; this sample.py knows: {', '.join(MODES)}"
        )
    torch.manual_seed(cfg['seed'])
    cfg['device'] = resolve_device(cfg['device'])
    device_type = torch.device(cfg['device']).type
    cfg['dtype'] = resolve_dtype(cfg['dtype'], device_type)
    path = cfg['ckpt'] or os.path.join(cfg['out_dir'], 'ckpt.pt')
    model, ckpt = load_model(path, cfg['device'], flag='--ckpt' if cfg['ckpt'] else '--out_dir')
    with autocast(device_type, cfg['dtype']):  # bf16 on CUDA, as in training
        return MODES[cfg['mode']](cfg, model, ckpt)


if __name__ == '__main__':
    run_cli(main)
