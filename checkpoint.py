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

Loading never runs code: torch.load(weights_only=True) rebuilds tensors and plain containers
only, which is all that this project's and nanoGPT's checkpoints hold (no extra safe globals);
a file that names any other class or function is refused before anything is called.
A run's out_dir has one writer at a time (lock_out_dir).
"""

import fcntl
import os
import pickle
import re
import socket
import time
import warnings
import zipfile

import torch

from configurator import ConfigError
from model import GPT, GPTConfig
from utils import (
    DataError,
    atomic_write,
    load_meta,
    normalise_meta,
    vocab_mismatch,
    write_error,
)


def resolve(path):
    """A checkpoint file, or an out_dir holding ckpt.pt."""
    return os.path.join(path, 'ckpt.pt') if os.path.isdir(path) else path


def save(path, model, optimizer, cfg, meta, iter_num, best_val_loss, scaler=None):
    """Atomically (temp file + rename), readable by collaborators (mode 0644). scaler: the
    float16 GradScaler, whose loss scale a resumed run continues from. A failed write (full
    disk, ...) is a utils.WriteError naming the file; the previous checkpoint stays."""
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
        'scaler': scaler.state_dict() if scaler is not None else {},  # {}: disabled
    }

    def write(tmp):
        with open(tmp, 'wb') as f:
            out = KeepWriteError(f)
            try:
                torch.save(ckpt, out)
            except RuntimeError:
                if out.error is not None:
                    raise out.error from None
                raise
        os.chmod(tmp, 0o644)  # mkstemp makes 0600 files

    atomic_write(path, write)


class KeepWriteError:
    """The file torch.save writes through. torch swallows the OSError of a failed write (a full
    disk) and raises an opaque RuntimeError ('enforce fail at inline_container.cc') instead;
    this keeps the OSError, whose errno says what happened."""

    def __init__(self, f):
        self.f, self.error = f, None

    def write(self, data):
        try:
            return self.f.write(data)
        except OSError as e:
            self.error = self.error or e
            raise

    def flush(self):
        self.f.flush()


def load(path, flag='--ckpt'):
    """The checkpoint dict (on CPU) with ckpt['path'] and a normalised meta. `flag` names the
    option that pointed here, for the error message."""
    path = resolve(path)
    if not os.path.isfile(path):
        raise DataError(f"{flag}={path}: checkpoint not found")
    try:
        with warnings.catch_warnings():  # a plain pickle given as checkpoint: the error says it
            warnings.filterwarnings('ignore', 'Detected pickle protocol', UserWarning)
            ckpt = torch.load(path, map_location='cpu', weights_only=True)
    except (RuntimeError, EOFError, OSError, pickle.UnpicklingError, zipfile.BadZipFile) as e:
        unsafe = refused_global(e)
        if unsafe:
            raise DataError(
                f"{flag}={path} was not loaded: it contains {unsafe}, which nanomask and "
                f"nanoGPT checkpoints never hold (a pickle that names a class or function can "
                f"run code when loaded; checkpoints are read as tensors and plain data only: "
                f"torch.load(weights_only=True)); ask its author for a plain one"
            ) from None
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


def refused_global(e):
    """The class or function a weights_only torch.load refused (torch's message names it), or
    None when the file is unreadable for another reason."""
    m = re.search(r"GLOBAL (\S+) (?:was not an allowed global|whose module)", str(e))
    return m.group(1) if m else None


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


# ------------------------------------------------------------------ one writer per out_dir
LOCK_NAME = 'train.lock'


def lock_out_dir(out_dir):
    """Create the folder out_dir and lock it for this run: an exclusive flock on
    out_dir/train.lock, held until the returned file is closed or the process ends. The kernel
    releases a flock however its process ends (SIGKILL, a crash), so a killed run never blocks
    the next one. The holder writes its pid, host and start time into the file; a second run
    fails at once naming them (ConfigError)."""
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise ConfigError(
            f"--out_dir={out_dir} is a file, not a folder: pass a folder (it is created if missing)"
        )
    path = os.path.join(out_dir, LOCK_NAME)
    try:
        os.makedirs(out_dir, exist_ok=True)
        # not truncated (a failed attempt must not erase the holder), never through a symlink
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        f = os.fdopen(fd, 'r+', encoding='utf-8')
    except OSError as e:
        raise write_error(path, e, 'no run was started') from None
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        holder = ' '.join(f.read().split()) or 'its pid not written yet'
        f.close()
        raise ConfigError(
            f"--out_dir={out_dir} is in use by another run ({holder}; it holds {path}): wait "
            f"for it to end or stop it, or pass another --out_dir"
        ) from None
    except OSError as e:  # a file system without locks (some network mounts): run unguarded
        warnings.warn(
            f"{path}: cannot be locked ({e.strerror}): nothing stops a second run from "
            f"writing to {out_dir} at the same time"
        )
    try:
        f.seek(0)
        f.truncate()
        host, started = socket.gethostname(), time.strftime('%Y-%m-%d %H:%M:%S')
        f.write(f"pid {os.getpid()} on host {host}, started {started}\n")
        f.flush()
    except OSError as e:
        f.close()
        raise write_error(path, e, 'no run was started') from None
    return f
