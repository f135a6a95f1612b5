"""Trust at the data boundary: the dataset names its objective (and block_size for rows), older
path-star streams and mask-less SFT data train safely, .bin sizes are checked against meta.pkl,
and the demos regenerate a dataset made with other flags."""

import os
import pickle
import re

import numpy as np
import pytest
import torch
from test_sft import prepare as prepare_chat

import batches
import chat
import pathstar
import train
from configurator import ConfigError
from conftest import TINY
from utils import DataError, TokenFile

NO_BLOCK = [a for a in TINY if not a.startswith('--block_size')]


def make_pathstar(root, name, *flags):
    pathstar.main([*flags, f'--data_root={root}', f'--name={name}'])
    with open(os.path.join(root, name, 'meta.pkl'), 'rb') as f:
        return pickle.load(f)


def logged(out, key):
    """The values of `key` on the training log lines of captured stdout."""
    return [float(v) for v in re.findall(rf'^iter \d+/.*, {key} ([0-9.e+-]+)', out, re.M)]


def write_stream(root, name, meta, train_ids, val_ids, dtype=np.uint16):
    d = os.path.join(root, name)
    os.makedirs(d, exist_ok=True)
    np.asarray(train_ids, dtype=dtype).tofile(os.path.join(d, 'train.bin'))
    np.asarray(val_ids, dtype=dtype).tofile(os.path.join(d, 'val.bin'))
    with open(os.path.join(d, 'meta.pkl'), 'wb') as f:
        pickle.dump(meta, f)
    return d


# ------------------------------------------------------------------------ the objective
@pytest.mark.parametrize(
    'mode, flags',
    [
        ('incontext', ['--d=2', '--l=3', '--N=8', '--num_train=300', '--num_val=20']),
        ('inweights', ['--d=4', '--l=3', '--directions']),
    ],
)
def test_pathstar_dataset_names_its_objective_and_block_size(tmp_path, capsys, mode, flags):
    meta = make_pathstar(tmp_path, 'ps', f'--mode={mode}', '--pauses=2', *flags)
    assert meta['objective'] == 'pathstar' and meta['args']['mode'] == mode
    capsys.readouterr()
    args = NO_BLOCK + [f'--data_root={tmp_path}', '--dataset=ps', f'--out_dir={tmp_path}/out']
    train.main(args + ['--batch_size=32', '--max_iters=3', '--pathstar_eval_rows=10'])
    out = capsys.readouterr().out
    assert f"objective pathstar (from {tmp_path}/ps/meta.pkl)" in out
    row_len = meta['row_len']
    assert f"block_size {row_len - 1} (rows of {row_len} tokens in {tmp_path}/ps)" in out
    ckpt = torch.load(tmp_path / 'out' / 'ckpt.pt', weights_only=False)
    assert ckpt['config']['objective'] == 'pathstar' and ckpt['model_args']['block_size'] == (
        row_len - 1
    )
    pause, pad = logged(out, 'masked_pause'), logged(out, 'masked_pad')
    assert len(pause) == len(pad) == 3 and min(pause) > 0  # every row has 2 PAUSE targets
    if mode == 'inweights':
        assert min(pad) > 0  # edge-fact rows are padded
    else:
        assert pad == [0.0] * 3  # in-context rows are never padded
    # given flags win: --block_size, and another objective that reads the same data
    capsys.readouterr()
    train.main(
        args
        + ['--max_iters=1', '--block_size=40', '--objective=unmasking', '--diffusion_eval_rows=4']
    )
    out = capsys.readouterr().out
    assert 'objective unmasking (as given)' in out and not re.search('^block_size ', out, re.M)
    with pytest.raises(ConfigError, match=r'--objective=sft cannot read .*chat shards.*pathstar'):
        train.main(args + ['--objective=sft'])


