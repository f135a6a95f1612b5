"""Crash safety: SIGKILL mid-training then exact resume; interrupted writes leave no partial file."""

import os
import pickle
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

import train
from utils import atomic_write, write_dataset_dir

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_sigkill_then_resume_continues_exactly(tiny_args, tmp_path):
    args = tiny_args + [
        '--max_iters=400',
        '--eval_interval=3',
        '--lr_decay_iters=400',
        '--dropout=0.1',
    ]
    killed = str(tmp_path / 'killed')
    proc = subprocess.Popen(
        [sys.executable, os.path.join(ROOT, 'train.py')] + args + [f'--out_dir={killed}'],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=dict(os.environ, OMP_NUM_THREADS='1'),
    )
    ckpt = os.path.join(killed, 'ckpt.pt')
    deadline = time.time() + 120
    while not os.path.exists(ckpt) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    time.sleep(0.3 + np.random.rand())  # somewhere in the run, possibly mid-checkpoint-write
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read()[-2000:]
    state = torch.load(ckpt, weights_only=False)  # the last checkpoint is whole
    k = state['iter_num']
    assert 0 < k < 400
    stop = k + 6
    resumed = train.main(
        args
        + [
            f'--out_dir={killed}',
            '--init_from=resume',
            f'--max_iters={stop}',
            '--lr_decay_iters=400',
        ]
    )
    straight = train.main(args + [f'--out_dir={tmp_path}/straight', f'--max_iters={stop}'])
    assert [h['iter'] for h in resumed['train']] == list(range(k, stop))
    got = [h['loss'] for h in resumed['train']]
    want = [h['loss'] for h in straight['train'] if h['iter'] >= k]
    assert got == pytest.approx(want, abs=1e-6)


def test_failed_checkpoint_write_keeps_the_previous_one(tmp_path):
    path = tmp_path / 'ckpt.pt'
    atomic_write(str(path), lambda tmp: torch.save({'iter_num': 1}, tmp))

    def crash(tmp):
        with open(tmp, 'wb') as f:
            f.write(b'half a checkpoint')
        raise KeyboardInterrupt  # killed mid-write

    with pytest.raises(KeyboardInterrupt):
        atomic_write(str(path), crash)
    assert torch.load(path)['iter_num'] == 1
    assert os.listdir(tmp_path) == ['ckpt.pt']  # no temp file left behind


def test_interrupted_dataset_write_leaves_nothing_under_final_names(tmp_path):
    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError('interrupted')

    out = tmp_path / 'ds'
    with pytest.raises(RuntimeError):
        write_dataset_dir(
            str(out), {'train.bin': np.arange(5, dtype=np.uint16), 'meta.pkl': Unpicklable()}
        )
    assert os.listdir(out) == []
    write_dataset_dir(str(out), {'train.bin': np.arange(5, dtype=np.uint16), 'meta.pkl': {'a': 1}})
    assert sorted(os.listdir(out)) == ['meta.pkl', 'train.bin']
    assert pickle.loads((out / 'meta.pkl').read_bytes()) == {'a': 1}
