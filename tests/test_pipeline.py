"""The input pipeline and the step accounting a GPU run relies on: batches built a step ahead
(Prefetcher) equal those drawn in place, start-up reads no whole file, every window's ids are
checked, MFU is per device, and ms/it leaves evaluation out."""

import json
import os
import pickle

import numpy as np
import pytest
import torch

import train
import utils
from conftest import source_of
from model import GPT, GPTConfig
from utils import DataError, TokenFile


def same_batches(a, b):
    return len(a) == len(b) and all(
        x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x) for x, y in zip(a, b)
    )


@pytest.mark.parametrize('objective', ['next_token', 'mlm', 'unmasking', 'hybrid'])
def test_prefetched_batches_are_bit_identical_to_batches_drawn_in_place(data_root, objective):
    cfg = {**train.DEFAULTS, 'batch_size': 4, 'block_size': 32, 'max_iters': 6, 'seed': 7}
    src = source_of(data_root, objective)
    prefetch = train.Prefetcher(src, cfg, first=1, n=2, pin=False)
    try:
        for it in (0, 1, 2, 5):  # in order, then a jump (a resumed run starts mid-way)
            ahead = train.device_batches(src, prefetch.host(it), 'cpu')
            assert same_batches(ahead, train.draw_batches(src, cfg, it, 1, 2, 'cpu'))
        assert 3 not in prefetch.ahead and 6 not in prefetch.ahead  # nothing past max_iters
    finally:
        prefetch.close()


def test_prefetcher_raises_a_bad_batch_in_the_training_thread(data_root):
    src = source_of(data_root, 'next_token')
    cfg = {**train.DEFAULTS, 'batch_size': 2, 'block_size': 32, 'max_iters': 3}

    def broken(*a, **k):
        raise DataError("x.bin holds token id 99")

    src.host_batch = broken
    prefetch = train.Prefetcher(src, cfg, 0, 1, False)
    with pytest.raises(DataError, match='token id 99'):
        prefetch.host(0)
    prefetch.close()


def test_resume_is_exact_with_the_prefetching_loop(tiny_args, tmp_path):
    """Prefetching builds step n+1 while n runs: a run stopped at 6 and resumed draws what the
    straight run drew (a masked objective, whose batches carry the most randomness)."""
    args = tiny_args + ['--objective=unmasking', '--eval_interval=6', '--lr_decay_iters=12']
    straight = train.main(args + ['--max_iters=12', f'--out_dir={tmp_path}/a'])
    train.main(args + ['--max_iters=6', f'--out_dir={tmp_path}/b'])
    resumed = train.main([f'--out_dir={tmp_path}/b', '--init_from=resume', '--max_iters=12'])
    tail = [h['loss'] for h in straight['train'] if h['iter'] >= 6]
    assert [h['loss'] for h in resumed['train']] == pytest.approx(tail, abs=1e-6)


def test_mfu_is_per_device():
    model = GPT(GPTConfig(block_size=64, vocab_size=100, n_layer=2, n_head=2, n_embd=32))
    tokens_8_gpus = 8 * 12 * 1024  # a step's tokens over 8 ranks
    one = model.estimate_mfu(tokens_8_gpus / 8, 0.1, peak_flops=1e12)
    assert one == pytest.approx(model.flops_per_token() * 12 * 1024 / 0.1 / 1e12)
    assert model.estimate_mfu(tokens_8_gpus, 0.1, 1e12) == pytest.approx(8 * one)  # the old bug
    assert train.step_mfu(model, 1024, 0.1, 'cpu') is None  # no peak known for a CPU


def test_step_time_leaves_out_evaluation_and_the_first_window(tiny_args, tmp_path, monkeypatch):
    real = train.estimate_loss

    def slow_eval(*a, **k):
        import time

        time.sleep(0.5)
        return real(*a, **k)

    monkeypatch.setattr(train, 'estimate_loss', slow_eval)
    train.main(tiny_args + ['--max_iters=6', '--eval_interval=2', '--log_interval=1'])
    rows = [json.loads(l) for l in open(tmp_path / 'out' / 'metrics.jsonl')]
    dts = [r['dt_ms'] for r in rows if r['kind'] == 'train']
    assert len(dts) == 6 and max(dts) < 400  # a step of this model is ~10 ms, an eval 500 ms
    timer = train.StepTimer()
    assert timer.lap()[1] is False and timer.lap()[1] is True  # warm from the second window


def write_tokens(d, data, meta):
    os.makedirs(d, exist_ok=True)
    data.tofile(os.path.join(d, 'train.bin'))
    with open(os.path.join(d, 'meta.pkl'), 'wb') as f:
        pickle.dump(meta, f)


def test_start_up_reads_no_whole_file_and_batches_check_their_ids(tmp_path, monkeypatch):
    monkeypatch.setattr(utils, 'SCAN_LIMIT', 1000)
    data = np.zeros(50_000, dtype=np.uint16)
    data[-100:] = 70  # a bad id far past the head start-up reads
    write_tokens(tmp_path, data, {'vocab_size': 65, 'dtype': 'uint16'})
    f = TokenFile(str(tmp_path), 'train', {'vocab_size': 65})  # the head is clean: no error
    with pytest.raises(DataError, match=r'train.bin holds token id 70 >= vocab_size 65'):
        for s in range(50):  # some window reaches the bad tail
            f.windows(64, 256, torch.Generator().manual_seed(s))
    with pytest.raises(DataError, match='token id 70'):  # a recorded max is believed
        TokenFile(str(tmp_path), 'train', {'vocab_size': 65, 'split_max_token': {'train': 70}})


def test_start_up_on_a_large_sparse_file_is_fast(tmp_path):
    """A 4 GB train.bin (sparse: no disk used) opens in well under a second (no whole scan)."""
    import time

    path = tmp_path / 'train.bin'
    with open(path, 'wb') as f:
        f.truncate(4 << 30)
    t = time.perf_counter()
    f = TokenFile(str(tmp_path), 'train', {'vocab_size': 50304, 'dtype': 'uint16'})
    assert time.perf_counter() - t < 5 and f.n == 2 << 30  # generous: a shared CI machine


def test_mlm_source_without_a_line_index_packs_whole_lines(data_root, monkeypatch):
    monkeypatch.setattr(utils, 'SCAN_LIMIT', 1000)  # tiny_char (180k tokens) is now "large"
    src = source_of(data_root, 'mlm', block_size=64)
    assert 'train' not in src.bounds  # no line index: lines found in windows of 2T
    b = src.get_batch('train', 64, torch.Generator().manual_seed(0))
    nl = src.meta['stoi']['\n']
    am, x = b['attention_mask'], b['x']
    sep_pos = am.sum(1) - 1
    assert (x[torch.arange(64), sep_pos] == src.sep_id).all()
    ends_nl = x[torch.arange(64), (sep_pos - 1).clamp(min=0)] == nl  # whole lines, mostly
    assert ends_nl.float().mean() > 0.9
