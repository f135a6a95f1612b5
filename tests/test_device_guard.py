"""The device guard: code on the model's device makes every tensor where its inputs live.

Each test runs device code with the DEFAULT device set to 'meta' while the model and its inputs
are explicitly on the CPU. A tensor made without a device (torch.arange(n), torch.rand(shape,
generator=cpu_gen), torch.zeros(2)) then lands on 'meta', and using it with the CPU tensors
fails. On a GPU the same line would have made a host tensor: a device-mixing crash, or a silent
host round trip. Batch sources are host code by design: they build on the CPU explicitly
(batches.Source.draw). Covered: the sampler in every order and remasking mode, every objective's
training step and evaluation end to end (train.main), the frozen-denoiser drafts, sample.py.
"""

import contextlib
import importlib.util
import io
import json

import pytest
import torch
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

import diffusion
import pathstar
import sample
import train
from conftest import ROOT, TINY
from model import GPT, GPTConfig

_spec = importlib.util.spec_from_file_location('chat_prepare', f'{ROOT}/data/chat/prepare.py')
chat_prepare = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(chat_prepare)


class OneDevicePerOp(TorchFunctionMode):
    """Every torch call sees its tensors on one device (0-d CPU tensors excepted: CUDA ops take
    them as scalars). Needed beside the 'meta' default: some CPU kernels read a meta argument
    without complaint (scatter_ of a meta src into a CPU tensor does not raise)."""

    CROSSING = {torch.Tensor.copy_}  # copies between devices on purpose

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func not in self.CROSSING:
            devices = {
                t.device
                for t in tree_flatten((args, kwargs))[0]
                if isinstance(t, torch.Tensor) and not (t.dim() == 0 and t.device.type == 'cpu')
            }
            if len(devices) > 1:
                raise RuntimeError(f"{getattr(func, '__name__', func)} mixes devices {devices}")
        return func(*args, **kwargs)


@contextlib.contextmanager
def guard():
    """Default device 'meta' and one device per op (both restored afterwards)."""
    with torch.device('meta'), OneDevicePerOp():
        yield


def old_topk_mask(key, k):
    """diffusion._topk_mask as it was: the ranks made with torch.arange on the default device."""
    order = key.argsort(dim=1, descending=True)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(key.size(1)).expand_as(order).contiguous())
    return (rank < k[:, None]) & torch.isfinite(key)


def test_the_guard_fails_on_the_old_topk_mask_and_passes_on_the_new_one():
    key, k = torch.randn(3, 7), torch.tensor([1, 2, 3])
    want = old_topk_mask(key, k)  # right on one device
    with guard(), pytest.raises((RuntimeError, NotImplementedError)):
        old_topk_mask(key, k)
    with guard():
        got = diffusion._topk_mask(key, k)
    assert torch.equal(got, want)


def tiny_denoiser(vocab, seed):
    torch.manual_seed(seed)
    with torch.device('cpu'):
        return GPT(
            GPTConfig(block_size=12, vocab_size=vocab, n_layer=1, n_head=2, n_embd=16, causal=False)
        ).eval()


@pytest.mark.parametrize('order', diffusion.ORDERS)
@pytest.mark.parametrize('remask', diffusion.REMASKS)
def test_sampler_makes_its_tensors_on_the_canvas_device(order, remask):
    base, mask_id, wrong_id = 10, 10, 11
    model, remasker = tiny_denoiser(12, 0), tiny_denoiser(12, 1)
    canvas = torch.full((3, 12), mask_id, device='cpu')
    canvas[:, :2] = 4  # a prompt
    for temperature, score_t, block_len in ((1.0, 0.0, 0), (0.0, 0.5, 5)):
        with guard():
            x, info = diffusion.diffusion_sample(
                model,
                canvas,
                8,
                mask_id,
                base,
                order=order,
                temperature=temperature,
                score_temperature=score_t,
                block_len=block_len,
                remask=remask,
                remask_ratio=0.5,
                remasker=remasker,
                wrong_id=wrong_id,
                remask_threshold=0.0,
                attention_mask=torch.ones(3, 12, dtype=torch.bool, device='cpu'),
                gen=torch.Generator().manual_seed(0),
            )
        assert x.device.type == 'cpu' and not (x == mask_id).any()
        assert info['nfe'] == 8 * (2 if remask == 'learned' else 1) - (remask == 'learned')