def test_choose_objective_from_old_and_new_metas(tmp_path):
    def choose(meta, explicit=(), objective='next_token'):
        d = tmp_path / 'd'
        d.mkdir(exist_ok=True)
        if meta is None:
            (d / 'meta.pkl').unlink(missing_ok=True)
        else:
            (d / 'meta.pkl').write_bytes(pickle.dumps(meta))
        cfg = {**train.DEFAULTS, 'data_root': str(tmp_path), 'dataset': 'd'}
        return batches.choose_objective({**cfg, 'objective': objective}, set(explicit))[0]

    v = {'vocab_size': 10}
    assert choose(None) == 'next_token'
    assert choose({**v, 'objective': 'sft'}) == 'sft'
    assert choose({**v, 'row_len': 6, 'answer_start': 2}) == 'pathstar'
    assert choose({**v, 'special': {'<|end|>': 9}}) == 'sft'
    assert choose({**v, 'pause_token': 8, 'pad_token': 9}) == 'next_token'  # older stream
    assert choose({**v, 'special_tokens': {'PAUSE': 8, 'PAD': 9}}) == 'next_token'
    assert choose({**v, 'itos': {}}) == 'next_token'
    rows = {**v, 'row_len': 6, 'answer_start': 2}
    assert choose(rows, {'objective'}, 'mlm') == 'mlm'  # a choice over the same data
    assert choose({**v, 'row_len': 6}, {'objective'}, 'pathstar') == 'pathstar'  # no answer span
    with pytest.raises(ConfigError, match=r'--objective=pathstar cannot read .*row_len.*next_tok'):
        choose({**v, 'pause_token': 8}, {'objective'}, 'pathstar')
    with pytest.raises(ConfigError, match=r'--objective=next_token cannot read .*--objective=sft'):
        choose({**v, 'special': {'<|end|>': 9}}, {'objective'})
    with pytest.raises(DataError, match="names objective 'bert'"):
        choose({**v, 'objective': 'bert'})


# ------------------------------------------------------------------------ older path-star streams
@pytest.mark.parametrize('style', ['special_tokens', 'top_level'])
def test_older_pathstar_stream_trains_with_pause_pad_masked(tmp_path, capsys, style):
    tr, va, meta = pathstar.make_inweights(8, 3, pauses=2, seed=0)
    pause, pad = meta['special_tokens']['PAUSE'], meta['special_tokens']['PAD']
    old = {'vocab_size': meta['vocab_size']}  # a flat stream: no row_len, no counts
    if style == 'special_tokens':
        old['special_tokens'] = {'PAUSE': pause, 'PAD': pad}
    else:
        old.update(pause_token=pause, pad_token=pad)
    write_stream(tmp_path, 'old', old, tr.ravel(), va.ravel())
    args = NO_BLOCK + [f'--data_root={tmp_path}', '--dataset=old', f'--out_dir={tmp_path}/out']
    capsys.readouterr()
    train.main(args + ['--block_size=8', '--max_iters=3'])
    out = capsys.readouterr().out
    assert 'objective next_token (from ' in out and 'older path-star stream' in out
    assert min(logged(out, 'masked_pause')) > 0 and min(logged(out, 'masked_pad')) > 0
    # the batches: PAUSE/PAD targets are -1, every other target is the stream's next token
    cfg = {**train.DEFAULTS, 'data_root': str(tmp_path), 'dataset': 'old', 'block_size': 8}
    src = batches.make_source(cfg, seed=0)
    raw = src.files['train'].windows(64, 9, torch.Generator().manual_seed(5))
    b = src.get_batch('train', 64, torch.Generator().manual_seed(5))
    y = raw[:, 1:]
    special = (y == pause) | (y == pad)
    assert special.any() and (b['y'][special] == -1).all()
    assert torch.equal(b['y'][~special], y[~special]) and torch.equal(b['x'], raw[:, :-1])
    src.observe()
    assert src.diagnostics()['masked_pad'] == pytest.approx((y == pad).float().mean().item())
    with pytest.raises(ConfigError, match='--objective=pathstar cannot read'):
        train.main(args + ['--block_size=8', '--objective=pathstar'])


def test_plain_text_logs_no_pause_pad(tiny_args, capsys):
    train.main(tiny_args + ['--max_iters=2'])
    out = capsys.readouterr().out
    assert re.search(r'objective next_token \(from .*tiny_char/meta.pkl\)', out)
    assert 'masked_pause' not in out and not re.search('^block_size ', out, re.M)


