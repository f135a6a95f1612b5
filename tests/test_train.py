"""train.py end to end on a tiny CPU model: learning, exact resume, DDP, bad input."""

import os
import pickle

import numpy as np
import pytest
import torch

import sample
import train
from configurator import ConfigError
from utils import DataError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def losses(hist, start=0):
    return [h['loss'] for h in hist['train'] if h['iter'] >= start]


def test_tiny_run_lowers_the_loss_and_samples(tiny_args, tmp_path):
    hist = train.main(tiny_args + ['--max_iters=60', '--eval_interval=30'])
    ev = hist['eval']
    assert [e['iter'] for e in ev] == [0, 30, 60]
    assert ev[-1]['val'] < ev[0]['val'] - 0.8  # from ~ln(65)=4.17 to < 3.4
    assert os.path.exists(tmp_path / 'out' / 'ckpt.pt')
    outs = sample.main(
        [
            f'--out_dir={tmp_path}/out',
            '--num_samples=2',
            '--max_new_tokens=20',
            '--start=ROMEO:',
            '--temperature=0',
        ]
    )
    assert len(outs) == 2 and outs[0] == outs[1] and outs[0].startswith('ROMEO:')
    assert len(outs[0]) == len('ROMEO:') + 20


def test_resume_gives_the_same_losses_as_a_straight_run(tiny_args, tmp_path):
    args = tiny_args + ['--dropout=0.1', '--eval_interval=8', '--lr_decay_iters=16']
    straight = train.main(args + ['--max_iters=16', f'--out_dir={tmp_path}/a'])
    train.main(args + ['--max_iters=8', f'--out_dir={tmp_path}/b'])
    resumed = train.main(args + ['--max_iters=16', f'--out_dir={tmp_path}/b', '--init_from=resume'])
    assert losses(resumed)[0] != losses(straight)[0]  # the resumed run starts at iter 8
    assert losses(resumed) == pytest.approx(losses(straight, start=8), abs=1e-6)
    assert resumed['eval'][-1]['val'] == pytest.approx(straight['eval'][-1]['val'], abs=1e-6)


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tiny_args, tmp_path):
    args = tiny_args + ['--eval_interval=5', '--grad_clip=0.0']
    train.main(args + ['--max_iters=5'])
    ckpt = tmp_path / 'out' / 'ckpt.pt'
    before = ckpt.read_bytes()
    with pytest.raises(SystemExit, match='not finite|loss is nan'):
        train.main(
            args + ['--max_iters=10', '--init_from=resume', '--learning_rate=1e30', '--min_lr=1e30']
        )
    assert ckpt.read_bytes() == before
    torch.load(ckpt, weights_only=False)


def test_bad_inputs_are_clear_errors(tiny_args, data_root, tmp_path):
    with pytest.raises(DataError, match='dataset folder .*nope not found'):
        train.main(tiny_args + ['--dataset=nope'])
    bad = tmp_path / 'bad'
    bad.mkdir()
    for name in ('train.bin', 'val.bin'):
        (bad / name).write_bytes(np.arange(100, dtype=np.uint16).tobytes())
    (bad / 'meta.pkl').write_bytes(b'not a pickle')
    args = tiny_args + [f'--data_root={tmp_path}', '--dataset=bad']
    with pytest.raises(DataError, match='meta.pkl is corrupt'):
        train.main(args)
    (bad / 'meta.pkl').write_bytes(pickle.dumps({'vocab_size': 50}))
    with pytest.raises(DataError, match='token id 99 >= vocab_size 50'):
        train.main(args)
    (bad / 'meta.pkl').write_bytes(pickle.dumps({'vocab_size': 200}))
    with pytest.raises(DataError, match='too few for --block_size=128'):
        train.main(args + ['--block_size=128'])
    (bad / 'meta.pkl').unlink()
    with pytest.raises(DataError, match='meta.pkl not found: run the dataset'):
        train.main(args + ['--objective=mlm'])
    with pytest.raises(ConfigError, match="unknown config key 'n_layers'"):
        train.main(tiny_args + ['--n_layers=3'])
    with pytest.raises(DataError, match='--objective=bert is unknown'):
        train.main(tiny_args + ['--objective=bert'])


