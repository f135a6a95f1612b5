"""
Token shards on disk: llm.c / modded-nanogpt shards and nanoGPT's headerless .bin.

llm.c shard (what data/webtext/prepare.py writes; modded-nanogpt's fineweb_train_000001.bin):
    header   256 int32 (1024 bytes): [0] magic 20240520, [1] version 1, [2] token count n
    tokens   n uint16 (n < 2**31: the count is an int32, so a shard holds at most 4 GB)
nanoGPT: <split>.bin, the tokens alone (meta['dtype'], uint16 for GPT-2 BPE).

A split is a list of shards (Shards): a window is drawn uniformly over every start that fits
in one shard (a shard is picked with weight n_i - length + 1), read from a memmap that starts
after the header, so start-up reads 1024 bytes per shard and never a whole file. Statistics
(max token id, counts) come from meta.pkl, written by the prepare step.
"""

import glob
import os

import numpy as np
import torch

from utils import DataError, TokenFile, atomic_write, check_ids, gather_windows, remake_hint

MAGIC, VERSION = 20240520, 1
HEADER_INTS = 256
HEADER_BYTES = HEADER_INTS * 4
SHARD_DTYPE = np.dtype(np.uint16)


def write_shard(path, tokens):
    """tokens (1-D, ids < 65536) -> an llm.c shard at path, atomically (utils.atomic_write)."""
    tokens = np.asarray(tokens)
    if len(tokens) > np.iinfo(np.int32).max:
        raise DataError(f"{path}: {len(tokens)} tokens do not fit one llm.c shard (< 2**31)")
    if tokens.size and int(tokens.max()) > np.iinfo(SHARD_DTYPE).max:
        raise DataError(f"{path}: token id {int(tokens.max())} does not fit llm.c's uint16 shards")
    header = np.zeros(HEADER_INTS, dtype=np.int32)
    header[:3] = MAGIC, VERSION, len(tokens)

    def write(tmp):
        with open(tmp, 'wb') as f:
            f.write(header.tobytes())
            f.write(tokens.astype(SHARD_DTYPE, copy=False).tobytes())

    atomic_write(path, write)


def read_header(path, fix="re-make the dataset"):
    """The token count of the llm.c shard at path, from its header; a file that is not one
    (wrong magic / version) or whose size disagrees with the count is a DataError naming it."""
    size = os.path.getsize(path)
    if size < HEADER_BYTES:
        raise DataError(
            f"{path} is {size} bytes, shorter than the 1024-byte llm.c shard header: "
            f"truncated; {fix}"
        )
    header = np.fromfile(path, dtype=np.int32, count=HEADER_INTS)
    magic, version, n = (int(v) for v in header[:3])
    if magic != MAGIC:
        raise DataError(
            f"{path}: magic number {magic}, not llm.c's {MAGIC}: not an llm.c shard (a "
            f"headerless nanoGPT .bin is read as <split>.bin); {fix}"
        )
    if version != VERSION:
        raise DataError(
            f"{path}: llm.c shard version {version}, only version {VERSION} (uint16 tokens) "
            f"is read here; {fix}"
        )
    expected = HEADER_BYTES + n * SHARD_DTYPE.itemsize
    if n < 0 or size != expected:
        how = 'truncated' if size < expected else 'longer than its header says'
        raise DataError(
            f"{path} is {size} bytes but its header says {n} tokens ({expected} bytes): "
            f"{how}; {fix}"
        )
    return n


def read_shard(path):
    """All tokens of an llm.c shard as an ndarray (for tests and small shards)."""
    n = read_header(path)
    return np.fromfile(path, dtype=SHARD_DTYPE, count=n, offset=HEADER_BYTES)


def find_shards(data_dir, split, meta):
    """The shard paths of a split: meta['shards'][split] (names relative to data_dir), else
    the files *<split>_*.bin in sorted order (llm.c / modded-nanogpt folders without a
    meta.pkl: fineweb_train_000001.bin ...); [] if there are none."""
    names = ((meta or {}).get('shards') or {}).get(split)
    if names is not None:
        return [os.path.join(data_dir, n) for n in names]
    return sorted(glob.glob(os.path.join(data_dir, f'*{split}_*.bin')))


