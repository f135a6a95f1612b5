"""
Hugging Face GPT-2 weights in and out (transformers' GPT2LMHeadModel layout, safetensors only).

In:  --init_from=gpt2 (gpt2-medium, gpt2-large, gpt2-xl) reads model.safetensors + config.json
     from the local Hugging Face cache (offline; `huggingface-cli download gpt2` fills it), and
     --init_from=<folder> any folder with those two files (e.g. what export.py wrote). The
     result is a checkpoint dict (checkpoint.load's shape), so train.py and sample.py build it
     like any checkpoint. pytorch_model.bin is never read: it is a pickle.
Out: to_hf() turns a causal checkpoint into the tensors and config.json of a GPT2LMHeadModel
     (export.py writes the folder).

The layouts differ only in HF's Conv1D, which stores Linear weights as (in, out): those four
matrices per block are transposed (as nanoGPT's from_pretrained). The vocabulary keeps GPT-2's
50257 rows (as nanoGPT for pretrained weights); a dataset with more ids (50304-padded shards,
SFT role tags) grows it when training starts (GPT.resize_vocab). GPT-2 uses the tanh GELU
(gelu_new): the model is built with gelu_approximate='tanh', so its logits are HF's.
"""

import glob
import json
import os
import re

import torch

from checkpoint import build, describe, load
from configurator import ConfigError
from utils import DataError

GPT2_NAMES = ('gpt2', 'gpt2-medium', 'gpt2-large', 'gpt2-xl')
CONV1D = ('attn.c_attn.weight', 'attn.c_proj.weight', 'mlp.c_fc.weight', 'mlp.c_proj.weight')
ACTIVATIONS = {'gelu_new': 'tanh', 'gelu_pytorch_tanh': 'tanh', 'gelu': 'none'}  # HF -> ours
GPT2_META = {'vocab_size': 50257, 'tokenizer': 'gpt2', 'dtype': 'uint16', 'eot_token': 50256}
SAFETENSORS_PIP = 'pip install safetensors==0.8.0'


def is_hf_folder(path):
    return os.path.isfile(os.path.join(path, 'config.json')) and not os.path.exists(
        os.path.join(path, 'ckpt.pt')
    )


def is_pretrained(init_from):
    """Does this --init_from / --ckpt name GPT-2 weights (a name, or a HF model folder)?"""
    name = init_from.removeprefix('openai-community/')
    return name in GPT2_NAMES or (os.path.isdir(init_from) and is_hf_folder(init_from))


def hub_cache():
    """Where huggingface_hub keeps downloads: HF_HUB_CACHE, HF_HOME/hub, or ~/.cache."""
    if os.environ.get('HF_HUB_CACHE'):
        return os.environ['HF_HUB_CACHE']
    home = os.environ.get('HF_HOME') or os.path.join(
        os.environ.get('XDG_CACHE_HOME') or os.path.expanduser('~/.cache'), 'huggingface'
    )
    return os.path.join(home, 'hub')


def find_weights(name, flag='--init_from'):
    """The snapshot folder of GPT-2 `name` in the local HF cache that has model.safetensors and
    config.json (refs/main's first); else a DataError saying where it looked and how to get it."""
    name = name.removeprefix('openai-community/')
    repos = [os.path.join(hub_cache(), f'models--{r}') for r in (name, f'openai-community--{name}')]
    for repo in repos:
        snapshots = sorted(glob.glob(os.path.join(repo, 'snapshots', '*')))
        ref = os.path.join(repo, 'refs', 'main')
        if os.path.isfile(ref):
            with open(ref) as f:
                main = os.path.join(repo, 'snapshots', f.read().strip())
            snapshots = [main] + [s for s in snapshots if s != main]
        for snap in snapshots:
            if all(
                os.path.isfile(os.path.join(snap, f)) for f in ('model.safetensors', 'config.json')
            ):
                return snap
    raise DataError(
        f"{flag}={name}: no model.safetensors + config.json of {name} in the Hugging Face cache "
        f"(looked in {' and '.join(r + '/snapshots/*' for r in repos)}): download them with "
        f"`huggingface-cli download {name} config.json model.safetensors` (HF_HOME sets the "
        f"cache), or pass {flag}=<a folder with config.json and model.safetensors>"
    )


