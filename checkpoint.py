"""
The one place checkpoints are written and read (train.py, sample.py, pathstar.py, batches.py's
frozen denoisers, bench/). A checkpoint is a dict:
    model (state dict), model_args (GPTConfig fields), config (the run's train.py keys),
    meta (the dataset's vocabulary and special ids), objective, iter_num, best_val_loss,
    optimizer and torch_rng (to resume).
nanoGPT's own checkpoints (no meta, no objective) load too: their vocabulary is the meta.pkl of
the dataset named in their config (data/<dataset>/meta.pkl, as nanoGPT's sample.py reads it).

What a checkpoint IS is checked here too, for every flag that names one: its kind (objective,
causal or not: check_kind, check_init) and its vocabulary (check_vocab).
"""

import os
import pickle
import re
import zipfile

import torch

from configurator import ConfigError
from model import GPT, GPTConfig
from utils import DataError, atomic_write, load_meta, normalise_meta, vocab_mismatch


def resolve(path):
    """A checkpoint file, or an out_dir holding ckpt.pt."""
    return os.path.join(path, 'ckpt.pt') if os.path.isdir(path) else path


def save(path, model, optimizer, cfg, meta, iter_num, best_val_loss):
    """Atomically (temp file + rename), readable by collaborators (mode 0644)."""
    ckpt = {
        'model': model.state_dict(),
        'optimizer': optimizer.state_dict(),
        'model_args': vars(model.config).copy(),
        'config': cfg,
        'iter_num': iter_num,
        'best_val_loss': best_val_loss,
        'meta': meta,
        'objective': cfg['objective'],
        'torch_rng': torch.get_rng_state(),
    }

    def write(tmp):
        torch.save(ckpt, tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600 files

    atomic_write(path, write)


def load(path, flag='--ckpt'):
    """The checkpoint dict (on CPU) with ckpt['path'] and a normalised meta. `flag` names the
    option that pointed here, for the error message."""
    path = resolve(path)
    if not os.path.isfile(path):
        raise DataError(f"{flag}={path}: checkpoint not found")
    try:
        ckpt = torch.load(path, map_location='cpu', weights_only=False)
    except (RuntimeError, EOFError, OSError, pickle.UnpicklingError, zipfile.BadZipFile) as e:
        raise DataError(
            f"{flag}={path}: not a readable checkpoint ({type(e).__name__}); it may "
            f"be truncated: use an earlier one or retrain"
        ) from None
    if not isinstance(ckpt, dict) or 'model' not in ckpt or 'model_args' not in ckpt:
        raise DataError(f"{flag}={path}: not a nanomask/nanoGPT checkpoint (no model/model_args)")
    ckpt['path'], ckpt['flag'] = path, flag
    ckpt['meta'] = normalise_meta(ckpt.get('meta'))
    if ckpt['meta'] is None and 'objective' not in ckpt:  # nanoGPT
        ckpt['meta'] = nanogpt_meta(ckpt)
    return ckpt


def nanogpt_meta(ckpt):
    """The vocabulary of a nanoGPT checkpoint: data/<config['dataset']>/meta.pkl (relative to
    the working directory, as nanoGPT's sample.py), or None (then GPT-2 BPE is assumed).
    ckpt['meta_path'] records where it was looked for."""
    cfg = ckpt.get('config') or {}
    if not cfg.get('dataset'):
        return None
    data_dir = os.path.join(cfg.get('data_root', 'data'), cfg['dataset'])
    ckpt['meta_path'] = os.path.join(data_dir, 'meta.pkl')
    meta = load_meta(data_dir, required=False)
    saved = ckpt['model_args'].get('vocab_size')
    if meta is not None and meta['vocab_size'] != saved:
        raise DataError(
            f"{ckpt['flag']}={ckpt['path']} is a nanoGPT checkpoint with vocab_size {saved}, but "
            f"{ckpt['meta_path']} (its config's dataset) has {meta['vocab_size']}: not the "
            f"vocabulary it was trained on; run from the folder it was trained in"
        )
    return meta


def build(ckpt, **overrides):
    """The GPT of a checkpoint with its weights; overrides change training-time fields of its
    config (dropout, causal). Unknown model_args (a newer checkpoint) are an error."""
    args = {**ckpt['model_args'], **overrides}
    unknown = set(args) - set(GPTConfig.__dataclass_fields__)
    if unknown:
        raise DataError(
            f"{ckpt['path']}: unknown model settings {sorted(unknown)}: written by a "
            f"newer nanomask?"
        )
    with torch.device('cpu'):  # on the host, as the weights were loaded; .to(device) moves it
        model = GPT(GPTConfig(**args))
    state = {k.removeprefix('_orig_mod.'): v for k, v in ckpt['model'].items()}
    # nanoGPT without flash attention kept its causal mask as a buffer: not a weight
    state = {
        k: v for k, v in state.items() if not re.fullmatch(r'transformer\.h\.\d+\.attn\.bias', k)
    }
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise DataError(
            f"{ckpt['path']}: weights do not match its model_args ({str(e).splitlines()[0]})"
        ) from None
    return model


def load_model(path, device='cpu', flag='--ckpt'):
    """(model in eval mode on device, checkpoint dict)."""
    ckpt = load(path, flag)
    return build(ckpt).eval().to(device), ckpt


# ------------------------------------------------------------------ what a checkpoint is
KINDS = {  # objective -> what its checkpoint is, for error messages
    'next_token': 'a next-token model',
    'pathstar': 'a path-star model',
    'sft': 'an SFT (chat) model',
    'mlm': 'a masked LM',
    'unmasking': 'a masked-diffusion denoiser',
    'remasking': 'a remasker',
    'hybrid': 'a hybrid denoiser',
}


def objective_of(ckpt):
    """The objective a checkpoint was trained with; a nanoGPT checkpoint is 'next_token'."""
    obj = ckpt.get('objective') or (ckpt.get('config') or {}).get('objective')
    if obj is None and ckpt['model_args'].get('causal', True):
        return 'next_token'
    return obj


def describe(ckpt):
    """E.g. "a remasker (objective 'remasking', bidirectional)"."""
    obj = objective_of(ckpt)
    what = KINDS.get(obj, 'a model')
    how = 'causal' if ckpt['model_args'].get('causal', True) else 'bidirectional'
    return f"{what} (objective {obj!r}, {how}{', nanoGPT' if 'objective' not in ckpt else ''})"


def check_kind(ckpt, flag=None, objectives=None, causal=None, fix=''):
    """ConfigError unless the checkpoint was trained with one of `objectives` (None: any) and is
    causal / bidirectional as `causal` says (None: either). flag: the option that named it
    (default: the one checkpoint.load was given). Returns its objective."""
    flag = flag or ckpt.get('flag', '--ckpt')
    obj, is_causal = objective_of(ckpt), ckpt['model_args'].get('causal', True)
    if (objectives is None or obj in objectives) and (causal is None or is_causal == causal):
        return obj
    if objectives:
        names = ' or '.join(objectives)
        need = f"{'an' if names[0] in 'aeiou' else 'a'} {names} checkpoint"
    else:
        need = 'a causal model' if causal else 'a bidirectional model'
    raise ConfigError(
        f"{flag}={ckpt['path']} is not {need}: it is {describe(ckpt)}" + (f"; {fix}" if fix else '')
    )


def check_vocab(ckpt, meta, against, vocab_size=None, exact=False, fix='', flag=None):
    """DataError unless the checkpoint's vocabulary is `meta`'s (against: what meta belongs to,
    e.g. "dataset 'shakespeare_char'"): the same ids for the same strings and special tokens
    (utils.vocab_mismatch), and not larger (vocab_size: the other side's size, default
    meta['vocab_size']). exact=False lets the other side append tokens (SFT role tags,
    [MASK]); exact=True asks for the same vocabulary (resume; a denoiser and its remasker)."""
    flag, path = flag or ckpt.get('flag', '--ckpt'), ckpt['path']
    tail = f"; {fix}" if fix else ''
    why = vocab_mismatch(ckpt['meta'], meta, exact, sides=('the checkpoint', against))
    if why:
        raise DataError(f"{flag}={path} has a different vocabulary than {against}: {why}{tail}")
    saved = ckpt['model_args'].get('vocab_size')
    n = vocab_size if vocab_size is not None else (meta or {}).get('vocab_size')
    if n is not None and saved is not None and (saved > n or (exact and saved != n)):
        grow = '' if exact else ' (a vocabulary may only grow)'
        raise DataError(f"{flag}={path} has vocab_size {saved} but {against} has {n}{grow}{tail}")


def check_init(ckpt, objective, resume):
    """train.py --init_from: what a run of `objective` may start from. resume continues the
    checkpoint's own objective. A second phase may start from any checkpoint (e.g. a denoiser
    from a next-token model: config/diffusion_char_arinit.py) except a remasker for another
    objective: it never saw [MASK] in its input nor predicted a token at one."""
    obj = objective_of(ckpt)
    if resume and obj != objective:
        raise ConfigError(
            f"--init_from=resume: {ckpt['path']} is {describe(ckpt)}, this run has "
            f"--objective={objective}: resume with --objective={obj}, or start a second phase "
            f"with --init_from={ckpt['path']}"
        )
    if obj == 'remasking' and objective != 'remasking':
        raise ConfigError(
            f"--init_from={ckpt['path']} is {describe(ckpt)}: --objective={objective} cannot "
            f"start from it (a remasker never predicts a token at [MASK]); start from a "
            f"next-token or {objective} checkpoint"
        )


def load_checked(path, flag, objectives, meta, against, device='cpu'):
    """(model in eval mode, checkpoint) of a checkpoint that must be of one of `objectives`
    (bidirectional) with exactly the vocabulary `meta` of `against`: a remasker for a denoiser,
    a frozen denoiser for a batch source. Checked before its weights are built."""
    ckpt = load(path, flag)
    check_kind(
        ckpt, objectives=objectives, causal=False, fix=f"train one with --objective={objectives[0]}"
    )
    check_vocab(ckpt, meta, against, exact=True, fix='train both on the same dataset')
    return build(ckpt).eval().to(device), ckpt
