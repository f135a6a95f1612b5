import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault('WANDB_MODE', 'disabled')
SHARED = os.path.join(ROOT, '..', 'shared', 'data')

import pickle  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

import batches  # noqa: E402
import train  # noqa: E402

torch.set_num_threads(1)  # small models run faster single-threaded; 2 CPU cores in CI


def shakespeare_text(n_chars=200_000):
    """The first n_chars of tiny Shakespeare from ../shared, or a synthetic stand-in."""
    path = os.path.join(SHARED, 'tinyshakespeare', 'input.txt')
    if os.path.exists(path):
        with open(path, encoding='utf-8') as f:
            return f.read(n_chars)
    import random

    rnd = random.Random(0)
    words = ['the', 'king', 'shall', 'speak', 'of', 'love', 'and', 'death', 'my', 'lord']
    return '\n'.join(' '.join(rnd.choice(words) for _ in range(8)) for _ in range(n_chars // 40))


@pytest.fixture(scope='session')
def data_root(tmp_path_factory):
    """A data root holding 'tiny_char': character-level Shakespeare, 200k chars."""
    root = tmp_path_factory.mktemp('data')
    src = root / 'input.txt'
    src.write_text(shakespeare_text())
    sys.path.insert(0, os.path.join(ROOT, 'data', 'shakespeare_char'))
    from prepare import main as prepare_char

    sys.path.pop(0)
    prepare_char(['--input', str(src), '--out_dir', str(root / 'tiny_char')])
    return str(root)


TINY = [
    '--device=cpu',
    '--compile=False',
    '--n_layer=2',
    '--n_head=2',
    '--n_embd=32',
    '--block_size=32',
    '--batch_size=8',
    '--eval_iters=2',
    '--log_interval=1',
    '--warmup_iters=0',
    '--learning_rate=3e-3',
    '--min_lr=3e-4',
]


@pytest.fixture
def tiny_args(data_root, tmp_path):
    """train.py flags for a tiny, fast CPU model on tiny_char, writing into tmp_path."""
    return TINY + [f'--data_root={data_root}', '--dataset=tiny_char', f'--out_dir={tmp_path}/out']


def source_of(data_root, objective, dataset='tiny_char', **over):
    """The batch source of `objective` on a dataset of data_root, block 32, other keys default."""
    cfg = {
        **train.DEFAULTS,
        'data_root': data_root,
        'dataset': dataset,
        'block_size': 32,
        'objective': objective,
        **over,
    }
    return batches.make_source(cfg, seed=0)


def base_vocab(data_root):
    with open(os.path.join(data_root, 'tiny_char', 'meta.pkl'), 'rb') as f:
        return pickle.load(f)['vocab_size']


@pytest.fixture(scope='session')
def rows_root(tmp_path_factory):
    """A path-star-like row dataset: rows of 12 tokens, answer = positions [6, 10), PAD = 1
    at positions 10, 11 of every row and at the answer's last position in odd rows."""
    root = tmp_path_factory.mktemp('rows')
    d = root / 'rows'
    d.mkdir()
    rng = np.random.default_rng(0)
    for split, n in (('train', 64), ('val', 16)):
        rows = rng.integers(2, 20, size=(n, 12)).astype(np.uint16)
        rows[:, 10:] = 1
        rows[1::2, 9] = 1
        rows.tofile(d / f'{split}.bin')
    meta = {
        'vocab_size': 20,
        'row_len': 12,
        'answer_start': 6,
        'answer_len': 4,
        'special_tokens': {'PAD': 1, 'PAUSE': 0},
    }
    (d / 'meta.pkl').write_bytes(pickle.dumps(meta))
    return str(root)


class ProposeToken(torch.nn.Module):
    """A stand-in denoiser that always proposes `token` (logits over n_out ids) and remembers
    the input it saw (self.seen): what a frozen-denoiser batch source fed it."""

    def __init__(self, token, n_out):
        super().__init__()
        self.token, self.n_out = token, n_out

    def forward(self, x, attention_mask=None):
        self.seen = x
        return torch.nn.functional.one_hot(
            torch.full_like(x, self.token), self.n_out
        ).float() * 50, None
