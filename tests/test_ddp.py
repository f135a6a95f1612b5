"""DDP on CPU (gloo), every objective: `torchrun --nproc_per_node=2` with 1 micro-batch per rank
gives the losses of 1 process with 2 micro-batches (same global batch, same data: micro-batch g
of a step is seeded by (seed, iter, g)); ranks draw different data; only rank 0 writes."""

import json
import os
import subprocess
import sys

import pytest

import pathstar
import train
from conftest import ROOT, shakespeare_text


@pytest.fixture(scope='module')
def ddp_data(data_root):
    """data_root plus a small path-star dataset ('ps') and a small chat dataset ('chat')."""
    pathstar.main(
        [
            '--mode=incontext',
            '--d=2',
            '--l=4',
            '--N=20',
            '--num_train=400',
            '--num_val=50',
            f'--data_root={data_root}',
            '--name=ps',
        ]
    )
    lines = shakespeare_text(20_000).splitlines()
    convs = [
        {'messages': [{'role': 'user', 'content': q}, {'role': 'assistant', 'content': a}]}
        for q, a in zip(lines[0::2], lines[1::2])
        if q and a
    ]
    src = os.path.join(data_root, 'chat.jsonl')
    with open(src, 'w') as f:
        f.writelines(json.dumps(c) + '\n' for c in convs)
    subprocess.run(
        [
            sys.executable,
            os.path.join(ROOT, 'data', 'chat', 'prepare.py'),
            f'--input={src}',
            f'--out_dir={data_root}/chat',
        ],
        check=True,
        capture_output=True,
    )
    return data_root


CASES = {
    'next_token': ['--dataset=tiny_char'],
    'pathstar': ['--dataset=ps', '--block_size=24'],
    'sft': ['--dataset=chat'],
    'mlm': ['--dataset=tiny_char', '--mlm_packing=sep'],
    'unmasking': ['--dataset=tiny_char'],
    'remasking': ['--dataset=tiny_char', '--remasking_loss_type=all_positions'],
}


@pytest.mark.parametrize('objective', list(CASES))
def test_ddp_matches_gradient_accumulation(objective, ddp_data, tiny_args, tmp_path):
    common = (
        [a for a in tiny_args if not a.startswith('--out_dir')]
        + CASES[objective]
        + [
            f'--objective={objective}',
            f'--data_root={ddp_data}',
            '--max_iters=4',
            '--eval_interval=4',
            '--eval_iters=1',
            '--gradient_accumulation_steps=2',
        ]
    )
    single = [h['loss'] for h in train.main(common + [f'--out_dir={tmp_path}/single'])['train']]
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=ROOT)
    cmd = (
        [
            sys.executable,
            '-m',
            'torch.distributed.run',
            '--standalone',
            '--nproc_per_node=2',
            os.path.join(ROOT, 'train.py'),
        ]
        + common
        + [f'--out_dir={tmp_path}/ddp']
    )
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-6000:]
    ddp = [
        float(line.split('loss ')[1].split(',')[0])
        for line in out.stdout.splitlines()
        if line.startswith('iter ')
    ]
    assert len(ddp) == 4 and len(single) == 4
    assert ddp == pytest.approx(single, abs=1e-4)
    assert out.stdout.count('saved checkpoint') == 1  # rank 0 only, once at the end
    assert out.stdout.count('tokens per iteration') == 1  # rank 0 logs


def test_ranks_draw_different_micro_batches(data_root):
    """Micro-batch g of a step is seeded by (seed, iter, g): rank 1's differs from rank 0's."""
    import batches

    cfg = dict(train.DEFAULTS, data_root=data_root, dataset='tiny_char', block_size=32)
    src = batches.make_source(cfg, seed=0)
    draws = []
    for g in (0, 1):
        src.gen.manual_seed(train.mix_seed(cfg['seed'], 7, g))
        draws.append(src.get_batch('train', 4)['x'])
    assert not (draws[0] == draws[1]).all()
