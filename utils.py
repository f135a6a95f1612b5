"""Small helpers shared by the scripts: atomic writes, dataset metadata, seeds, the GPT-2
tokenizer. Imports nothing from the project (the bottom of the import order)."""

import contextlib
import errno
import hashlib
import io
import os
import pickle
import shlex
import shutil
import tempfile

import numpy as np
import torch


class DataError(ValueError):
    """Bad input on disk; the message names the file and the fix."""


class WriteError(DataError):
    """A file could not be written (full disk, read-only file system, no permission): the
    message names the file and the cause; what was there before is unchanged."""


_WRITE_CAUSES = {  # errno -> what it means for the user, and the fix
    errno.ENOSPC: 'the disk is full: free space there or write elsewhere',
    errno.EDQUOT: 'the disk quota is exceeded: free space there or write elsewhere',
    errno.EROFS: 'a read-only file system: write elsewhere',
    errno.EACCES: 'no permission to write there: fix the permissions or write elsewhere',
    errno.EPERM: 'no permission to write there: fix the permissions or write elsewhere',
    errno.ENOTDIR: 'a part of the path is a file, not a folder',
    errno.EEXIST: 'a file is in the way of its folder',
    errno.ELOOP: 'it is a symbolic link, which is not followed: remove it',
}


def write_error(path, e, kept):
    """The WriteError of OSError `e` while writing `path`; kept: what is left as it was."""
    cause = _WRITE_CAUSES.get(e.errno, 'check the disk and the path')
    return WriteError(f"could not write {path}: {e.strerror or e} ({cause}); {kept}")


def atomic_write(path, write_fn):
    """write_fn(tmp_path) writes the file; it is flushed to disk (a full disk may only show
    there) and replaces `path` in one rename, so a crash mid-write leaves the previous file (or
    nothing) under the final name, and no temp file. A failed write (OSError) is a WriteError
    naming the file and the cause."""
    d = os.path.dirname(os.path.abspath(path))
    kept = f"the previous {os.path.basename(path)} is unchanged"
    if not os.path.exists(path):
        kept = "nothing was written under that name"
    tmp = None
    try:
        os.makedirs(d, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=d, prefix='.' + os.path.basename(path) + '.', suffix='.tmp')
        os.close(fd)
        write_fn(tmp)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as e:
        raise write_error(path, e, kept) from None
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.remove(tmp)


def write_dataset_dir(final_dir, files):
    """Write a dataset's files (name -> ndarray, or plain data to pickle: meta.pkl) into
    final_dir. All are written to a hidden temp folder first and only then renamed into place,
    meta.pkl last: an interrupted or failed run (WriteError: full disk, ...) leaves no partial
    file under a final name and the files already there unchanged. Other files in final_dir
    (e.g. prepare.py) are left alone."""
    tmp, name = None, ''
    try:
        os.makedirs(final_dir, exist_ok=True)
        tmp = tempfile.mkdtemp(dir=final_dir, prefix='.partial.')
        for name, obj in files.items():
            p = os.path.join(tmp, name)
            os.makedirs(os.path.dirname(p), exist_ok=True)
            data = np.ascontiguousarray(obj) if isinstance(obj, np.ndarray) else plain_pickle(obj)
            with open(p, 'wb') as f:  # not ndarray.tofile: its error on a full disk has no errno
                f.write(memoryview(data).cast('B'))
        for name in sorted(files, key=lambda n: n.endswith('meta.pkl')):
            dst = os.path.join(final_dir, name)
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            os.replace(os.path.join(tmp, name), dst)
    except OSError as e:
        where = os.path.join(final_dir, name)
        raise write_error(where, e, f"the files already in {final_dir} are unchanged") from None
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


# --- meta.pkl: plain data only -------------------------------------------------------------------
class UnsafePickle(pickle.UnpicklingError):
    """A pickle names a class or function (`name`): loading it could run code."""

    def __init__(self, name):
        super().__init__(name)
        self.name = name


class PlainUnpickler(pickle.Unpickler):
    """Reads plain data only: dict, list, tuple, set, str, bytes, int, float, bool, None, which
    pickle protocol 4 (Python's default since 3.8; nanoGPT's meta.pkl) writes with opcodes of
    their own. Every other object is rebuilt by
    calling a class or function the pickle names (find_class), which is how a pickle runs code:
    any name is refused, before anything is called."""

    def find_class(self, module, name):
        raise UnsafePickle(f"{module}.{name}")

    def persistent_load(self, pid):
        raise UnsafePickle(f"persistent id {pid!r}")


