"""What a run shows: grad_norm on the log line, metrics.jsonl + bench/plot_run.py, wandb
(offline), checkpoint permissions."""

import glob
import json
import os
import signal
import stat
import struct
import sys

import pytest

import train
from conftest import ROOT
from utils import DataError

sys.path.insert(0, os.path.join(ROOT, 'bench'))
import plot_run  # noqa: E402


def read_rows(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


def test_log_line_shows_the_gradient_norm_before_clipping(tiny_args, capsys):
    hist = train.main(tiny_args + ['--max_iters=4', '--eval_interval=4', '--grad_clip=1e-3'])
    lines = [x for x in capsys.readouterr().out.splitlines() if x.startswith('iter ')]
    assert len(lines) == 4
    for line, h in zip(lines, hist['train']):
        assert f"loss {h['loss']:.4f}, grad_norm {h['grad_norm']:.4f}, lr " in line
        assert h['grad_norm'] > 0.05  # the norm before clipping to 1e-3 (~1 for this model)


def test_metrics_jsonl_rows_append_on_resume_and_plot_run_draws_them(tiny_args, tmp_path):
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    first = train.main(tiny_args + ['--max_iters=6', '--eval_interval=3'])
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before
    path = tmp_path / 'out' / 'metrics.jsonl'
    rows = read_rows(path)
    train_rows = [r for r in rows if r['kind'] == 'train']
    eval_rows = [r for r in rows if r['kind'] == 'eval']
    assert [r['iter'] for r in train_rows] == list(range(6))
    assert [r['loss'] for r in train_rows] == [h['loss'] for h in first['train']]
    assert [r['grad_norm'] for r in train_rows] == [h['grad_norm'] for h in first['train']]
    assert all(r['lr'] > 0 and r['dt_ms'] > 0 for r in train_rows)
    assert [r['iter'] for r in eval_rows] == [0, 3, 6]
    assert [(r['train'], r['val']) for r in eval_rows] == [
        (e['train'], e['val']) for e in first['eval']
    ]
    written = path.read_bytes()
    with open(path, 'a') as f:
        f.write('{"kind": "train", "it')  # a row cut by a SIGKILL
    resumed = train.main(['--init_from=resume', f'--out_dir={tmp_path}/out', '--max_iters=8'])
    assert path.read_bytes().startswith(written)  # append-only
    lines = path.read_text().splitlines()
    assert lines[len(rows)] == '{"kind": "train", "it'  # kept apart, not glued to the next row
    new = [json.loads(x) for x in lines[len(rows) + 1 :]]
    assert [(r['kind'], r['iter']) for r in new] == [('eval', 6), ('train', 6), ('train', 7)] + [
        ('eval', 8)
    ]
    assert [r['loss'] for r in new if r['kind'] == 'train'] == [h['loss'] for h in resumed['train']]

    png = plot_run.main([f'--out_dir={tmp_path}/out'])
    assert png == str(tmp_path / 'out' / 'loss.png')
    data = open(png, 'rb').read()
    assert data.startswith(b'\x89PNG\r\n\x1a\n') and len(data) > 10_000
    assert stat.S_IMODE(os.stat(png).st_mode) == 0o644
    got = plot_run.read_metrics(str(path))
    assert sorted(got['train']) == list(range(8)) and sorted(got['eval']) == [0, 3, 6, 8]
    other = tmp_path / 'curves.png'
    plot_run.main([f'--out_dir={tmp_path}/out', f'--png={other}'])
    assert other.read_bytes().startswith(b'\x89PNG')


def test_plot_run_without_metrics_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match=r'metrics.jsonl not found: --out_dir must be'):
        plot_run.main([f'--out_dir={tmp_path}'])


def test_checkpoints_are_readable_by_collaborators(tiny_args, tmp_path):
    old = os.umask(0o077)  # even under a strict umask
    try:
        train.main(tiny_args + ['--objective=unmasking', '--max_iters=2', '--eval_interval=2'])
    finally:
        os.umask(old)
    for name in ('ckpt.pt', 'ckpt_unmasking_2.pt'):  # the resume file and the named copy
        assert stat.S_IMODE(os.stat(tmp_path / 'out' / name).st_mode) == 0o644, name


def wandb_history(run_dir):
    """The history rows of an offline wandb run, read from its run-*.wandb record log (32 KiB
    blocks of chunks: crc32, length, type 1 full / 2 first / 3 middle / 4 last)."""
    from wandb.proto import wandb_internal_pb2 as pb

    (path,) = glob.glob(os.path.join(run_dir, 'run-*.wandb'))
    data, pos, buf, rows = open(path, 'rb').read(), 7, b'', []
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:  # block trailer: padding
            pos += 32768 - pos % 32768
            continue
        _, n, kind = struct.unpack('<IHB', data[pos : pos + 7])
        buf, pos = buf + data[pos + 7 : pos + 7 + n], pos + 7 + n
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(buf)
            buf = b''
            if record.WhichOneof('record_type') == 'history':
                rows.append(
                    {
                        i.key or '/'.join(i.nested_key): json.loads(i.value_json)
                        for i in record.history.item
                    }
                )
    return rows


def test_wandb_offline_run_logs_train_and_eval_keys(tiny_args, tmp_path, monkeypatch):
    for var in ('WANDB_DIR', 'WANDB_CONFIG_DIR', 'WANDB_CACHE_DIR', 'WANDB_DATA_DIR'):
        monkeypatch.setenv(var, str(tmp_path / 'wandb'))
    monkeypatch.setenv('WANDB_MODE', 'offline')
    monkeypatch.setenv('WANDB_SILENT', 'true')
    hist = train.main(
        tiny_args + ['--wandb_log=True', '--max_iters=3', '--eval_interval=3', '--seed=7']
    )  # main() ends with wandb.finish()
    import wandb

    wandb.teardown()  # wandb's service writes the run file; teardown (as process exit) waits
    (run_dir,) = glob.glob(str(tmp_path / 'wandb' / 'wandb' / 'offline-run-*'))
    rows = wandb_history(run_dir)
    steps = [r for r in rows if 'train/loss' in r]
    assert [r['iter'] for r in steps] == [0, 1, 2]
    assert [r['train/loss'] for r in steps] == pytest.approx([h['loss'] for h in hist['train']])
    assert [r['train/grad_norm'] for r in steps] == pytest.approx(
        [h['grad_norm'] for h in hist['train']]
    )
    evals = [r for r in rows if 'eval/val' in r]
    assert [r['iter'] for r in evals] == [0, 3]
    assert [r['eval/val'] for r in evals] == pytest.approx([e['val'] for e in hist['eval']])
