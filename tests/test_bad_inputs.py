"""Bad input at the boundary: each case ends in ONE line `error: ...` that names the flag or file,
a non-zero exit and no traceback (configurator.run_cli turns ConfigError/DataError into that).

Most cases run a script's main() in this process through run_cli, exactly as its
`if __name__ == '__main__'` does (test_scripts_run_main_through_run_cli checks every script's
entry point is that one call): an exception run_cli does not convert escapes as itself and fails
the test; a converted one is SystemExit('error: ...'), which Python prints to stderr with exit
status 1. A few cases run a real `python <script> ...` process (a torch import each, so few):
the trainer, and the BPE prepare script, which sets up its own import path."""

import ast
import glob
import importlib.util
import os
import re
import shutil
import subprocess
import sys

import pytest
import torch

import chat
import pathstar
import sample
import train
from configurator import load_config, run_cli
from conftest import ROOT, TINY

SCRIPTS = ['train.py', 'sample.py', 'pathstar.py', 'chat.py', 'export.py'] + sorted(
    os.path.relpath(p, ROOT)
    for pattern in (('data', '*', 'prepare.py'), ('bench', '*.py'))
    for p in glob.glob(os.path.join(ROOT, *pattern))
)


def script_main(script):
    """The main() of a script, imported from its file (prepare.py scripts share a name)."""
    mains = {'train.py': train.main, 'sample.py': sample.main, 'pathstar.py': pathstar.main}
    mains['chat.py'] = chat.main
    if script in mains:
        return mains[script]
    spec = importlib.util.spec_from_file_location(
        script.replace('/', '_')[:-3], os.path.join(ROOT, script)
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


TRAIN = TINY + ['--data_root={data}', '--dataset=tiny_char', '--out_dir={tmp}/out', '--max_iters=2']
BIDIRECTIONAL = ('mlm', 'unmasking', 'remasking', 'hybrid')
NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason='this machine has CUDA')


def case(how, script, args, pattern, marks=(), id=None):
    return pytest.param(how, script, args, pattern, marks=marks, id=id)


def train_case(args, pattern, how='in', marks=(), id=None):
    return case(how, 'train.py', TRAIN + args, pattern, marks, id or ' '.join(args))


def sample_case(args, pattern, how='in', id=None):
    return case(how, 'sample.py', args, pattern, (), id or ' '.join(args[1:]))