class Shards:
    """One split as a list of token files, with utils.TokenFile's interface (.n, .windows,
    .data) so a batch source reads either. files: [(path, offset, n)]: offset 1024 for llm.c
    shards, 0 for a headerless file. vocab_size: ids at or above it are a DataError (checked
    from meta['split_max_token'] at start-up when the meta records it, and on every window)."""

    def __init__(self, files, dtype, vocab_size, min_tokens=1, what='tokens', fix=''):
        self.files, self.dtype, self.vocab_size = files, np.dtype(dtype), vocab_size
        self.fix = fix
        self.lengths = np.array([n for _, _, n in files], dtype=np.int64)
        self.n = int(self.lengths.sum())
        self.path = files[0][0] if len(files) == 1 else os.path.dirname(files[0][0])
        longest = int(self.lengths.max())
        if longest < min_tokens:
            raise DataError(
                f"{self.path}: the longest shard has {longest} tokens, too few for {what}: "
                f"lower --block_size below {longest}"
            )

    @classmethod
    def open(cls, data_dir, split, meta, min_tokens=1, what='tokens', fix='re-make the dataset'):
        """The llm.c shards of a split (find_shards); headers checked, counts checked against
        meta['shard_tokens'] when it records them, ids against meta['split_max_token']."""
        paths = find_shards(data_dir, split, meta)
        if not paths:
            raise DataError(f"{data_dir}: no {split}_*.bin shards and no {split}.bin: {fix}")
        vocab_size = meta['vocab_size']
        top = (meta.get('split_max_token') or {}).get(split)
        if top is not None and top >= vocab_size:
            raise DataError(
                f"{data_dir}/meta.pkl records token id {top} >= its vocab_size {vocab_size}: {fix}"
            )
        counts = (meta.get('shard_tokens') or {}).get(split)
        files = []
        for i, path in enumerate(paths):
            if not os.path.exists(path):
                raise DataError(f"{path} not found (listed in {data_dir}/meta.pkl): {fix}")
            n = read_header(path, fix)
            if counts is not None and (len(counts) != len(paths) or counts[i] != n):
                raise DataError(
                    f"{path} holds {n} tokens but meta.pkl records "
                    f"{counts[i] if len(counts) == len(paths) else 'another shard list'}: {fix}"
                )
            files.append((path, HEADER_BYTES, n))
        return cls(files, SHARD_DTYPE, vocab_size, min_tokens, what, fix)

    def memmap(self, i):
        """Shard i's tokens as a memmap (opened per batch, as nanoGPT does: a long-lived
        memmap keeps every page it touched)."""
        path, offset, n = self.files[i]
        return np.memmap(path, dtype=self.dtype, mode='r', offset=offset, shape=(n,))

    def data(self):
        """The tokens of a one-shard split as one memmap (what whole-stream readers such as
        SEP-varlen MLM packing need); a split of several shards has no single array."""
        if len(self.files) != 1:
            raise DataError(
                f"{self.path}: this split is {len(self.files)} shards, and this objective "
                f"reads one token stream (e.g. --mlm_packing=sep): use --mlm_packing=window"
            )
        return self.memmap(0)

    def draw(self, batch_size, length, gen):
        """Uniform random starts of `length`-token windows over all shards, grouped by shard:
        (groups [(shard memmap, rows (k,) of the batch, starts (k,) int64 ndarray)], which (B,)
        the shard of each row). A window never crosses a shard boundary (shard i is drawn with
        weight n_i - length + 1); each drawn shard is opened once. What windows() reads, and
        what a reader of its own (e.g. line packing at the starts) can read instead."""
        room = torch.from_numpy(np.maximum(self.lengths - length + 1, 0)).double()
        which = torch.multinomial(room, batch_size, replacement=True, generator=gen)
        ix = (torch.rand(batch_size, generator=gen, dtype=torch.float64) * room[which]).long()
        groups = []
        for s in which.unique().tolist():
            rows = (which == s).nonzero().squeeze(1)
            groups.append((s, rows, ix[rows].numpy()))
        return [(self.memmap(s), rows, starts) for s, rows, starts in groups], which

    def windows(self, batch_size, length, gen):
        """(B, length) int64 windows at uniform random starts over all shards (draw)."""
        groups, which = self.draw(batch_size, length, gen)
        out = torch.empty(batch_size, length, dtype=torch.long)
        for data, rows, starts in groups:
            out[rows] = gather_windows(data, starts, length)
        self.check_ids(out, which)
        return out

    def check_ids(self, ids, which=None):
        """ids (B, ...) < vocab_size (utils.check_ids), naming the shard of a bad row (which: the
        shard of each row; None: a one-shard split)."""
        bad = (ids >= self.vocab_size).flatten(1).any(1)
        if bad.any():
            i = 0 if which is None else int(which[bad][0])
            check_ids(ids[bad], self.vocab_size, self.files[i][0], self.fix)


def token_file(data_dir, split, meta, min_tokens=1, what='tokens'):
    """A split's tokens for a batch source: nanoGPT's <split>.bin (utils.TokenFile) when it
    exists, else its llm.c shards (Shards.open). Both have .n, .windows(B, length, gen), .data()."""
    if os.path.exists(os.path.join(data_dir, f'{split}.bin')):
        return TokenFile(data_dir, split, meta, min_tokens, what)
    return Shards.open(data_dir, split, meta, min_tokens, what, remake_hint(meta, data_dir))


def many_shards(split):
    """Is this split (token_file's result) more than one file? Then it has no single .data()."""
    return isinstance(split, Shards) and len(split.files) > 1
