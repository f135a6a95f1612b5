"""Safe by default (issue 20): a hostile checkpoint or meta.pkl never runs its payload from any
entry point; a write that fails (full disk, read-only, no permission) ends in one line and
loses nothing; one run per out_dir, and a SIGKILLed holder does not block the next run; float16
resume keeps the GradScaler; every format that loaded before still loads."""

import errno
import importlib.util
import json
import os
import pickle
import re
import shlex
import shutil
import signal
import subprocess
import warnings

import numpy as np
import pytest
import torch
from test_checkpoint import nanogpt_checkpoint, tiny_vocab
from test_resume import losses, read_until, start

import chat
import checkpoint
import pathstar
import sample
import train
import utils
from configurator import ConfigError, run_cli
from conftest import ROOT, TINY
from model import GPT, GPTConfig

ONE = ['--max_iters=1', '--eval_interval=100']


class Payload:
    """Unpickling this runs `touch <marker>`: what a hostile file would do, harmlessly."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f'touch {shlex.quote(self.marker)}',))


def script_main(path):
    """main() of a script outside the import path (data/*/prepare.py, bench/*.py)."""
    spec = importlib.util.spec_from_file_location(
        'script_' + path.replace('/', '_')[:-3], os.path.join(ROOT, path)
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def one_line_error(main, argv):
    """The message `main(argv)` ends with under run_cli: one line, 'error: ...'."""
    with pytest.raises(SystemExit) as e:
        run_cli(lambda: main(argv))
    msg = e.value.code
    assert isinstance(msg, str) and msg.startswith('error: ') and '\n' not in msg, msg
    return msg


@pytest.fixture(scope='module')
def files(data_root, tmp_path_factory):
    """Good one-iteration checkpoints (next_token, unmasking) and hostile copies: a checkpoint
    with a payload in its meta (zip and legacy torch.save formats), an out_dir holding one, a
    plain pickle with a payload, a dataset whose meta.pkl carries one, a nanoGPT checkpoint whose
    dataset's meta.pkl does, and a chat JSONL for data/chat/prepare.py."""
    root = tmp_path_factory.mktemp('hostile')
    marker = root / 'PWNED'
    base = TINY + [f'--data_root={data_root}', '--dataset=tiny_char'] + ONE
    for name, objective in (('nt', 'next_token'), ('un', 'unmasking')):
        train.main(base + [f'--objective={objective}', f'--out_dir={root}/{name}'])
    ck = torch.load(root / 'nt' / 'ckpt.pt', weights_only=False)  # our own file: trusted
    ck['meta']['note'] = Payload(marker)
    torch.save(ck, root / 'bad.pt')
    torch.save(ck, root / 'bad_legacy.pt', _use_new_zipfile_serialization=False)
    os.makedirs(root / 'bad_out')
    shutil.copy(root / 'bad.pt', root / 'bad_out' / 'ckpt.pt')
    (root / 'raw.pt').write_bytes(pickle.dumps({'model': Payload(marker)}))
    # datasets: tiny_char with a hostile meta.pkl (as a data_root/dataset and as a .pkl file)
    src = os.path.join(data_root, 'tiny_char')
    with open(os.path.join(src, 'meta.pkl'), 'rb') as f:
        meta = pickle.load(f)
    shutil.copytree(src, root / 'data' / 'hostile')
    (root / 'data' / 'hostile' / 'meta.pkl').write_bytes(
        pickle.dumps({**meta, 'note': Payload(marker)})
    )
    nanogpt_checkpoint(root / 'nanogpt.pt', tiny_vocab(data_root), 'hostile')
    with open(root / 'chat.jsonl', 'w') as f:
        for q in ('hi', 'how are you', 'bye'):
            msgs = [{'role': 'user', 'content': q}, {'role': 'assistant', 'content': 'ok'}]
            f.write(json.dumps({'messages': msgs}) + '\n')
    return root


def test_the_payloads_run_when_unpickled_without_the_guards(files):
    """The control: the hostile files below do run their payload when loaded unsafely, so the
    tests that assert it did not run can fail."""
    marker = files / 'PWNED'
    for load in (
        lambda: torch.load(files / 'bad.pt', weights_only=False),
        lambda: pickle.loads((files / 'data' / 'hostile' / 'meta.pkl').read_bytes()),
    ):
        assert not marker.exists()
        load()
        assert marker.exists()
        marker.unlink()


TRAIN = TINY + ['--data_root={data}', '--dataset=tiny_char', '--out_dir={tmp}/out'] + ONE
HOSTILE_CKPT = [  # (script, argv, the hostile file the message must name)
    ('sample.py', ['--ckpt={f}/bad.pt'], '{f}/bad.pt'),
    ('sample.py', ['--ckpt={f}/bad_legacy.pt'], '{f}/bad_legacy.pt'),
    ('sample.py', ['--out_dir={f}/bad_out'], '{f}/bad_out/ckpt.pt'),
    ('train.py', TRAIN + ['--init_from={f}/bad.pt'], '{f}/bad.pt'),
    (
        'train.py',
        TINY + ['--data_root={data}', '--init_from=resume', '--out_dir={f}/bad_out'],
        '{f}/bad_out/ckpt.pt',
    ),
    (
        'train.py',
        TRAIN + ['--objective=remasking', '--remasking_denoiser={f}/bad.pt'],
        '{f}/bad.pt',
    ),
    (
        'train.py',
        TRAIN
        + ['--objective=hybrid', '--hybrid_wrong_source=self', '--hybrid_denoiser={f}/bad.pt'],
        '{f}/bad.pt',
    ),
    (
        'sample.py',
        ['--ckpt={f}/un', '--mode=diffusion', '--steps=2', '--length=8', '--remask=learned']
        + ['--remasker_ckpt={f}/bad.pt'],
        '{f}/bad.pt',
    ),
    ('pathstar.py', ['--evaluate={f}/bad.pt'], '{f}/bad.pt'),
    (
        'bench/diffusion_eval.py',
        ['--denoiser={f}/bad.pt', '--judge={f}/nt/ckpt.pt'],
        '{f}/bad.pt',
    ),
]
HOSTILE_META = [  # (script, argv, cwd or None): the message names data/hostile/meta.pkl
    (
        'train.py',
        TINY + ONE + ['--data_root={f}/data', '--dataset=hostile', '--out_dir={tmp}/o'],
        None,
    ),
    ('chat.py', ['--dataset={f}/data/hostile'], None),
    (
        'data/chat/prepare.py',
        ['--input={f}/chat.jsonl', '--out_dir={tmp}/c', '--base_meta={f}/data/hostile/meta.pkl'],
        None,
    ),
    ('sample.py', ['--ckpt={f}/nanogpt.pt', '--max_new_tokens=2'], '{f}'),  # its data/<dataset>
    ('bench/sft_eval.py', ['--ckpt={f}/nt/ckpt.pt', '--dataset={f}/data/hostile'], None),
]
MAINS = {'train.py': train.main, 'sample.py': sample.main, 'pathstar.py': pathstar.main}
MAINS['chat.py'] = chat.main


def run_hostile(files, data_root, tmp_path, monkeypatch, script, argv, cwd):
    where = dict(f=files, data=data_root, tmp=tmp_path)
    main = MAINS.get(script) or script_main(script)
    if cwd:
        monkeypatch.chdir(cwd.format(**where))
    msg = one_line_error(main, [a.format(**where) for a in argv])
    assert not (files / 'PWNED').exists(), 'the payload ran'
    return msg, where


@pytest.mark.parametrize(
    'script, argv, bad', HOSTILE_CKPT, ids=[f'{c[0]} {c[1][-1]}' for c in HOSTILE_CKPT]
)
def test_a_hostile_checkpoint_is_refused_unrun_from_every_entry_point(
    files, data_root, tmp_path, monkeypatch, script, argv, bad
):
    msg, where = run_hostile(files, data_root, tmp_path, monkeypatch, script, argv, None)
    assert f"={bad.format(**where)} was not loaded: it contains posix.system" in msg, msg


@pytest.mark.parametrize('script, argv, cwd', HOSTILE_META, ids=[c[0] for c in HOSTILE_META])
def test_a_hostile_meta_pkl_is_refused_unrun_from_every_entry_point(
    files, data_root, tmp_path, monkeypatch, script, argv, cwd
):
    msg, _ = run_hostile(files, data_root, tmp_path, monkeypatch, script, argv, cwd)
    path = os.path.join('data', 'hostile', 'meta.pkl')
    assert re.search(
        rf"{re.escape(path)} was not loaded: it contains posix\.system, not plain", msg
    )


def test_a_plain_pickle_given_as_checkpoint_is_refused_unrun(files):
    with warnings.catch_warnings():
        warnings.simplefilter('error')  # nothing printed before the one line (torch warns here)
        msg = one_line_error(sample.main, [f'--ckpt={files}/raw.pt'])
    assert msg.startswith(f"error: --ckpt={files}/raw.pt: not a readable checkpoint")
    assert not (files / 'PWNED').exists()


def test_meta_pkl_of_plain_data_loads_in_every_pickle_protocol(tmp_path):
    """nanoGPT's meta.pkl (pickle.dump, default protocol) and every plain type this project's
    metas use; protocols 2 and 3 pickle sets and (2) bytes through a function, so they are
    tried with the other types only."""
    base = {'vocab_size': 3, 'itos': {0: 'a', 1: 'b', 2: '\n'}, 'stoi': {'a': 0, 'b': 1, '\n': 2}}
    base.update(N=None, ok=True, f=0.5, rows=[1, 2], span=(0, 3), nested={'k': [{'x': -1}]})
    for protocol in range(2, pickle.HIGHEST_PROTOCOL + 1):
        meta = dict(base, **({'b': b'\x00', 's': {1, 2}} if protocol >= 4 else {}))
        (tmp_path / 'meta.pkl').write_bytes(pickle.dumps(meta, protocol=protocol))
        assert utils.load_meta(str(tmp_path)) == meta, protocol


def test_writers_never_write_a_meta_that_readers_refuse(tmp_path):
    with pytest.raises(TypeError, match=r'plain data only; this one holds numpy.*scalar'):
        utils.write_dataset_dir(str(tmp_path), {'meta.pkl': {'vocab_size': np.int64(3)}})
    assert os.listdir(tmp_path) == []


# ------------------------------------------------------------------------ failed writes
class FailingFile:
    """A file whose writes fail with OSError(err) once `room` bytes are written (a disk that
    fills up); the bytes that fit are written, as a real full disk does."""

    def __init__(self, f, err, room):
        self.f, self.err, self.room = f, err, room

    def write(self, data):
        n = len(memoryview(data).cast('B')) if not isinstance(data, str) else len(data)
        if n > self.room:
            self.f.write(data[: self.room])
            self.room = 0
            raise OSError(self.err, os.strerror(self.err))
        self.room -= n
        return self.f.write(data)

    def __getattr__(self, name):
        return getattr(self.f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()


def failing_open(err, room=0, at_open=False, modes=('wb', 'a')):
    """An open() for monkeypatching a module: files opened in `modes` fail with errno `err`."""

    def fake_open(path, mode='r', *args, **kwargs):
        if mode not in modes:
            return open(path, mode, *args, **kwargs)
        if at_open:
            raise OSError(err, os.strerror(err), str(path))
        return FailingFile(open(path, mode, *args, **kwargs), err, room)

    return fake_open


CAUSES = {
    errno.ENOSPC: 'No space left on device (the disk is full',
    errno.EROFS: 'Read-only file system (a read-only file system',
    errno.EACCES: 'Permission denied (no permission to write there',
}


@pytest.mark.parametrize(
    'err, at_open',
    [(errno.ENOSPC, False), (errno.EROFS, True), (errno.EACCES, True)],
    ids=['ENOSPC mid-write', 'EROFS', 'EACCES'],
)
def test_a_failed_checkpoint_save_is_one_line_and_keeps_the_previous(
    tiny_args, tmp_path, monkeypatch, err, at_open
):
    train.main(tiny_args + ['--max_iters=2', '--eval_interval=2'])
    out = tmp_path / 'out'
    before = (out / 'ckpt.pt').read_bytes()
    monkeypatch.setattr(checkpoint, 'open', failing_open(err, 5000, at_open), raising=False)
    msg = one_line_error(train.main, tiny_args + ['--max_iters=4', '--eval_interval=2'])
    assert msg.startswith(f"error: could not write {out}/ckpt.pt: {CAUSES[err]}")
    assert msg.endswith('); the previous ckpt.pt is unchanged')
    assert (out / 'ckpt.pt').read_bytes() == before
    assert sorted(os.listdir(out)) == ['ckpt.pt', 'metrics.jsonl', 'train.lock']  # no temp file
    monkeypatch.undo()
    train.main(tiny_args + ['--max_iters=4', '--eval_interval=2'])  # room again: it saves
    assert torch.load(out / 'ckpt.pt', weights_only=True)['iter_num'] == 4


def test_a_full_disk_while_logging_metrics_is_one_line_and_keeps_the_rows(
    tiny_args, tmp_path, monkeypatch
):
    train.main(tiny_args + ['--max_iters=2', '--eval_interval=2'])
    path = tmp_path / 'out' / 'metrics.jsonl'
    before = path.read_bytes()
    monkeypatch.setattr(train, 'open', failing_open(errno.ENOSPC, 0, modes=('a',)), raising=False)
    msg = one_line_error(train.main, tiny_args + ['--max_iters=4', '--eval_interval=2'])
    assert msg.startswith(f"error: could not write {path}: No space left on device (the disk")
    assert msg.endswith('its earlier rows are unchanged')
    assert path.read_bytes() == before


def test_a_full_disk_while_writing_a_dataset_is_one_line_and_keeps_the_old_one(
    data_root, tmp_path, monkeypatch
):
    prepare = script_main('data/shakespeare_char/prepare.py')
    args = [f'--input={data_root}/input.txt', f'--out_dir={tmp_path}/ds']
    prepare(args)
    before = {n: (tmp_path / 'ds' / n).read_bytes() for n in os.listdir(tmp_path / 'ds')}
    monkeypatch.setattr(utils, 'open', failing_open(errno.ENOSPC, 10_000), raising=False)
    msg = one_line_error(prepare, args + ['--val_fraction=0.2'])
    assert msg == (
        f"error: could not write {tmp_path}/ds/train.bin: No space left on device (the disk is "
        f"full: free space there or write elsewhere); the files already in {tmp_path}/ds are "
        f"unchanged"
    )
    after = {n: (tmp_path / 'ds' / n).read_bytes() for n in os.listdir(tmp_path / 'ds')}
    assert after == before  # and no .partial folder left


def mount_tmpfs(path, size):
    """A real tmpfs of `size` at path (root only), or skip."""
    os.makedirs(path)
    if os.geteuid() != 0 or shutil.which('mount') is None:
        pytest.skip('a real tmpfs needs root')
    p = subprocess.run(['mount', '-t', 'tmpfs', '-o', f'size={size}', 'tmpfs', str(path)])
    if p.returncode:
        pytest.skip('mount -t tmpfs is not allowed here')


def test_a_real_full_disk(tmp_path, data_root):
    """On a real tmpfs filled to the last byte: a checkpoint, a dataset and a metrics row fail
    with ENOSPC as one WriteError each; what was there is unchanged, no temp file is left."""
    disk = tmp_path / 'disk'
    mount_tmpfs(disk, '2m')
    try:
        model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=32, block_size=16, vocab_size=65))
        opt = torch.optim.AdamW(model.parameters())
        cfg = {'objective': 'next_token'}
        checkpoint.save(str(disk / 'ckpt.pt'), model, opt, cfg, None, 1, 9.0)
        utils.write_dataset_dir(str(disk / 'ds'), {'train.bin': np.arange(99, dtype=np.uint16)})
        metrics = train.Metrics(str(disk))
        metrics.write({'kind': 'train', 'iter': 0})
        before = {p: (disk / p).read_bytes() for p in ('ckpt.pt', 'ds/train.bin', 'metrics.jsonl')}
        with open(disk / 'filler', 'wb') as f:  # fill it
            try:
                while True:
                    f.write(b'\0' * 65536)
                    f.flush()
            except OSError as e:
                assert e.errno == errno.ENOSPC
        full = re.escape('No space left on device (the disk is full')
        with pytest.raises(utils.WriteError, match=rf"^could not write {disk}/ckpt.pt: {full}"):
            checkpoint.save(str(disk / 'ckpt.pt'), model, opt, cfg, None, 2, 8.0)
        with pytest.raises(
            utils.WriteError, match=rf"^could not write {disk}/ds/train.bin: {full}"
        ):
            utils.write_dataset_dir(
                str(disk / 'ds'), {'train.bin': np.arange(9999, dtype=np.uint16)}
            )
        with pytest.raises(
            utils.WriteError, match=rf"^could not write {disk}/metrics.jsonl: {full}"
        ):
            for i in range(1, 10_000):  # the row may fit in the file's last page at first
                metrics.write({'kind': 'train', 'iter': i, 'pad': 'x' * 512})
        metrics.close()
        assert torch.load(disk / 'ckpt.pt', weights_only=True)['iter_num'] == 1
        for p in ('ckpt.pt', 'ds/train.bin'):
            assert (disk / p).read_bytes() == before[p]
        assert (disk / 'metrics.jsonl').read_bytes().startswith(before['metrics.jsonl'])
        assert sorted(os.listdir(disk)) == ['ckpt.pt', 'ds', 'filler', 'metrics.jsonl']
        assert os.listdir(disk / 'ds') == ['train.bin']
    finally:
        subprocess.run(['umount', '--lazy', str(disk)])  # lazy: a file left open is no error


def test_out_dir_that_is_a_file_is_one_line(tiny_args, tmp_path):
    (tmp_path / 'afile').write_text('x')
    args = [a for a in tiny_args if not a.startswith('--out_dir')] + ONE
    msg = one_line_error(train.main, args + [f'--out_dir={tmp_path}/afile'])
    assert msg == (
        f"error: --out_dir={tmp_path}/afile is a file, not a folder: pass a folder (it is "
        f"created if missing)"
    )
    msg = one_line_error(train.main, args + [f'--out_dir={tmp_path}/afile/sub'])
    assert msg.startswith(
        f"error: could not write {tmp_path}/afile/sub/train.lock: Not a directory"
    )


# ------------------------------------------------------------------------ one writer per out_dir
def test_out_dir_lock_is_exclusive_names_its_holder_and_is_released_on_close(tmp_path):
    held = checkpoint.lock_out_dir(str(tmp_path / 'o'))
    with pytest.raises(ConfigError) as e:
        checkpoint.lock_out_dir(str(tmp_path / 'o'))  # another open file description: refused
    assert f"is in use by another run (pid {os.getpid()} on host " in str(e.value)
    held.close()
    checkpoint.lock_out_dir(str(tmp_path / 'o')).close()
    victim = tmp_path / 'victim'  # a planted symlink is not followed (the holder truncates it)
    victim.write_text('keep me')
    os.makedirs(tmp_path / 'p')
    os.symlink(victim, tmp_path / 'p' / 'train.lock')
    with pytest.raises(utils.WriteError, match=r'train\.lock: .* symbolic link, which is not'):
        checkpoint.lock_out_dir(str(tmp_path / 'p'))
    assert victim.read_text() == 'keep me'


def test_a_second_run_fails_at_once_and_a_sigkilled_holder_does_not_block(
    tiny_args, tmp_path, capsys
):
    args = tiny_args + ['--eval_interval=4', '--lr_decay_iters=40', '--dropout=0.1']
    out = str(tmp_path / 'out')
    proc = start(args + ['--max_iters=100000'])  # would run for hours
    lines = []
    read_until(proc, 'saved checkpoint', lines)
    msg = one_line_error(train.main, args + ['--max_iters=8'])  # the same command, again
    assert msg.startswith(f"error: --out_dir={out} is in use by another run (pid {proc.pid} on ")
    assert msg.endswith(
        f"it holds {out}/train.lock): wait for it to end or stop it, or pass another --out_dir"
    )
    # reading is no writing: evaluation and sampling need no lock
    hist = train.main(['--init_from=resume', f'--out_dir={out}', '--eval_only=True'])
    assert len(hist['eval']) == 1
    assert sample.main([f'--out_dir={out}', '--num_samples=1', '--max_new_tokens=3'])
    proc.kill()
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    k = torch.load(os.path.join(out, 'ckpt.pt'), weights_only=True)['iter_num']
    resumed = train.main(['--init_from=resume', f'--out_dir={out}', f'--max_iters={k + 2}'])
    assert [h['iter'] for h in resumed['train']] == [k, k + 1]
    assert open(os.path.join(out, 'train.lock')).read().startswith(f'pid {os.getpid()} on host ')


# ------------------------------------------------------------------------ float16 resume
def test_float16_resume_restores_the_grad_scaler(tiny_args, tmp_path):
    """train.py runs float16 on CPU as float32 maths with an enabled GradScaler (no autocast
    there): its state (scale, growth tracker) goes into the checkpoint and comes back on resume,
    so the resumed run's scaler is the uninterrupted run's."""
    args = tiny_args + ['--dtype=float16', '--eval_interval=3', '--lr_decay_iters=6']
    straight = train.main(args + ['--max_iters=6', f'--out_dir={tmp_path}/straight'])
    want = torch.load(tmp_path / 'straight' / 'ckpt.pt', weights_only=True)['scaler']
    assert want['_growth_tracker'] == 6 and want['scale'] == 65536.0  # no overflow: it counts
    train.main(args + ['--max_iters=3'])
    assert torch.load(tmp_path / 'out' / 'ckpt.pt', weights_only=True)['scaler'] == {
        **want,
        '_growth_tracker': 3,
    }
    resume = ['--init_from=resume', f'--out_dir={tmp_path}/out', '--max_iters=6']
    resumed = train.main(resume + ['--dtype=float16'])  # dtype: the machine's, not resumed
    assert torch.load(tmp_path / 'out' / 'ckpt.pt', weights_only=True)['scaler'] == want
    assert losses(resumed) == pytest.approx(losses(straight, start=3), abs=1e-6)