CASES = [
    # train.py: the config file, trainer keys (train.check_config), combinations, data, checkpoint
    train_case(
        ['{files}/syntax.py'],
        r"config file '[^']*syntax\.py', line 2: syntax error",
        how='process',
        id='config syntax error',
    ),
    train_case(
        ['{files}/raises.py'],
        r"config file '[^']*raises\.py', line 2 raised ZeroDivisionError",
        id='config raises',
    ),
    train_case(['--eval_interval=0'], r'^error: --eval_interval=0: must be >= 1$'),
    train_case(['--n_embd=30', '--n_head=4'], r'--n_embd=30: must be divisible by --n_head=4'),
    train_case(['--dropout=1.5'], r'--dropout=1\.5: must be in \[0, 1\)'),
    train_case(['--dtype=fp8'], r'--dtype=fp8: choose auto, float32, bfloat16 or float16'),
    train_case(['--device=cuda'], r'--device=cuda: CUDA is not available', marks=NO_CUDA),
    train_case(['--batch_size=0'], r'--batch_size=0: must be >= 1'),
    train_case(['--max_iters=-1'], r'--max_iters=-1: must be >= 0'),
    train_case(['--gradient_accumulation_steps=0'], r'--gradient_accumulation_steps=0: must be'),
    train_case(['--block_size=0'], r'--block_size=0: must be >= 1'),
    *[
        train_case(
            ['--n_future=2', f'--objective={o}'],
            rf'--n_future=2: .*--objective={o} \(bidirectional\)',
        )
        for o in BIDIRECTIONAL
    ],
    train_case(
        ['--pathstar_teacherless=True', '--objective=next_token'],
        r'--pathstar_teacherless=True: only --objective=pathstar reads it',
    ),
    # a flag the run's objective does not read (tiny_char names next_token)
    train_case(
        ['--mlm_probability=0.3'],
        r'^error: --mlm_probability=0\.3: only --objective=mlm reads it \(--objective='
        r'next_token would ignore it\); drop the flag$',
    ),
    train_case(
        ['--objective=mlm', '--mask_eps=0.1'],
        r'--mask_eps=0\.1: only --objective=unmasking, remasking or hybrid reads it',
    ),
    train_case(
        ['--objective=hybrid', '--remasking_temperature=0.5'],
        r'--remasking_temperature=0\.5: only --objective=remasking reads it \(--objective=hybrid',
    ),
    train_case(
        ['--learning_rate=1e-3', '--min_lr=1e-2'],
        r'--min_lr=0\.01: above --learning_rate=0\.001',
    ),
    train_case(
        ['--warmup_iters=100', '--lr_decay_iters=50', '--max_iters=200'],
        r'--lr_decay_iters=50: below --warmup_iters=100',
    ),
    train_case(
        ['--n_future=2', '--future_head_weights=[1.0]'],
        r'--future_head_weights=\[1\.0\]: needs 2 weights',
    ),
    train_case(
        ['--objective=unmasking', '--mask_eps=1.5'], r'--mask_eps=1\.5: .* must be in \[0, 1\]'
    ),
    train_case(
        ['--data_root={files}', '--dataset=empty'],
        r'empty/train\.bin is empty; re-make .*prepare\.py',
        id='empty .bin',
    ),
    train_case(
        ['--data_root={files}', '--dataset=odd'],
        r'odd/train\.bin is 1001 bytes .*truncated; re-make',
        id='odd-sized .bin',
    ),
    train_case(
        ['--init_from={files}/trunc.pt'],
        r'--init_from=[^:]*trunc\.pt: not a readable checkpoint',
        id='truncated --init_from',
    ),
    # sample.py: sample.check_config, then what needs the checkpoint
    sample_case(
        ['--ckpt={files}/trunc.pt'],
        r'--ckpt=[^:]*trunc\.pt: not a readable checkpoint',
        id='truncated --ckpt',
    ),
    sample_case(['--out_dir={nt}', '--top_k=0'], r'--top_k=0: must be >= 1'),
    sample_case(['--out_dir={nt}', '--num_samples=0'], r'--num_samples=0: must be >= 1'),
    sample_case(['--out_dir={nt}', '--temperature=-1'], r'--temperature=-1\.0: must be >= 0'),
    sample_case(['--out_dir={nt}', '--max_new_tokens=-1'], r'--max_new_tokens=-1: must be >= 0'),
    sample_case(
        ['--out_dir={nt}', '--start=FILE:{tmp}/missing.txt'],
        r'--start=FILE:[^:]*missing\.txt: file [^ ]*missing\.txt not found',
    ),
    sample_case(
        ['--out_dir={nt}', '--start=caf\u00e9 \u20ac'],
        r"--start='caf\u00e9 \u20ac': characters '.*\u20ac' are not in the vocabulary",
        id='--start outside the char vocabulary',
    ),
    sample_case(['--out_dir={unm}', '--mode=diffusion', '--steps=0'], r'--steps=0: must be >= 1'),
    sample_case(
        ['--out_dir={unm}', '--mode=diffusion', '--length=100'],
        r"--length=100 exceeds the model's block_size 32",
        id='--length > the denoiser block_size',
    ),
    sample_case(
        ['--out_dir={unm}', '--mode=diffusion', '--remask=random', '--remask_ratio=1.5'],
        r'--remask_ratio=1\.5: must be in \[0, 1\]',
    ),
    # pathstar.py, chat.py, the prepare scripts
    case('in', 'pathstar.py', ['--d=0', '--data_root={tmp}'], r'--d=0 --l=5: need d >= 1'),
    case(
        'in',
        'pathstar.py',
        ['--evaluate={nt}', '--num_eval=5'],
        r'--evaluate=[^:]*: not a path-star checkpoint',
        id='--evaluate a next_token checkpoint',
    ),
    case(
        'in',
        'chat.py',
        ['--dataset={data}/tiny_char'],
        r'tiny_char/meta\.pkl has no chat special tokens',
        id='chat.py on a non-chat dataset',
    ),
    case(
        'process',
        'data/shakespeare/prepare.py',
        ['--input={data}/input.txt', '--bpe_dir={tmp}/nope', '--out_dir={tmp}/bpe'],
        r'--bpe_dir=[^:]*nope: vocab\.bpe not found',
        id='shakespeare --bpe_dir',
    ),
    case('in', 'pathstar.py', ['--nope=1'], r'unrecognized arguments: --nope=1 \(see --help\)$'),
    case(
        'process',
        'bench/pathstar_gen.py',
        ['--N=many'],
        r"^error: pathstar_gen\.py: argument --N: invalid int value: 'many' \(see --help\)$",
        id='bench argparse flag',
    ),
    case('in', 'bench/throughput.py', ['--nope=1'], r"unknown config key 'nope'", id='bench flag'),
    case(
        'in',
        'bench/ddp_check.py',
        ['--batch_sise=4'],
        r"flag '--batch_sise=4': unknown config key 'batch_sise'\. Did you mean: batch_size",
        id='bench flag passed to train.py',
    ),
    case(
        'in',
        'data/shakespeare_char/prepare.py',
        ['--input={tmp}/missing.txt', '--out_dir={tmp}/char'],
        r'--input=[^ ]*missing\.txt not found',
        id='shakespeare_char --input',
    ),
]