def write_rows(out_dir, train, val, meta):
    """A row dataset (path-star, checkable tasks): (rows, row_len) arrays flattened as
    train.bin / val.bin in meta['dtype'], with meta.pkl, written as one (write_dataset_dir)."""
    dt = meta['dtype']
    write_dataset_dir(
        out_dir,
        {
            'train.bin': train.astype(dt).ravel(),
            'val.bin': val.astype(dt).ravel(),
            'meta.pkl': meta,
        },
    )


def plain_pickle(obj):
    """The pickle bytes of `obj`, which must be plain data (PlainUnpickler reads it back): a
    writer never writes a meta.pkl that load_meta would refuse."""
    data = pickle.dumps(obj, protocol=4)
    try:
        PlainUnpickler(io.BytesIO(data)).load()
    except UnsafePickle as e:
        raise TypeError(f"meta.pkl must hold plain data only; this one holds {e.name}") from None
    return data


def write_meta(path, meta):
    """A meta.pkl on its own (a dataset whose other files are written as they are made, e.g.
    data/webtext/prepare.py's shards), atomically and of plain data only (plain_pickle)."""
    data = plain_pickle(meta)

    def write(tmp):
        with open(tmp, 'wb') as f:
            f.write(data)

    atomic_write(path, write)


def load_meta(where, required=True, flag=None):
    """A dataset's meta.pkl (normalised: normalise_meta), or None if absent and not required.
    where: the dataset folder, or a .pkl file (flag: the option that named it). Only plain data
    is read (PlainUnpickler): a meta.pkl that names a class or function is refused unloaded."""
    path = (
        where
        if os.path.isfile(where) or where.endswith('.pkl')
        else os.path.join(where, 'meta.pkl')
    )
    shown = f"{flag}={path}" if flag else path
    if not os.path.exists(path):
        if required:
            raise DataError(
                f"{shown} not found: run the dataset's prepare.py (or pathstar.py) first"
            )
        return None
    try:
        with open(path, 'rb') as f:
            meta = PlainUnpickler(f).load()
    except UnsafePickle as e:
        raise DataError(
            f"{shown} was not loaded: it contains {e.name}, not plain data (a pickle that names "
            f"a class or function can run code when loaded); re-make it with the dataset's "
            f"prepare.py, or ask its author for one of plain dicts, lists, strings and numbers"
        ) from None
    except Exception as e:
        raise DataError(
            f"{shown} is corrupt ({type(e).__name__}: {e}); delete it and re-run the "
            f"dataset's prepare.py"
        ) from None
    if not isinstance(meta, dict) or 'vocab_size' not in meta:
        raise DataError(f"{shown} has no 'vocab_size'; re-run the dataset's prepare.py")
    return normalise_meta(meta)


def script_command(script, parser, args, skip=('out_dir',)):
    """`python <script> --flag=value ...` for the parsed `args` that differ from `parser`'s
    defaults, leaving out `skip` (flags that only say where to write): what a prepare script
    records in meta['prepare'], so that an error about its files can name the command."""
    parts = ['python', script]
    for k, v in vars(args).items():
        if k in skip or v == parser.get_default(k):
            continue
        parts.append(f'--{k}' if v is True else f'--{k}={v}')
    return shlex.join(parts)