# ------------------------------------------------------------------------ SFT without masks
def test_sft_data_without_mask_shards(tmp_path, capsys):
    out = prepare_chat(tmp_path)
    for split in ('train', 'val'):
        os.remove(os.path.join(out, split, 'shard_000_mask.bin'))
    with pytest.raises(
        DataError,
        match=r'shard_000.bin has no mask shard shard_000_mask.bin: .*--use_loss_mask=False',
    ):
        batches.SFT({'block_size': 24, 'use_loss_mask': True}, out, 0)
    with pytest.warns(UserWarning, match='all tokens are supervised'):
        src = batches.SFT({'block_size': 24, 'use_loss_mask': False}, out, 0)
    b = src.get_batch('train', 8)
    assert 'loss_mask' not in b
    src.observe()
    assert src.diagnostics()['mask_frac'] == 1.0
    args = NO_BLOCK + ['--block_size=24', f'--data_root={tmp_path}', '--dataset=chat']
    capsys.readouterr()
    with pytest.warns(UserWarning, match='all tokens are supervised'):
        hist = train.main(
            args + ['--use_loss_mask=False', f'--out_dir={tmp_path}/o', '--max_iters=2']
        )
    assert f'objective sft (from {out}/meta.pkl)' in capsys.readouterr().out
    assert 'val_all' in hist['eval'][-1] and 'val_assistant' not in hist['eval'][-1]
    with pytest.raises(DataError, match='no mask shard .*--use_loss_mask=False'):
        train.main(args + [f'--out_dir={tmp_path}/o2', '--max_iters=2'])


# ------------------------------------------------------------------------ sizes vs meta.pkl
def test_writers_record_objective_dtype_counts_and_command(data_root, tmp_path):
    char = pickle.load(open(os.path.join(data_root, 'tiny_char', 'meta.pkl'), 'rb'))
    ps = make_pathstar(tmp_path, 'ps', '--d=2', '--l=3', '--N=8', '--num_train=50', '--num_val=5')
    sft = pickle.load(open(os.path.join(prepare_chat(tmp_path), 'meta.pkl'), 'rb'))
    for meta, objective, root in (
        (char, 'next_token', os.path.join(data_root, 'tiny_char')),
        (ps, 'pathstar', str(tmp_path / 'ps')),
    ):
        assert meta['objective'] == objective and meta['dtype'] == 'uint16'
        for split in ('train', 'val'):
            nbytes = os.path.getsize(os.path.join(root, f'{split}.bin'))
            assert nbytes == 2 * meta['split_tokens'][split] > 0
    assert sft['objective'] == 'sft' and sft['split_tokens'] == {
        s: sft['counts'][s]['tokens'] for s in ('train', 'val')
    }
    assert char['prepare'].startswith('python data/shakespeare_char/prepare.py --input=')
    assert sft['prepare'].startswith('python data/chat/prepare.py --input=')
    assert ps['prepare'] == (
        'python pathstar.py --mode=incontext --d=2 --l=3 --N=8 --num_train=50 --num_val=5 '
        '--pauses=0 --seed=0'
    )
    assert ps['args'] == pathstar.generation_args(
        pathstar.arg_parser().parse_args(
            ['--d=2', '--l=3', '--N=8', '--num_train=50', '--num_val=5']
        )
    )


def test_bin_sizes_are_checked_against_meta(tmp_path):
    meta = make_pathstar(tmp_path, 'ps', '--d=2', '--l=3', '--N=8', '--num_train=40', '--num_val=5')
    d = tmp_path / 'ps'
    path = d / 'train.bin'
    good = path.read_bytes()
    ids = np.frombuffer(good, dtype=np.uint16)
    fix = re.escape(f"re-make {d} with `{meta['prepare']} --data_root={tmp_path} --name=ps`")
    cases = [
        (good + b'\0', r'is 1441 bytes but meta.pkl records 720 uint16 tokens .*longer than'),
        (good[:-4], r'is 1436 bytes but meta.pkl records 720 uint16 tokens .*truncated'),
        (ids.astype(np.uint32).tobytes(), r'holds 720 tokens of 4 bytes \(uint32\?\) but .*uint16'),
        (ids.astype(np.int64).tobytes(), r'holds 720 tokens of 8 bytes \(int64\?\)'),
        (b'', r'is empty'),
    ]
    for data, msg in cases:
        path.write_bytes(data)
        with pytest.raises(DataError, match=re.escape(str(path)) + ' ' + msg + '.*; ' + fix):
            TokenFile(str(d), 'train', meta)
    path.write_bytes(good)
    assert TokenFile(str(d), 'train', meta).n == 720
    # an older meta (no dtype, no counts): what the size alone tells, and the wide-file sign
    old = {'vocab_size': meta['vocab_size']}
    path.write_bytes(good + b'\0')
    with pytest.raises(DataError, match=r'not a whole number of uint16 tokens .*prepare script'):
        TokenFile(str(d), 'train', old)
    path.write_bytes(ids.astype(np.uint32).tobytes())  # ids < vocab_size either way
    with pytest.raises(DataError, match='every second uint16 is 0, as in a file of wider tokens'):
        TokenFile(str(d), 'train', old)
    path.write_bytes(good)
    assert TokenFile(str(d), 'train', old).n == 720