@pytest.fixture(scope='module')
def files(data_root, tmp_path_factory):
    """Two tiny checkpoints (next_token, unmasking) and broken inputs: a truncated checkpoint,
    config files with a syntax error and with a raising line, datasets with an empty and an
    odd-sized train.bin."""
    root = tmp_path_factory.mktemp('bad')
    base = TINY + [f'--data_root={data_root}', '--dataset=tiny_char', '--eval_iters=1']
    for name, objective in (('nt', 'next_token'), ('unm', 'unmasking')):
        train.main(base + [f'--objective={objective}', '--max_iters=1', f'--out_dir={root}/{name}'])
    good = (root / 'nt' / 'ckpt.pt').read_bytes()
    (root / 'trunc.pt').write_bytes(good[: len(good) // 2])
    (root / 'syntax.py').write_text('batch_size = 4\nlearning_rate = = 1e-3\n')
    (root / 'raises.py').write_text('batch_size = 4\nmax_iters = 10 // 0\n')
    src = os.path.join(data_root, 'tiny_char')
    for name, train_bytes in (('empty', b''), ('odd', b'\x01' * 1001)):
        os.makedirs(root / name)
        for f in ('meta.pkl', 'val.bin'):
            shutil.copy(os.path.join(src, f), root / name / f)
        (root / name / 'train.bin').write_bytes(train_bytes)
    return str(root)


@pytest.mark.parametrize('how, script, args, pattern', CASES)
def test_bad_input_ends_in_one_line_naming_it(
    how, script, args, pattern, files, data_root, tmp_path, capfd
):
    where = dict(files=files, data=data_root, tmp=tmp_path, nt=f'{files}/nt', unm=f'{files}/unm')
    argv = [a.format(**where) for a in args]
    if how == 'process':
        p = subprocess.run(
            [sys.executable, script, *argv],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
            env=dict(os.environ, OMP_NUM_THREADS='1', WANDB_MODE='disabled'),
        )
        status, output = p.returncode, p.stdout + p.stderr
        message = p.stderr.strip().splitlines()[-1] if p.stderr.strip() else ''
        assert p.stderr.strip() == message, p.stderr  # stderr holds that one line only
    else:
        with pytest.raises(SystemExit) as e:  # anything else escapes and fails the test
            run_cli(lambda: script_main(script)(argv))
        message = e.value.code
        assert isinstance(message, str), message  # SystemExit(str): printed, exit status 1
        status, output = 1, ''.join(capfd.readouterr()) + message
    assert status != 0
    assert 'Traceback' not in output
    assert message.startswith('error: ') and '\n' not in message, message
    assert re.search(pattern, message), message


def test_shipped_configs_pass_the_checks():
    """check_config rejects only what cannot mean anything: every config/*.py passes."""
    paths = sorted(glob.glob(os.path.join(ROOT, 'config', '*.py')))
    assert len(paths) >= 10
    for path in paths:
        cfg, _ = load_config(train.DEFAULTS, [path, '--device=cpu'])
        train.check_config(cfg)
    cfg, _ = load_config(sample.DEFAULTS, [])
    sample.check_config(cfg)


@pytest.mark.parametrize('script', SCRIPTS)
def test_scripts_run_main_through_run_cli(script):
    """Each script's `if __name__ == '__main__':` block is exactly `run_cli(main)`, so the
    in-process cases above are what `python <script>` does."""
    tree = ast.parse(open(os.path.join(ROOT, script)).read())
    blocks = [
        n.body
        for n in tree.body
        if isinstance(n, ast.If) and ast.unparse(n.test) == "__name__ == '__main__'"
    ]
    assert [[ast.unparse(s) for s in b] for b in blocks] == [['run_cli(main)']]