@pytest.fixture(scope='module')
def roots(data_root, tmp_path_factory):
    """data_root (tiny_char) plus a small path-star dataset and a chat dataset beside it."""
    pathstar.main(
        ['--d=2', '--l=4', '--N=20', '--num_train=200', '--num_val=40']
        + [f'--data_root={data_root}', '--name=ps']
    )
    tmp = tmp_path_factory.mktemp('chat')
    conv = {
        'messages': [
            {'role': 'user', 'content': 'hi there'},
            {'role': 'assistant', 'content': 'hello you'},
        ]
    }
    src = tmp / 'chat.jsonl'
    src.write_text(''.join(json.dumps(conv) + '\n' for _ in range(40)))
    chat_prepare.main(
        ['--input', str(src), '--out_dir', f'{data_root}/chat', '--val_fraction', '0.25']
    )
    return data_root


def run_guarded(args):
    with guard(), contextlib.redirect_stdout(io.StringIO()):
        return train.main(args)


OBJECTIVES = [
    ('next_token', 'tiny_char', []),
    ('pathstar', 'ps', ['--pathstar_eval_rows=8']),
    ('mlm', 'tiny_char', []),
    ('sft', 'chat', ['--block_size=16']),
    ('unmasking', 'ps', ['--diffusion_eval_rows=8']),
    ('unmasking', 'tiny_char', ['--unmasking_loss=inv_t']),
    ('remasking', 'tiny_char', []),
    ('hybrid', 'ps', []),
]


@pytest.mark.parametrize('objective,dataset,extra', OBJECTIVES)
def test_every_objective_trains_and_evaluates_under_the_guard(
    roots, tmp_path, objective, dataset, extra
):
    args = TINY + [f'--data_root={roots}', f'--dataset={dataset}', f'--objective={objective}']
    hist = run_guarded(
        args
        + extra
        + ['--max_iters=2', '--eval_interval=2', '--eval_iters=1', f'--out_dir={tmp_path}/o']
    )
    assert [e['iter'] for e in hist['eval']] == [0, 2]
    assert all(torch.isfinite(torch.tensor(h['loss'])) for h in hist['train'])


@pytest.mark.parametrize(
    'objective,flag', [('remasking', 'remasking_denoiser'), ('hybrid', 'hybrid_denoiser')]
)
def test_frozen_denoiser_drafts_and_sampling_under_the_guard(roots, tmp_path, objective, flag):
    base = TINY + [f'--data_root={roots}', '--dataset=tiny_char', '--max_iters=2']
    base += ['--eval_interval=2', '--eval_iters=1']
    run_guarded(base + ['--objective=unmasking', f'--out_dir={tmp_path}/den'])
    extra = ['--hybrid_wrong_source=self'] if objective == 'hybrid' else []
    hist = run_guarded(
        base
        + [
            f'--objective={objective}',
            f'--{flag}={tmp_path}/den',
            *extra,
            f'--out_dir={tmp_path}/r',
        ]
    )
    assert len(hist['train']) == 2
    with guard(), contextlib.redirect_stdout(io.StringIO()):
        sample.main(
            [
                f'--out_dir={tmp_path}/den',
                '--mode=diffusion',
                '--num_samples=2',
                '--steps=4',
                '--start=',
            ]
        )
    if objective == 'hybrid':
        with guard(), contextlib.redirect_stdout(io.StringIO()):
            sample.main(
                [
                    f'--out_dir={tmp_path}/r',
                    '--mode=diffusion',
                    '--num_samples=2',
                    '--steps=4',
                    '--remask=self',
                    '--start=',
                ]
            )


def test_next_token_sampling_under_the_guard(roots, tmp_path):
    base = TINY + [f'--data_root={roots}', '--dataset=tiny_char', '--max_iters=1', '--eval_iters=1']
    run_guarded(base + [f'--out_dir={tmp_path}/nt', '--n_future=2'])
    for extra in ([], ['--speculative=True']):
        with guard(), contextlib.redirect_stdout(io.StringIO()):
            outs = sample.main(
                [f'--out_dir={tmp_path}/nt', '--num_samples=1', '--max_new_tokens=6', *extra]
            )
        assert len(outs) == 1
