"""llm.c / modded-nanogpt token shards (shards.py): header round trip, bad headers, windows across
shards, the batch sources reading them, and start-up on a 10 GB (sparse) shard."""

import os
import pickle
import time

import numpy as np
import pytest
import torch

import mlm
import shards
import train
from conftest import source_of
from utils import DataError


def make_dataset(d, split_shards, meta=None):
    """d/<split>_<i>.bin llm.c shards from {split: [token arrays]}, and meta.pkl (unless None)."""
    d.mkdir(parents=True, exist_ok=True)
    names = {}
    for split, arrays in split_shards.items():
        names[split] = [f'{split}_{i:06d}.bin' for i in range(len(arrays))]
        for name, a in zip(names[split], arrays):
            shards.write_shard(str(d / name), a)
    if meta is not None:
        meta = {
            'vocab_size': 50304,
            'tokenizer': 'gpt2',
            'dtype': 'uint16',
            'objective': 'next_token',
            'shards': names,
            'shard_tokens': {s: [len(a) for a in arrays] for s, arrays in split_shards.items()},
            **meta,
        }
        (d / 'meta.pkl').write_bytes(pickle.dumps(meta))
    return names


def test_shard_round_trip_and_header(tmp_path):
    tokens = np.array([50256, 0, 1, 65535, 42], dtype=np.uint16)
    path = str(tmp_path / 'train_000000.bin')
    shards.write_shard(path, tokens)
    header = np.fromfile(path, dtype=np.int32, count=256)
    assert header[:3].tolist() == [20240520, 1, 5] and not header[3:].any()
    assert os.path.getsize(path) == 1024 + 2 * 5
    assert shards.read_header(path) == 5
    np.testing.assert_array_equal(shards.read_shard(path), tokens)
    with pytest.raises(DataError, match="65536 does not fit"):
        shards.write_shard(path, np.array([65536]))
    np.testing.assert_array_equal(shards.read_shard(path), tokens)  # the failed write left it


@pytest.mark.parametrize(
    'damage, pattern',
    [
        (lambda b: b[:1000], r"is 1000 bytes, shorter than the 1024-byte llm.c shard header"),
        (lambda b: b[:-2], r"is 1032 bytes but its header says 5 tokens \(1034 bytes\): truncated"),
        (lambda b: b + b'\0\0', r"header says 5 tokens \(1034 bytes\): longer than its header"),
        (lambda b: (7).to_bytes(4, 'little') + b[4:], r"magic number 7, not llm.c's 20240520"),
        (lambda b: b[:4] + (2).to_bytes(4, 'little') + b[8:], r"llm.c shard version 2, only"),
    ],
    ids=['short-header', 'truncated', 'longer', 'magic', 'version'],
)
def test_bad_shards_are_one_line_naming_the_file(tmp_path, damage, pattern):
    path = tmp_path / 'train_000000.bin'
    shards.write_shard(str(path), np.arange(5, dtype=np.uint16))
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(DataError, match=pattern) as e:
        shards.read_header(str(path))
    assert str(path) in str(e.value) and '\n' not in str(e.value)


def test_windows_are_uniform_over_starts_and_never_cross_shards(tmp_path):
    # shard i holds 1000*i + 0, 1, ...: a window is consecutive ids iff it stays in one shard
    lengths = [20, 50, 130]
    arrays = [1000 * i + np.arange(n) for i, n in enumerate(lengths)]
    make_dataset(tmp_path / 'd', {'train': arrays, 'val': arrays[:1]}, meta={})
    meta = pickle.loads((tmp_path / 'd' / 'meta.pkl').read_bytes())
    split = shards.Shards.open(str(tmp_path / 'd'), 'train', meta, min_tokens=11)
    assert split.n == 200
    w = split.windows(4000, 11, torch.Generator().manual_seed(0))
    assert w.shape == (4000, 11) and w.dtype == torch.long
    assert (w[:, 1:] - w[:, :-1] == 1).all()  # one shard each
    shard, start = w[:, 0] // 1000, w[:, 0] % 1000
    for i, n in enumerate(lengths):  # every start that fits, none that does not
        starts = start[shard == i]
        assert starts.max() == n - 11 and starts.min() == 0
    share = torch.bincount(shard, minlength=3).double() / len(w)
    expected = torch.tensor([n - 10 for n in lengths], dtype=torch.double) / sum(
        n - 10 for n in lengths
    )
    assert (share - expected).abs().max() < 0.03, (share, expected)
    with pytest.raises(DataError, match="the longest shard has 130 tokens, too few for"):
        shards.Shards.open(str(tmp_path / 'd'), 'train', meta, min_tokens=131)