def read_safetensors(path, flag):
    try:
        from safetensors.torch import load_file  # optional: only for HF weights
    except ImportError:
        raise DataError(
            f"{flag}: reading Hugging Face weights needs safetensors: {SAFETENSORS_PIP}"
        ) from None
    try:
        return load_file(path)
    except Exception as e:  # a truncated or foreign file: one line
        raise DataError(
            f"{flag}={path}: not a readable safetensors file ({type(e).__name__}: {e})"
        ) from None


def model_args_of(hf, where):
    """Our model_args for a GPT-2 config.json (dict); what GPT-2 variants we cannot run exactly
    is a DataError naming the setting."""

    def refuse(what):
        raise DataError(f"{where}/config.json: {what}; this GPT cannot load it exactly")

    if hf.get('model_type', 'gpt2') != 'gpt2':
        refuse(f"model_type {hf.get('model_type')!r}, not 'gpt2'")
    act = hf.get('activation_function', 'gelu_new')
    if act not in ACTIVATIONS:
        refuse(f"activation_function {act!r} (supported: {', '.join(ACTIVATIONS)})")
    n_embd = hf['n_embd']
    if hf.get('n_inner') not in (None, 4 * n_embd):
        refuse(f"n_inner {hf['n_inner']} (this GPT's MLP is 4 x n_embd = {4 * n_embd})")
    if abs(hf.get('layer_norm_epsilon', 1e-5) - 1e-5) > 1e-12:
        refuse(f"layer_norm_epsilon {hf['layer_norm_epsilon']} (this GPT uses 1e-5)")
    for key, ok in (('scale_attn_weights', True), ('scale_attn_by_inverse_layer_idx', False)):
        if hf.get(key, ok) != ok:
            refuse(f"{key}={hf[key]}")
    if hf.get('add_cross_attention'):
        refuse("add_cross_attention=True")
    return {
        'n_layer': hf['n_layer'],
        'n_head': hf['n_head'],
        'n_embd': n_embd,
        'block_size': hf['n_positions'],
        'vocab_size': hf['vocab_size'],
        'bias': True,
        'causal': True,
        'n_future': 1,
        'dropout': 0.0,
        'tie_embeddings': hf.get('tie_word_embeddings', True),
        'gelu_approximate': ACTIVATIONS[act],
    }


def from_hf_state(tensors, args, where):
    """HF GPT2LMHeadModel / GPT2Model tensors -> our state dict (Conv1D weights transposed)."""
    state = {}
    for k, v in tensors.items():
        k = k.removeprefix('transformer.')
        if re.search(r'\.attn\.(bias|masked_bias)$', k):  # causal-mask buffers of old versions
            continue
        if k == 'lm_head.weight':
            if not args['tie_embeddings']:
                state[k] = v
            continue
        state['transformer.' + k] = v.t() if k.endswith(CONV1D) else v
    if 'transformer.wte.weight' not in state:
        raise DataError(f"{where}/model.safetensors has no wte.weight: not GPT-2 weights")
    if args['tie_embeddings']:
        state['lm_head.weight'] = state['transformer.wte.weight']
    elif 'lm_head.weight' not in state:
        raise DataError(
            f"{where}: config.json says tie_word_embeddings=false but model.safetensors has "
            f"no lm_head.weight"
        )
    return {k: v.float().contiguous() for k, v in state.items()}


def vocab_meta(folder, vocab_size):
    """The vocabulary of a HF folder: nanomask_vocab.json where export.py wrote one (characters),
    else GPT-2 BPE (every GPT-2 checkpoint)."""
    path = os.path.join(folder, 'nanomask_vocab.json')
    if not os.path.isfile(path):
        return dict(GPT2_META, vocab_size=vocab_size)
    with open(path, encoding='utf-8') as f:
        meta = json.load(f)
    if 'itos' in meta:
        meta['itos'] = {int(i): s for i, s in meta['itos'].items()}
        meta['stoi'] = {s: i for i, s in meta['itos'].items()}
    return meta


