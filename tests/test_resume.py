"""Resume restores the run: saved settings, SIGTERM/Ctrl-C checkpoints, eval_only, init_from."""

import os
import shlex
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

import train
from conftest import ROOT
from utils import DataError


def start(args):
    """train.py in a subprocess, stdout and stderr together, unbuffered."""
    return subprocess.Popen(
        [sys.executable, '-u', os.path.join(ROOT, 'train.py')] + args,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=dict(os.environ, OMP_NUM_THREADS='1'),
    )


def read_until(proc, prefix, lines):
    for line in proc.stdout:
        lines.append(line)
        if line.startswith(prefix):
            return
    raise AssertionError(f"no line starting with {prefix!r}:\n{''.join(lines)[-3000:]}")


def losses(hist, start=0):
    return [h['loss'] for h in hist['train'] if h['iter'] >= start]


def test_sigkilled_run_resumes_from_only_init_from_and_out_dir(tiny_args, tmp_path, capsys):
    """`python train.py --init_from=resume --out_dir=X` alone: every setting of the run comes
    back from the checkpoint, and the run ends at its saved max_iters with the same losses."""
    args = tiny_args + ['--max_iters=60', '--eval_interval=5', '--lr_decay_iters=60']
    args += ['--dropout=0.1']
    killed = str(tmp_path / 'killed')
    proc = start(args + [f'--out_dir={killed}'])
    lines = []
    read_until(proc, 'saved checkpoint', lines)
    time.sleep(0.1 * np.random.rand())  # after the first checkpoint, maybe mid-write of the next
    proc.kill()
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, ''.join(lines)[-2000:]
    k = torch.load(os.path.join(killed, 'ckpt.pt'), weights_only=False)['iter_num']
    assert 5 <= k < 60 and k % 5 == 0
    capsys.readouterr()
    resumed = train.main(['--init_from=resume', f'--out_dir={killed}'])
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.startswith('resume: '))
    assert line.startswith(f"resume: from {killed}/ckpt.pt at iter {k}; saved settings used: ")
    for used in ('max_iters=60 (default 600000)', 'batch_size=8 (default 12)'):
        assert used in line
    assert 'dropout=0.1 (default 0.0)' in line and 'compile=False (default True)' in line
    assert 'device=' not in line and 'out_dir=' not in line  # taken from this command
    straight = train.main(args + [f'--out_dir={tmp_path}/straight'])
    assert [h['iter'] for h in resumed['train']] == list(range(k, 60))
    assert losses(resumed) == pytest.approx(losses(straight, start=k), abs=1e-6)
    assert resumed['eval'][-1] == pytest.approx(straight['eval'][-1], abs=1e-6)


def test_resume_flags_win_and_unknown_saved_keys_are_ignored(tiny_args, tmp_path, capsys):
    train.main(tiny_args + ['--max_iters=4', '--eval_interval=4', '--dropout=0.1'])
    ckpt_path = tmp_path / 'out' / 'ckpt.pt'
    ckpt = torch.load(ckpt_path, weights_only=False)
    ckpt['config']['a_key_of_an_older_version'] = 3  # not in DEFAULTS any more: ignored
    del ckpt['config']['min_lr']  # a key the checkpoint predates: today's default
    torch.save(ckpt, ckpt_path)
    capsys.readouterr()
    hist = train.main(
        ['--init_from=resume', f'--out_dir={tmp_path}/out', '--max_iters=6', '--dropout=0.0']
    )
    out = capsys.readouterr().out
    assert [h['iter'] for h in hist['train']] == [4, 5]
    line = next(x for x in out.splitlines() if x.startswith('resume: '))
    assert 'max_iters' not in line and 'dropout' not in line and 'min_lr' not in line
    assert 'a_key_of_an_older_version' not in line and 'n_embd=32 (default 768)' in line
    saved = torch.load(ckpt_path, weights_only=False)['config']
    assert saved['dropout'] == 0.0 and saved['min_lr'] == train.DEFAULTS['min_lr']


@pytest.mark.parametrize('sig', [signal.SIGTERM, signal.SIGINT], ids=['SIGTERM', 'SIGINT'])
def test_signal_saves_a_checkpoint_prints_the_resume_command_and_resume_is_exact(
    sig, tiny_args, tmp_path
):
    args = tiny_args + ['--eval_interval=4', '--lr_decay_iters=40', '--dropout=0.1']
    out_dir = str(tmp_path / 'stopped')
    proc = start(args + ['--max_iters=100000', f'--out_dir={out_dir}'])  # would run for hours
    lines = []
    read_until(proc, 'iter 3/', lines)
    proc.send_signal(sig)
    lines.append(proc.stdout.read())
    proc.wait(timeout=120)
    out = ''.join(lines)
    assert proc.returncode == 128 + sig, out[-3000:]  # 143 for SIGTERM, 130 for Ctrl-C
    assert 'Traceback' not in out
    command = f'python train.py --init_from=resume --out_dir={out_dir}'
    assert command in out.splitlines()
    k = torch.load(os.path.join(out_dir, 'ckpt.pt'), weights_only=False)['iter_num']
    logged = [int(x.split('/')[0][5:]) for x in out.splitlines() if x.startswith('iter ')]
    assert k >= 4 and logged == list(range(k))  # saved: the step after the last one run
    stop = k + 6
    resumed = train.main(shlex.split(command)[2:] + [f'--max_iters={stop}'])
    straight = train.main(args + [f'--max_iters={stop}', f'--out_dir={tmp_path}/straight'])
    assert [h['iter'] for h in resumed['train']] == list(range(k, stop))
    assert losses(resumed) == pytest.approx(losses(straight, start=k), abs=1e-6)
    assert resumed['eval'][-1] == pytest.approx(straight['eval'][-1], abs=1e-6)


def test_eval_only_resume_evaluates_the_loaded_iteration_and_saves_nothing(tiny_args, tmp_path):
    first = train.main(tiny_args + ['--max_iters=6', '--eval_interval=4'])
    out = tmp_path / 'out'
    before = {name: (out / name).read_bytes() for name in os.listdir(out)}
    hist = train.main(
        ['--init_from=resume', f'--out_dir={out}', '--eval_only=True', '--max_iters=20']
    )  # iter 6 is neither a multiple of eval_interval nor the last
    assert hist['train'] == [] and [e['iter'] for e in hist['eval']] == [6]
    assert hist['eval'][0] == pytest.approx(first['eval'][-1], abs=1e-6)
    assert {name: (out / name).read_bytes() for name in os.listdir(out)} == before


def test_init_from_a_folder_means_its_ckpt_pt(tiny_args, tmp_path):
    base = train.main(tiny_args + ['--max_iters=4', '--eval_interval=4'])
    args = [a for a in tiny_args if not a.startswith('--out_dir')] + ['--max_iters=0']
    for i, where in enumerate([tmp_path / 'out', tmp_path / 'out' / 'ckpt.pt']):
        hist = train.main(args + [f'--init_from={where}', f'--out_dir={tmp_path}/b{i}'])
        assert hist['eval'][0]['val'] == pytest.approx(base['eval'][-1]['val'], abs=1e-6)
    (tmp_path / 'empty').mkdir()
    with pytest.raises(DataError, match=r'--init_from=\S*empty/ckpt.pt: checkpoint not found'):
        train.main(args + [f'--init_from={tmp_path}/empty', f'--out_dir={tmp_path}/c'])