def test_meta_is_checked_without_reading_the_tokens(tmp_path):
    d = tmp_path / 'd'
    make_dataset(d, {'train': [np.arange(100)], 'val': [np.arange(50)]}, meta={})
    meta = pickle.loads((d / 'meta.pkl').read_bytes())
    bad = {**meta, 'shard_tokens': {'train': [99], 'val': [50]}}
    with pytest.raises(
        DataError, match=r"train_000000.bin holds 100 tokens but meta.pkl records 99"
    ):
        shards.Shards.open(str(d), 'train', bad)
    with pytest.raises(DataError, match=r"records token id 50304 >= its vocab_size 50304"):
        shards.Shards.open(str(d), 'train', {**meta, 'split_max_token': {'train': 50304}})
    small = shards.Shards.open(str(d), 'train', {**meta, 'vocab_size': 60})
    with pytest.raises(DataError, match=r"train_000000.bin holds token id \d+ >= vocab_size 60"):
        small.windows(8, 50, torch.Generator().manual_seed(0))
    (d / 'val_000000.bin').unlink()
    with pytest.raises(DataError, match=r"val_000000.bin not found \(listed in"):
        shards.Shards.open(str(d), 'val', meta)


def test_next_token_and_masked_sources_read_shards(tmp_path):
    rng = np.random.default_rng(0)
    arrays = [rng.integers(0, 50257, n) for n in (300, 500)]
    make_dataset(tmp_path / 'web', {'train': arrays, 'val': [arrays[0][:100]]}, meta={})
    src = source_of(str(tmp_path), 'next_token', dataset='web')
    b = src.get_batch('train', 16, torch.Generator().manual_seed(0))
    assert b['x'].shape == b['y'].shape == (16, 32)
    assert (b['x'][:, 1:] == b['y'][:, :-1]).all()
    stream = np.concatenate(arrays)
    for row in b['x'].numpy():  # every window is a slice of one shard
        assert any(
            (np.lib.stride_tricks.sliding_window_view(a, 32) == row).all(1).any() for a in arrays
        ), row
    assert set(b['x'].flatten().tolist()) <= set(stream.tolist())
    for objective, extra in (('unmasking', {}), ('mlm', {'mlm_packing': 'window'})):
        b = source_of(str(tmp_path), objective, dataset='web', **extra).get_batch('train', 4)
        assert b['x'].shape == (4, 32)
    with pytest.raises(DataError, match=r"this split is 2 shards.*use --mlm_packing=window"):
        src.files['train'].data()


def test_sep_packing_over_many_shards_starts_at_line_starts(tmp_path):
    """SEP-varlen MLM on a split of several shards: no line index (pack_window_lines); the same
    samples as pack_lines would make from the line start each window finds."""
    rng = np.random.default_rng(0)
    arrays = []
    for n in (400, 600):
        a = rng.integers(0, 198, n)  # no newline id (198, 628) but the ones set below
        a[rng.random(n) < 0.12] = 198  # GPT-2's '\n': lines of ~8 tokens
        arrays.append(a)
    make_dataset(tmp_path / 'web', {'train': arrays, 'val': [arrays[0]]}, meta={})
    src = source_of(str(tmp_path), 'mlm', dataset='web', mlm_probability=1e-9)
    assert 'train' not in src.bounds and 'val' in src.bounds  # val is one shard: indexed
    b = src.get_batch('train', 64, torch.Generator().manual_seed(0))
    n_text = src.last_stats['n_text']
    assert (n_text > 0).all() and (n_text < 32).any()
    for x, n in zip(b['x'], n_text.tolist()):
        text = x[:n].numpy()
        assert (x[n:] == src.sep_id).all()
        if text[-1] != 198:  # an overlong line cut to T-1 (it may start mid-line)
            assert n == 31
            continue
        found = [
            a
            for a in arrays
            for i in np.flatnonzero(a == 198)
            if i + 1 + n <= len(a) and (a[i + 1 : i + 1 + n] == text).all()
        ]
        assert found, text  # starts right after a newline of one shard
    rows = src.files['train'].windows(64, 64, torch.Generator().manual_seed(1))
    x, n_text = mlm.pack_window_lines(rows, [198], 32, src.sep_id)
    for row, xr, n in zip(rows.numpy(), x, n_text):
        bounds = mlm.line_bounds(row, [198])
        nl = np.flatnonzero(row[:32] == 198)
        start = nl[0] + 1 if len(nl) else 0
        want_x, want_n = mlm.pack_lines(row, bounds, np.searchsorted(bounds, [start]), 32, 0)
        assert n == want_n[0]
        assert (xr[:n] == want_x[0, :n]).all()


