"""--help / -h: every config key with its default and one line of meaning, from the defaults."""

import os
import subprocess
import sys

import pytest

import batches
import diffusion
import sample
import train
from configurator import format_help
from conftest import ROOT


def help_keys(groups):
    keys = [k for _, helps in groups for k in helps]
    assert len(keys) == len(set(keys)), "a key is in two help groups"
    return set(keys)


def test_every_train_key_has_one_line_of_help_and_no_other_key_has():
    assert help_keys(train.help_groups()) == set(train.DEFAULTS)
    assert set(train.OBJECTIVE_HELP) == set(batches.all_defaults())
    assert help_keys(train.HELP.items()) == set(train.DEFAULTS) - set(batches.all_defaults())
    for _, helps in train.help_groups():
        for k, text in helps.items():
            assert text.strip() and '\n' not in text, k


def test_every_sample_key_has_one_line_of_help_and_no_other_key_has():
    assert help_keys(sample.HELP_GROUPS) == set(sample.DEFAULTS)
    assert set(diffusion.SAMPLE_HELP) == set(diffusion.SAMPLE_DEFAULTS)
    for _, helps in sample.HELP_GROUPS:
        assert all(t.strip() and '\n' not in t for t in helps.values())


def test_objective_keys_are_grouped_by_the_objectives_that_read_them():
    groups = dict(train.help_groups())
    assert list(groups)[:5] == list(train.HELP)
    assert set(groups['objective mlm']) == set(batches.MaskedLM.defaults)
    assert set(groups['objective sft']) == {'use_loss_mask'}
    assert 'pathstar_online' in groups['objectives pathstar, unmasking, remasking, hybrid']
    assert set(groups['objectives unmasking, remasking, hybrid']) == set(
        batches.MaskedSource.defaults
    ) - {'pathstar_online'}


def flag_lines(text):
    return {
        line.split()[0].split('=')[0][2:]: line
        for line in text.splitlines()
        if line.startswith('  --')
    }


@pytest.mark.parametrize('script, flag', [('train.py', '--help'), ('sample.py', '-h')])
def test_help_exits_0_printing_every_key_with_its_default(script, flag):
    out = subprocess.run(
        [sys.executable, os.path.join(ROOT, script), flag],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ, OMP_NUM_THREADS='1'),
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.startswith(f'usage: python {script}')
    defaults = train.DEFAULTS if script == 'train.py' else sample.DEFAULTS
    lines = flag_lines(out.stdout)
    assert set(lines) == set(defaults)
    assert 'undocumented' not in out.stdout and 'Traceback' not in out.stderr
    if script == 'train.py':
        assert (
            '--batch_size=12 ' in lines['batch_size'] and 'per micro-batch' in lines['batch_size']
        )
        assert "--remasking_denoiser=''" in lines['remasking_denoiser']
        assert out.stdout.index('\ntrainer / I-O:') < out.stdout.index('\nobjective mlm:')
    else:
        assert "--start='\\n'" in lines['start'] and '--steps=64' in lines['steps']
        assert out.stdout.index('\nsampling:') < out.stdout.index('\ndiffusion sampling')


@pytest.mark.parametrize('flag', ['-h', '--help'])
def test_help_anywhere_in_the_arguments_wins_in_process(flag, capsys, tmp_path):
    for main in (train.main, sample.main):
        with pytest.raises(SystemExit) as e:
            main(['--batch_size=3', flag, '--nonsense=1'])
        assert e.value.code == 0
        assert '--seed=1337' in capsys.readouterr().out
    assert not os.listdir(tmp_path)  # nothing ran


def test_format_help_lists_a_key_without_help_instead_of_hiding_it():
    text = format_help('usage: x', {'a': 1, 'name': '', 'b': 'x y'}, [('g', {'a': 'the a'})])
    assert text.splitlines() == [
        'usage: x',
        '',
        'g:',
        f"{'  --a=1':<34}the a",
        '',
        'undocumented:',
        "  --name=''",
        "  --b='x y'",
    ]
