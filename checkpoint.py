"""
The one place checkpoints are written and read (train.py, sample.py, pathstar.py, batches.py's
frozen denoisers, bench/). A checkpoint is a dict:
    model (state dict), model_args (GPTConfig fields), config (the run's train.py keys),
    meta (the dataset's vocabulary and special ids), objective, iter_num, best_val_loss,
    optimizer and torch_rng (to resume).
nanoGPT's own checkpoints (no meta, no objective) load too.
"""

import os
import pickle
import zipfile

import torch

from model import GPT, GPTConfig
from utils import DataError, atomic_write, normalise_meta


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
    ckpt['path'] = path
    ckpt['meta'] = normalise_meta(ckpt.get('meta'))
    return ckpt


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
    model = GPT(GPTConfig(**args))
    state = {k.removeprefix('_orig_mod.'): v for k, v in ckpt['model'].items()}
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