def load_pretrained(init_from, flag='--init_from'):
    """The checkpoint dict of GPT-2 weights (a name in the HF cache, or a folder): model,
    model_args, meta (GPT-2 BPE), objective 'next_token', path, flag."""
    folder = init_from if os.path.isdir(init_from) else find_weights(init_from, flag)
    weights = os.path.join(folder, 'model.safetensors')
    if not os.path.isfile(weights):
        bin_ = ' (it has pytorch_model.bin: a pickle, never read here)'
        has_bin = os.path.exists(os.path.join(folder, 'pytorch_model.bin'))
        raise DataError(
            f"{flag}={folder}: no model.safetensors{bin_ if has_bin else ''}; download it "
            f"(`huggingface-cli download <model> model.safetensors`) or save the model with "
            f"save_pretrained(..., safe_serialization=True)"
        )
    try:
        with open(os.path.join(folder, 'config.json'), encoding='utf-8') as f:
            hf = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise DataError(f"{flag}={folder}/config.json is unreadable ({e})") from None
    args = model_args_of(hf, folder)
    state = from_hf_state(read_safetensors(weights, flag), args, folder)
    return {
        'model': state,
        'model_args': args,
        'meta': vocab_meta(folder, args['vocab_size']),
        'objective': 'next_token',
        'config': {},
        'iter_num': 0,
        'path': folder,
        'flag': flag,
    }


def load_any(path, flag):
    """checkpoint.load, or load_pretrained for GPT-2 names and HF folders: what a flag that
    names a checkpoint (train.py --init_from, sample.py --ckpt) reads."""
    return load_pretrained(path, flag) if is_pretrained(path) else load(path, flag)


def load_model(path, device='cpu', flag='--ckpt'):
    """(model in eval mode on device, checkpoint dict), as checkpoint.load_model."""
    ckpt = load_any(path, flag)
    return build(ckpt).eval().to(device), ckpt


# ------------------------------------------------------------------ out: GPT2LMHeadModel
def check_exportable(ckpt, flag='--ckpt'):
    """ConfigError unless GPT2LMHeadModel can represent the checkpoint: it must be causal. What
    else differs is handled exactly by to_hf (no biases, untied head, extra heads dropped)."""
    args = ckpt['model_args']
    if not args.get('causal', True):
        raise ConfigError(
            f"{flag}={ckpt['path']} is {describe(ckpt)}: GPT2LMHeadModel is causal, so only "
            f"causal checkpoints (next_token, pathstar, sft) export"
        )
    if args.get('pos_emb', 'learned') != 'learned':
        raise ConfigError(
            f"{flag}={ckpt['path']} has pos_emb={args['pos_emb']!r}: GPT2LMHeadModel has learned "
            f"positions only (a rotary model could go to a LLaMA-style model, not done here)"
        )


def to_hf(ckpt, bos_eos=None):
    """(tensors, config.json dict) of a GPT2LMHeadModel computing the checkpoint's next-token
    logits exactly: head 1 only (extra multi-token heads are dropped), zero biases where the
    model has none (bias=False: exact), a separate lm_head when the head is untied."""
    args, state = ckpt['model_args'], dict(ckpt['model'])
    state = {k.removeprefix('_orig_mod.'): v for k, v in state.items()}
    out = {}
    for k, v in state.items():
        if k.startswith('future_heads.') or (
            k == 'lm_head.weight' and args.get('tie_embeddings', True)
        ):
            continue
        if re.fullmatch(r'transformer\.h\.\d+\.attn\.bias', k):  # nanoGPT's mask buffer
            continue
        v = v.detach().float()
        out[k] = (v.t() if k.endswith(CONV1D) else v).contiguous().clone()
    if not args.get('bias', True):  # GPT-2 always has biases: zeros compute the same function
        norms_and_matmuls = [
            k
            for k in out
            if k.endswith('.weight') and not k.startswith(('lm_head', 'transformer.w'))
        ]
        for k in norms_and_matmuls:  # the last dim is the output: Conv1D (in, out), norms (C,)
            out[k.removesuffix('weight') + 'bias'] = torch.zeros(out[k].shape[-1])
    config = {
        'architectures': ['GPT2LMHeadModel'],
        'model_type': 'gpt2',
        'vocab_size': args['vocab_size'],
        'n_positions': args['block_size'],
        'n_embd': args['n_embd'],
        'n_layer': args['n_layer'],
        'n_head': args['n_head'],
        'n_inner': None,
        'activation_function': 'gelu_new' if args.get('gelu_approximate') == 'tanh' else 'gelu',
        'resid_pdrop': 0.0,
        'embd_pdrop': 0.0,
        'attn_pdrop': 0.0,
        'layer_norm_epsilon': 1e-5,
        'initializer_range': 0.02,
        'scale_attn_weights': True,
        'use_cache': True,
        'tie_word_embeddings': args.get('tie_embeddings', True),
        'bos_token_id': bos_eos,
        'eos_token_id': bos_eos,
        'torch_dtype': 'float32',
    }
    return out, config