def test_chat_shards_of_another_dtype_are_an_error(tmp_path):
    out = prepare_chat(tmp_path)
    meta = pickle.load(open(os.path.join(out, 'meta.pkl'), 'rb'))
    shard = os.path.join(out, 'train', 'shard_000.bin')
    ids = np.fromfile(shard, dtype=np.uint16)
    ids.astype(np.uint32).tofile(shard)
    n = meta['split_tokens']['train']
    with pytest.raises(
        DataError, match=rf'train \(its token shards together\) holds {n} tokens of 4 bytes'
    ):
        batches.SFT({'block_size': 24, 'use_loss_mask': True}, out, 0)
    with open(shard, 'ab') as f:
        f.write(b'\0')
    with pytest.raises(DataError, match='not a whole number of uint16 tokens'):
        chat.check_split(out, 'train', np.uint16, meta['vocab_size'])


# ------------------------------------------------------------------------ demos regenerate
def test_ensure_dataset_regenerates_a_dataset_made_with_other_flags(tmp_path, capsys):
    base = ['--mode=incontext', '--d=2', '--l=3', '--N=8', f'--data_root={tmp_path}', '--name=g']
    d = tmp_path / 'g'

    def ensure(*flags):
        capsys.readouterr()
        assert pathstar.ensure_dataset(base + ['--num_val=5', *flags]) == str(d)
        return capsys.readouterr().out

    assert f'generating {d}: not found' in ensure('--num_train=40')
    stamp = os.stat(d / 'train.bin').st_mtime_ns
    assert 'generating' not in ensure('--num_train=40')  # same arguments: reused as it is
    assert os.stat(d / 'train.bin').st_mtime_ns == stamp
    out = ensure('--num_train=60', '--reverse')
    assert f'regenerating {d}: made with num_train=40 (this run needs 60), reverse=False' in out
    meta = pickle.load(open(d / 'meta.pkl', 'rb'))
    assert meta['args']['num_train'] == 60 and meta['reverse'] is True
    del meta['args']  # a dataset from before the arguments were recorded
    (d / 'meta.pkl').write_bytes(pickle.dumps(meta))
    assert 'records no generation arguments' in ensure('--num_train=60', '--reverse')
    (d / 'val.bin').write_bytes((d / 'val.bin').read_bytes()[:-2])  # whole files only
    assert 'truncated' in ensure('--num_train=60', '--reverse')
    assert 'generating' not in ensure('--num_train=60', '--reverse')
    iw = ['--mode=inweights', '--d=4', '--l=3', f'--data_root={tmp_path}', '--name=iw']
    capsys.readouterr()
    pathstar.ensure_dataset(iw)
    pathstar.ensure_dataset(iw)
    assert capsys.readouterr().out.count('generating') == 1


def test_evaluating_a_checkpoint_on_a_regenerated_dataset_is_an_error(tmp_path):
    flags = ['--d=2', '--l=3', '--N=8', '--num_val=5', f'--data_root={tmp_path}', '--name=g']
    pathstar.main(flags + ['--num_train=40'])
    args = NO_BLOCK + [f'--data_root={tmp_path}', '--dataset=g', f'--out_dir={tmp_path}/out']
    train.main(args + ['--max_iters=1', '--pathstar_eval_rows=5'])
    assert pathstar.evaluate_checkpoint(str(tmp_path / 'out'), 5, verbose=False)['val']['n'] == 5
    pathstar.main(flags + ['--num_train=60'])
    with pytest.raises(
        DataError,
        match=r'g is not the dataset this checkpoint was trained on .*'
        r'--num_train=40 .*--name=g`',
    ):
        pathstar.evaluate_checkpoint(str(tmp_path / 'out'), 5, verbose=False)