def test_init_from_checkpoint_keeps_architecture_and_takes_training_params(tiny_args, tmp_path):
    train.main(tiny_args + ['--max_iters=2', '--eval_interval=100'])
    base = str(tmp_path / 'out' / 'ckpt.pt')
    with pytest.raises(ConfigError, match='--n_layer=3 conflicts with .*n_layer=2'):
        train.main(tiny_args + [f'--init_from={base}', '--n_layer=3', f'--out_dir={tmp_path}/x'])
    model = train.build_model(
        {**train.DEFAULTS, 'init_from': base, 'dropout': 0.2, 'n_layer': 12, 'block_size': 32},
        set(),
        type('S', (), {'vocab_size': 70, 'causal': True, 'meta': None})(),
    )
    assert model.config.n_layer == 2 and model.config.dropout == 0.2
    assert model.transformer.drop.p == 0.2 and model.config.vocab_size == 70


def test_sample_refuses_bidirectional_checkpoint(tiny_args, tmp_path):
    train.main(tiny_args + ['--max_iters=1', '--eval_interval=100'])
    ckpt = torch.load(tmp_path / 'out' / 'ckpt.pt', weights_only=False)
    ckpt['model_args']['causal'] = False
    torch.save(ckpt, tmp_path / 'bi.pt')
    with pytest.raises(ConfigError, match='bidirectional'):
        sample.main([f'--ckpt={tmp_path}/bi.pt'])


def test_init_from_checkpoint_with_another_vocabulary_is_an_error(tiny_args, tmp_path):
    train.main(tiny_args + ['--max_iters=1', '--eval_interval=100'])
    ckpt = torch.load(tmp_path / 'out' / 'ckpt.pt', weights_only=False)
    ckpt['meta']['itos'] = {i: chr(200 + i) for i in ckpt['meta']['itos']}  # other characters
    torch.save(ckpt, tmp_path / 'other.pt')
    with pytest.raises(DataError, match="different vocabulary than dataset 'tiny_char'"):
        train.main(tiny_args + [f'--init_from={tmp_path}/other.pt', f'--out_dir={tmp_path}/y'])
    ckpt['meta'] = None
    ckpt['model_args']['vocab_size'] = 500
    torch.save(ckpt, tmp_path / 'big.pt')
    with pytest.raises(DataError, match='vocab_size 500 but dataset'):
        train.main(tiny_args + [f'--init_from={tmp_path}/big.pt', f'--out_dir={tmp_path}/z'])


def test_cooldown_holds_the_lr_then_decays_linearly_to_min_lr(tiny_args):
    cfg = dict(train.DEFAULTS, decay_lr=False, learning_rate=1e-3, min_lr=1e-4)
    cfg.update(lr_decay_iters=1000, cooldown_frac=0.2)
    lrs = [train.get_lr(it, cfg) for it in (0, 799, 800, 900, 1000, 1200)]
    assert lrs == pytest.approx([1e-3, 1e-3, 1e-3, 5.5e-4, 1e-4, 1e-4])
    assert train.get_lr(999, dict(cfg, cooldown_frac=0.0)) == 1e-3  # the default: constant
    with pytest.raises(ConfigError, match='--cooldown_frac=1.5: is a fraction'):
        train.main(tiny_args + ['--decay_lr=False', '--cooldown_frac=1.5'])
    with pytest.raises(
        ConfigError, match='--cooldown_frac=0.2: is the schedule of --decay_lr=False'
    ):
        train.main(tiny_args + ['--decay_lr=True', '--cooldown_frac=0.2'])
    with pytest.raises(ConfigError, match='--min_lr=0.01: above --learning_rate'):
        train.main(tiny_args + ['--decay_lr=False', '--cooldown_frac=0.2', '--min_lr=1e-2'])