def mix_seed(*parts):
    """A 63-bit seed from ints and strings, the same in every process (Python's hash() of a
    str is randomised per process, which would break resume after a restart)."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, 'little') >> 1


def seeded(*parts):
    """A torch.Generator seeded by mix_seed(*parts): every fixed-seed draw (evaluation batches,
    decoding, the trainer's micro-batches) comes from one of these."""
    return torch.Generator().manual_seed(mix_seed(*parts))


def device_generator(gen, device):
    """A generator for draws on `device`: gen itself when it lives there (a CPU run keeps its
    exact draws), else a new one on `device` seeded by one draw of gen (so a seeded CPU generator
    still makes the device draws reproducible). Device code never draws on the host and copies:
    a (B, T, V) noise tensor made on the CPU is gigabytes at GPT-2's vocabulary."""
    device = torch.device(device)
    if gen.device.type == device.type and (device.index is None or gen.device == device):
        return gen
    seed = int(torch.randint(2**62, (1,), generator=gen, device=gen.device))
    return torch.Generator(device=device).manual_seed(seed)


def token_dtype(vocab_size):
    return np.uint16 if vocab_size <= 65536 else np.uint32


# --- batches and token files -----------------------------------------------------------------------------
def pin_memory(t):
    """t in page-locked host memory, contiguous: what a non-blocking copy to a GPU needs (a view
    such as rows[:, :-1] would be copied to a staging buffer first, blocking the host)."""
    return t if t.is_pinned() else t.contiguous().pin_memory()


def to_device(batch, device):
    """A batch dict's tensors to device (pinned, non_blocking on CUDA)."""
    if torch.device(device).type == 'cuda':
        return {k: pin_memory(v).to(device, non_blocking=True) for k, v in batch.items()}
    return {k: v.to(device) for k, v in batch.items()}


def resolve_device(device):
    """'auto' -> 'cuda' when a GPU is there, else 'cpu'; anything else as given."""
    if device == 'auto':
        return 'cuda' if torch.cuda.is_available() else 'cpu'
    return device


DTYPES = {'float32': torch.float32, 'bfloat16': torch.bfloat16, 'float16': torch.float16}


def resolve_dtype(dtype, device_type):
    """'auto' -> 'bfloat16' on a CUDA device that supports it, else 'float32'."""
    if dtype != 'auto':
        return dtype
    bf16 = device_type == 'cuda' and torch.cuda.is_bf16_supported()
    return 'bfloat16' if bf16 else 'float32'


def autocast(device_type, dtype):
    """The forward's autocast context (none on the CPU, where float32 is what runs fast); TF32
    matmuls on CUDA."""
    if device_type != 'cuda':
        return contextlib.nullcontext()
    allow_tf32()
    return torch.autocast(device_type, dtype=DTYPES[dtype])


def allow_tf32():
    """TF32 for float32 matmuls and convolutions on CUDA (what nanoGPT sets; the allow_tf32
    flags it used are deprecated in this torch)."""
    torch.backends.cuda.matmul.fp32_precision = 'tf32'
    torch.backends.cudnn.conv.fp32_precision = 'tf32'


def gather_windows(data, starts, length):
    """data (memmap/ndarray), starts (B,) -> int64 tensor (B, length) of data[s:s+length]:
    one fancy-indexed read instead of a Python loop over rows."""
    return torch.from_numpy(data[np.asarray(starts)[:, None] + np.arange(length)].astype(np.int64))


def remake_hint(meta, data_dir):
    """The fix of a broken dataset file: re-run the command recorded in meta['prepare'] (every
    writer records it), or for older metas the dataset's prepare script."""
    cmd = (meta or {}).get('prepare')
    if cmd:  # recorded without where it writes: pathstar.py --data_root/--name, else --out_dir
        d = os.path.normpath(data_dir)
        if shlex.split(cmd)[1:2] == ['pathstar.py']:
            where = [f'--data_root={os.path.dirname(d) or "."}', f'--name={os.path.basename(d)}']
        else:
            where = [f'--out_dir={d}']
        return f"re-make {data_dir} with `{cmd} {shlex.join(where)}`"
    return (
        f"re-make {data_dir} with its prepare script (data/<dataset>/prepare.py, or "
        f"pathstar.py for path-star data)"
    )


_WIDTHS = {1: 'uint8', 2: 'uint16', 4: 'uint32', 8: 'int64'}  # a file of another dtype


def size_problem(nbytes, dtype, expected=None):
    """What is wrong with `nbytes` of `dtype` tokens that should be `expected` tokens
    (meta['split_tokens']; None for older metas: then only what the size alone tells), as the
    end of a sentence about the file, or None: empty, another dtype (size = expected x another
    item size), truncated or longer, not a whole number of tokens."""
    dtype = np.dtype(dtype)
    if nbytes == 0:
        return "is empty"
    if expected is not None and nbytes != expected * dtype.itemsize:
        for size, name in _WIDTHS.items():
            if size != dtype.itemsize and nbytes == expected * size:
                return (
                    f"holds {expected} tokens of {size} bytes ({name}?) but meta.pkl says "
                    f"{dtype.name}: written with another dtype"
                )
        how = 'truncated' if nbytes < expected * dtype.itemsize else 'longer than meta.pkl says'
        return (
            f"is {nbytes} bytes but meta.pkl records {expected} {dtype.name} tokens "
            f"({expected * dtype.itemsize} bytes): {how}"
        )
    if nbytes % dtype.itemsize:
        return (
            f"is {nbytes} bytes, not a whole number of {dtype.name} tokens "
            f"({dtype.itemsize} bytes each): truncated or written with another dtype"
        )
    return None


def token_count(path, dtype, expected=None, fix="re-run the dataset's prepare script"):
    """The number of `dtype` tokens in the file at `path`, from its size; a size that is wrong
    (size_problem) raises DataError naming the file and `fix`."""
    nbytes = os.path.getsize(path)
    problem = size_problem(nbytes, dtype, expected)
    if problem:
        raise DataError(f"{path} {problem}; {fix}")
    return nbytes // np.dtype(dtype).itemsize


# Start-up reads at most this many tokens of a file (~30 ms): every rank opens the data, and a
# web-scale train.bin (10^10 tokens) must not be scanned by each of them. What only a whole scan
# could tell is recorded by the writer in meta.pkl (meta['split_max_token']) or checked per batch
# (check_ids: every window read is checked, for the price of a max over B x T ids).
SCAN_LIMIT = 1 << 24


def head(data):
    """The part of a token array a start-up check reads (SCAN_LIMIT elements at most)."""
    return np.asarray(data[:SCAN_LIMIT])


def check_ids(ids, vocab_size, path, fix):
    """ids (any shape, int) < vocab_size, else DataError naming the file: an id past the
    embedding table would otherwise be a device-side assert on a GPU."""
    top = int(ids.max()) if ids.numel() else -1
    if top >= vocab_size:
        raise DataError(
            f"{path} holds token id {top} >= vocab_size {vocab_size} from meta.pkl: the data "
            f"and meta.pkl disagree; {fix}"
        )


class TokenFile:
    """One split's token file `<data_dir>/<split>.bin`, checked once at load without reading it
    all (SCAN_LIMIT): present, its size agreeing with meta['dtype'] and meta['split_tokens']
    (utils.token_count), ids < vocab_size (meta['split_max_token'] when the writer recorded it,
    else the file's head; every window is checked as it is read), at least `min_tokens` long.
    .data() re-opens the memmap (per batch, as nanoGPT does: a long-lived memmap leaks memory)."""

    def __init__(self, data_dir, split, meta, min_tokens=1, what='tokens'):
        self.path = os.path.join(data_dir, f'{split}.bin')
        self.fix = fix = remake_hint(meta, data_dir)
        if not os.path.exists(self.path):
            raise DataError(f"{self.path} not found: {fix}")
        self.vocab_size = meta['vocab_size']
        self.dtype = np.dtype(meta.get('dtype', token_dtype(self.vocab_size)))
        expected = (meta.get('split_tokens') or {}).get(split)
        self.n = token_count(self.path, self.dtype, expected, fix)
        data = self.data()
        if expected is None and self.dtype == np.uint16 and self.n >= 32:
            first = np.asarray(data[: 1 << 20])  # no count to check against: the wider-file sign
            if not first[1::2].any() and first[::2].any():
                raise DataError(
                    f"{self.path}: every second uint16 is 0, as in a file of wider tokens "
                    f"(uint32/int64) read as uint16 (meta.pkl records no 'split_tokens' to "
                    f"check against): {fix}"
                )
        recorded = (meta.get('split_max_token') or {}).get(split)
        top = recorded if recorded is not None else (int(head(data).max()) if self.n else -1)
        self.check_ids(torch.tensor(top))
        if self.n < min_tokens:
            raise DataError(
                f"{self.path} has {self.n} tokens, too few for {what}: lower "
                f"--block_size below {self.n}"
            )

    def data(self):
        return np.memmap(self.path, dtype=self.dtype, mode='r')

    def check_ids(self, ids):
        check_ids(torch.as_tensor(ids), self.vocab_size, self.path, self.fix)

    def windows(self, batch_size, length, gen):
        """(B, length) int64 windows at uniform random starts."""
        ix = torch.randint(self.n - length + 1, (batch_size,), generator=gen).numpy()
        w = gather_windows(self.data(), ix, length)
        self.check_ids(w)
        return w

    def rows(self, row_len):
        """The whole file as (n, row_len) int64 rows (row datasets are small)."""
        if self.n % row_len:
            raise DataError(
                f"{self.path} holds {self.n} tokens, not a multiple of row_len "
                f"{row_len} from meta.pkl: {self.fix}"
            )
        rows = torch.from_numpy(np.asarray(self.data()).astype(np.int64).reshape(-1, row_len))
        self.check_ids(rows)  # in memory anyway: all of it
        return rows


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
    try:
        import tiktoken

        return tiktoken.get_encoding('gpt2')
    except Exception as e:  # no tiktoken, or offline without its cache: one line, not a traceback
        raise DataError(
            f"GPT-2 BPE is not available here ({type(e).__name__}: tiktoken needs its files, "
            f"downloaded once or cached): pass --bpe_dir=<a folder with GPT-2's vocab.bpe and "
            f"encoder.json>"
        ) from None


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


def vocab_compatible(old_meta, new_meta, exact=False):
    """Can a model trained on old_meta's vocabulary read new_meta's ids? The new vocabulary
    may only append tokens (e.g. SFT role tags) to the old one; exact: it must be the same.
    See vocab_mismatch (which also says how they differ)."""
    return vocab_mismatch(old_meta, new_meta, exact) is None


def vocab_kind(meta):
    """What a meta's ids are: 'path-star <format> (N=..)', 'characters', 'GPT-2 BPE', or None
    when the meta does not say (no meta.pkl, a nanoGPT checkpoint without one)."""
    meta = meta or {}
    if meta.get('format'):
        return f"path-star {meta['format']} (N={meta.get('N')})"
    tok = meta.get('tokenizer') or ('char' if 'itos' in meta else None)
    return {'char': 'characters', 'gpt2': 'GPT-2 BPE', None: None}.get(tok, tok)


_ID_NAMES = {'mask_token_id': '[MASK]', 'sep_token_id': '[SEP]', 'wrong_token_id': 'WRONG'}


def named_ids(meta):
    """id -> name of every special id a meta names: [MASK] / [SEP] / WRONG (MLM, diffusion),
    path-star's special_tokens, the chat template's special tokens."""
    meta = meta or {}
    out = {meta[k]: name for k, name in _ID_NAMES.items() if meta.get(k) is not None}
    for group in ('special_tokens', 'special'):
        out.update({i: name for name, i in (meta.get(group) or {}).items()})
    return out


def vocab_mismatch(old_meta, new_meta, exact=False, sides=('the checkpoint', 'the data')):
    """None if a model trained on old_meta's vocabulary reads new_meta's ids as it learned them
    (new may append tokens; exact: no appending either), else how they differ, for an error
    message naming the two `sides`. Compared: what the ids are (vocab_kind: path-star format
    and N, characters, GPT-2 BPE), the string of each id, and every special id (mask / sep /
    wrong, path-star and chat specials). A meta that does not say what its ids are (no
    meta.pkl; nanoGPT) is not compared here: the caller compares sizes."""
    if not old_meta or not new_meta:
        return None
    old, new = sides
    old_kind, new_kind = vocab_kind(old_meta), vocab_kind(new_meta)
    if old_kind and new_kind and old_kind != new_kind:
        return f"{old_kind} ids in {old}, {new_kind} in {new}"
    old_itos, new_itos = old_meta.get('itos'), new_meta.get('itos')
    if old_itos is not None and new_itos is not None:
        for i in sorted(set(old_itos) | (set(new_itos) if exact else set())):
            if old_itos.get(i) != new_itos.get(i):
                old_s, new_s = (repr(m[i]) if i in m else 'absent' for m in (old_itos, new_itos))
                return f"id {i} is {old_s} in {old} but {new_s} in {new}"
    old_base, new_base = old_meta.get('base_vocab_size'), new_meta.get('base_vocab_size')
    if old_base is not None and new_base is not None and old_base != new_base:
        return f"a base vocabulary of {old_base} ids in {old}, {new_base} in {new}"
    old_names, new_names = named_ids(old_meta), named_ids(new_meta)
    inf = float('inf')

    def what(names, meta, i):
        if i in names:
            return names[i]
        return 'absent' if i >= meta.get('vocab_size', inf) else 'an ordinary token'

    old_size = old_meta.get('vocab_size', inf)
    for i in sorted(set(old_names) | {i for i in new_names if i < old_size or exact}):
        if old_names.get(i) != new_names.get(i):
            return (
                f"id {i} is {what(old_names, old_meta, i)} in {old} but "
                f"{what(new_names, new_meta, i)} in {new}"
            )
    old_n, new_n = old_meta.get('vocab_size'), new_meta.get('vocab_size')
    if exact and old_n != new_n:
        return f"{old_n} ids in {old}, {new_n} in {new}"
    return None
