"""Small helpers shared by the scripts: atomic writes, dataset metadata, seeds, the GPT-2
tokenizer. Imports nothing from the project (the bottom of the import order)."""

import hashlib
import os
import pickle
import shutil
import tempfile

import numpy as np
import torch


class DataError(ValueError):
    """Bad input on disk; the message names the file and the fix."""


def atomic_write(path, write_fn):
    """write_fn(tmp_path) writes the file; it then replaces `path` in one rename, so a crash
    mid-write leaves the previous file (or nothing) under the final name."""
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=d, prefix='.' + os.path.basename(path) + '.', suffix='.tmp')
    os.close(fd)
    try:
        write_fn(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_array(path, arr):
    atomic_write(path, lambda tmp: arr.tofile(tmp))


def write_pickle(path, obj):
    def write(tmp):
        with open(tmp, 'wb') as f:
            pickle.dump(obj, f)

    atomic_write(path, write)


def write_dataset_dir(final_dir, files):
    """Write a dataset's files (name -> ndarray, or any object to pickle) into final_dir.
    All are written to a hidden temp folder first and only then renamed into place, meta.pkl
    last: an interrupted run leaves no partial file under a final name. Other files in
    final_dir (e.g. prepare.py) are left alone."""
    os.makedirs(final_dir, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=final_dir, prefix='.partial.')
    try:
        for name, obj in files.items():
            p = os.path.join(tmp, name)
            os.makedirs(os.path.dirname(p), exist_ok=True)
            if isinstance(obj, np.ndarray):
                obj.tofile(p)
            else:
                with open(p, 'wb') as f:
                    pickle.dump(obj, f)
        for name in sorted(files, key=lambda n: n.endswith('meta.pkl')):
            dst = os.path.join(final_dir, name)
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            os.replace(os.path.join(tmp, name), dst)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def mix_seed(*parts):
    """A 63-bit seed from ints and strings, the same in every process (Python's hash() of a
    str is randomised per process, which would break resume after a restart)."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, 'little') >> 1


def seeded(*parts):
    """A torch.Generator seeded by mix_seed(*parts): every fixed-seed draw (evaluation batches,
    decoding, the trainer's micro-batches) comes from one of these."""
    return torch.Generator().manual_seed(mix_seed(*parts))


def token_dtype(vocab_size):
    return np.uint16 if vocab_size <= 65536 else np.uint32


def load_meta(data_dir, required=True):
    path = os.path.join(data_dir, 'meta.pkl')
    if not os.path.exists(path):
        if required:
            raise DataError(
                f"{path} not found: run the dataset's prepare.py (or pathstar.py) first"
            )
        return None
    try:
        with open(path, 'rb') as f:
            meta = pickle.load(f)
    except Exception as e:
        raise DataError(
            f"{path} is corrupt ({type(e).__name__}: {e}); delete it and re-run the "
            f"dataset's prepare.py"
        ) from None
    if not isinstance(meta, dict) or 'vocab_size' not in meta:
        raise DataError(f"{path} has no 'vocab_size'; re-run the dataset's prepare.py")
    return normalise_meta(meta)


# --- batches and token files -----------------------------------------------------------------------------
def to_device(batch, device):
    """A batch dict's tensors to device (pinned, non_blocking on CUDA)."""
    if torch.device(device).type == 'cuda':
        return {k: v.pin_memory().to(device, non_blocking=True) for k, v in batch.items()}
    return {k: v.to(device) for k, v in batch.items()}


def gather_windows(data, starts, length):
    """data (memmap/ndarray), starts (B,) -> int64 tensor (B, length) of data[s:s+length]:
    one fancy-indexed read instead of a Python loop over rows."""
    return torch.from_numpy(data[np.asarray(starts)[:, None] + np.arange(length)].astype(np.int64))


class TokenFile:
    """One split's token file `<data_dir>/<split>.bin`, checked once at load: present,
    non-empty, ids < vocab_size, at least `min_tokens` long. .data() re-opens the memmap (per
    batch, as nanoGPT does: a long-lived memmap leaks memory)."""

    def __init__(self, data_dir, split, meta, min_tokens=1, what='tokens'):
        self.path = os.path.join(data_dir, f'{split}.bin')
        if not os.path.exists(self.path):
            raise DataError(f"{self.path} not found: re-run the dataset's prepare script")
        self.vocab_size = meta['vocab_size']
        self.dtype = np.dtype(meta.get('dtype', token_dtype(self.vocab_size)))
        size = os.path.getsize(self.path)  # np.memmap raises a bare ValueError on these two
        if size == 0:
            raise DataError(f"{self.path} is empty: re-run the dataset's prepare script")
        if size % self.dtype.itemsize:
            raise DataError(
                f"{self.path} is {size} bytes, not a whole number of {self.dtype} tokens "
                f"(meta.pkl's dtype): the file is truncated; re-run the dataset's prepare script"
            )
        data = self.data()
        self.n = len(data)
        if self.n == 0:
            raise DataError(f"{self.path} is empty: re-run the dataset's prepare script")
        top = int(data.max())
        if top >= self.vocab_size:
            raise DataError(
                f"{self.path} holds token id {top} >= vocab_size {self.vocab_size} "
                f"from meta.pkl: the data and meta.pkl disagree; re-run the "
                f"dataset's prepare script"
            )
        if self.n < min_tokens:
            raise DataError(
                f"{self.path} has {self.n} tokens, too few for {what}: lower "
                f"--block_size below {self.n}"
            )

    def data(self):
        return np.memmap(self.path, dtype=self.dtype, mode='r')

    def windows(self, batch_size, length, gen):
        """(B, length) int64 windows at uniform random starts."""
        ix = torch.randint(self.n - length + 1, (batch_size,), generator=gen).numpy()
        return gather_windows(self.data(), ix, length)

    def rows(self, row_len):
        """The whole file as (n, row_len) int64 rows (row datasets are small)."""
        if self.n % row_len:
            raise DataError(
                f"{self.path} holds {self.n} tokens, not a multiple of row_len "
                f"{row_len} from meta.pkl: re-generate the dataset"
            )
        return torch.from_numpy(np.asarray(self.data()).astype(np.int64).reshape(-1, row_len))


# Older names of meta keys -> the one name each idea has now (datasets and checkpoints written
# before the rename stay readable). Special tokens live in meta['special_tokens'].
_OLD_META_KEYS = {'mask_id': 'mask_token_id', 'sep_id': 'sep_token_id'}
_OLD_SPECIAL_KEYS = {
    'pause_token': 'PAUSE',
    'pad_token': 'PAD',
    'edge_token': 'EDGE',
    'path_token': 'PATH',
    'fwd_token': '>',
    'bwd_token': '<',
}


def normalise_meta(meta):
    """A copy of meta with old key names mapped to today's (see _OLD_META_KEYS)."""
    if meta is None:
        return None
    meta = dict(meta)
    for old, new in _OLD_META_KEYS.items():
        if old in meta:
            meta.setdefault(new, meta.pop(old))
    special = dict(meta.get('special_tokens') or {})
    for old, name in _OLD_SPECIAL_KEYS.items():
        if old in meta:
            special.setdefault(name, meta.pop(old))
    if special:
        meta['special_tokens'] = special
    return meta


# --- GPT-2 BPE through tiktoken, offline when the two GPT-2 files are on disk -------------
# tiktoken caches downloads under sha1(url); putting the files there makes it work offline.
_GPT2_CACHE_NAMES = {
    'vocab.bpe': '6d1cbeee0f20b3d9449abfede4726ed8212e3aee',
    'encoder.json': '6c7ea1a7e38e3a7f062df639a5b80947f075ffe6',
}


def gpt2_encoding(bpe_dir=None):
    """tiktoken's GPT-2 encoding. bpe_dir: a folder with vocab.bpe + encoder.json to load
    offline; otherwise tiktoken downloads them (or uses its cache)."""
    if bpe_dir:
        for name in _GPT2_CACHE_NAMES:
            if not os.path.exists(os.path.join(bpe_dir, name)):
                raise DataError(
                    f"--bpe_dir={bpe_dir}: {name} not found there (need vocab.bpe "
                    f"and encoder.json from GPT-2)"
                )
        cache = os.environ.setdefault(
            'TIKTOKEN_CACHE_DIR', os.path.join(tempfile.gettempdir(), 'nanomask_tiktoken')
        )
        os.makedirs(cache, exist_ok=True)
        for name, sha in _GPT2_CACHE_NAMES.items():
            dst = os.path.join(cache, sha)
            if not os.path.exists(dst):
                shutil.copyfile(os.path.join(bpe_dir, name), dst)
    import tiktoken

    return tiktoken.get_encoding('gpt2')


def text_codec(meta, bpe_dir=''):
    """(encode text -> ids, decode ids -> text) for a dataset's vocabulary: characters
    (meta['stoi'] / ['itos']) or GPT-2 BPE. Special tokens (meta['special'], chat data) decode
    to their names and are never produced by encode (a user typing '<|end|>' stays text).
    encode raises DataError for characters outside a character vocabulary."""
    meta = meta or {}
    names = {v: k for k, v in (meta.get('special') or {}).items()}
    if 'stoi' in meta:
        stoi, itos = meta['stoi'], meta['itos']

        def encode(s):
            missing = sorted({c for c in s if c not in stoi})
            if missing:
                raise DataError(f"characters {''.join(missing)!r} are not in the vocabulary")
            return [stoi[c] for c in s]

        return encode, lambda ids: ''.join(itos.get(int(i), '?') for i in ids)
    enc = gpt2_encoding(bpe_dir or meta.get('bpe_dir') or None)

    def decode(ids):
        out, run = [], []
        for i in map(int, ids):
            if i in names or i >= enc.n_vocab:  # a special (or [MASK]-like) id ends a BPE run
                out.append(enc.decode(run) + names.get(i, ''))
                run = []
            else:
                run.append(i)
        return ''.join(out) + enc.decode(run)

    if names:
        return enc.encode_ordinary, decode
    return (lambda s: enc.encode(s, allowed_special={'<|endoftext|>'})), decode


def vocab_compatible(old_meta, new_meta):
    """Can a model trained on old_meta's vocabulary read new_meta's ids? The new vocabulary
    may only append tokens (e.g. SFT role tags) to the old one."""
    if not old_meta or not new_meta:
        return True
    if (
        old_meta.get('tokenizer')
        and new_meta.get('tokenizer')
        and old_meta['tokenizer'] != new_meta['tokenizer']
    ):
        return False
    old_itos, new_itos = old_meta.get('itos'), new_meta.get('itos')
    if old_itos is not None and new_itos is not None:
        return all(new_itos.get(i) == s for i, s in old_itos.items())
    return True