def test_llmc_folder_without_meta_trains(tmp_path, capsys):
    """A modded-nanogpt / llm.c folder as it is on disk (fineweb_train_000001.bin, no meta.pkl)."""
    d = tmp_path / 'fineweb10B'
    d.mkdir()
    rng = np.random.default_rng(1)
    for name, n in (('fineweb_val_000000.bin', 400), ('fineweb_train_000001.bin', 900)):
        shards.write_shard(str(d / name), rng.integers(0, 50257, n))
    args = ['--device=cpu', '--compile=False', '--n_layer=1', '--n_head=2', '--n_embd=32']
    args += ['--block_size=32', '--batch_size=2', '--max_iters=2', '--eval_iters=1']
    with pytest.warns(UserWarning, match='no meta.pkl'):
        history = train.main(
            args + [f'--data_root={tmp_path}', '--dataset=fineweb10B', f'--out_dir={tmp_path}/o']
        )
    assert len(history['train']) == 2 and np.isfinite(history['eval'][-1]['val'])


def rss_bytes():
    with open('/proc/self/statm') as f:
        return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE')


def sparse_shard(path, n):
    """An llm.c shard of n tokens that takes no disk space (f.truncate: a hole reads as 0s)."""
    header = np.zeros(256, dtype=np.int32)
    header[:3] = 20240520, 1, n
    with open(path, 'wb') as f:
        f.write(header.tobytes())
        f.truncate(1024 + 2 * n)


def start_up(make_source):
    """(source, batch, seconds, RSS growth in bytes) of building a source and drawing a batch."""
    before, t0 = rss_bytes(), time.perf_counter()
    src = make_source()
    b = src.get_batch('train', 12, torch.Generator().manual_seed(0))
    return src, b, time.perf_counter() - t0, rss_bytes() - before


@pytest.mark.skipif(not os.path.exists('/proc/self/statm'), reason='needs /proc (Linux)')
def test_start_up_on_10gb_of_shards_reads_no_whole_file(tmp_path):
    """10 GB of train shards (5 x 2 GB, the int32 count caps a shard at 4 GB; sparse files,
    nothing written): building the source and drawing a batch take < 1 s and < 200 MB, i.e.
    nothing reads a whole file. Also one headerless 10 GB file read as Shards."""
    d = tmp_path / 'big'
    n = 1_000_000_000  # uint16 tokens per shard: 2 GB
    make_dataset(
        d, {'val': [np.arange(2000)]}, meta={'split_max_token': {'train': 50256, 'val': 1999}}
    )
    names = [f'train_{i:06d}.bin' for i in range(5)]
    for name in names:
        sparse_shard(d / name, n)
    meta = pickle.loads((d / 'meta.pkl').read_bytes())
    meta['shards']['train'], meta['shard_tokens']['train'] = names, [n] * 5
    (d / 'meta.pkl').write_bytes(pickle.dumps(meta))
    src, b, elapsed, grown = start_up(
        lambda: source_of(str(tmp_path), 'next_token', dataset='big', block_size=1024)
    )
    assert src.files['train'].n == 5 * n and b['x'].shape == (12, 1024)
    assert elapsed < 1.0, f"start-up took {elapsed:.2f} s"
    assert grown < 200e6, f"start-up grew RSS by {grown / 1e6:.0f} MB"

    flat = tmp_path / 'train.bin'  # nanoGPT's headerless layout, one 10 GB file
    with open(flat, 'wb') as f:
        f.truncate(2 * 5 * n)
    before, t0 = rss_bytes(), time.perf_counter()
    split = shards.Shards([(str(flat), 0, 5 * n)], np.uint16, 50304, min_tokens=1025)
    w = split.windows(12, 1025, torch.Generator().manual_seed(0))
    assert w.shape == (12, 1025) and split.n == 5 * n
    assert time.perf_counter() - t0 < 1.0 and rss_bytes() - before < 200e6
