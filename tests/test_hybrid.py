"""Hybrid objective (one model drafts [MASK] positions and flags wrong tokens in the same pass):
corruption and targets (diffusion.hybrid_corrupt, batches.Hybrid), remask='self' in the sampler
(one NFE per step), sample.py / bench checks, and a train.py smoke run."""

import contextlib
import io
import math
import os
import re
import sys

import pytest
import torch

import batches
import diffusion
import sample
import train
from configurator import ConfigError, run_cli
from conftest import TINY, ProposeToken, base_vocab, source_of
from model import GPT, GPTConfig


def make_source(data_root, objective='hybrid', **over):
    return source_of(data_root, objective, **over)


@pytest.fixture(scope='module')
def runs(data_root, tmp_path_factory):
    """Tiny checkpoints shared by the tests below: a hybrid run (6 iterations, evaluated at 0, 3
    and 6; its history and printed log kept), an unmasking denoiser and a next-token judge."""
    root = tmp_path_factory.mktemp('hybrid_runs')
    base = TINY + [f'--data_root={data_root}', '--dataset=tiny_char']
    log = io.StringIO()
    with contextlib.redirect_stdout(log):
        hist = train.main(
            base
            + ['--objective=hybrid', '--max_iters=6', '--eval_interval=3', f'--out_dir={root}/hy']
        )
    train.main(
        base
        + ['--objective=unmasking', '--max_iters=1', '--eval_interval=100', f'--out_dir={root}/un']
    )
    train.main(base + ['--max_iters=1', '--eval_interval=100', f'--out_dir={root}/judge'])
    return dict(
        root=root,
        hist=hist,
        log=log.getvalue(),
        hybrid=f'{root}/hy/ckpt.pt',
        unmasking=f'{root}/un/ckpt.pt',
        judge=f'{root}/judge/ckpt.pt',
    )


# ---- (a) corruption and targets ----


def test_hybrid_corrupt_on_a_hand_built_batch():
    M, W = 10, 11  # mask and wrong ids of a base vocabulary of 10
    tok = torch.tensor([[1, 2, 3, 4, 5, 6, 7, 8], [8, 7, 6, 5, 4, 3, 2, 1]])
    maskable = torch.tensor(
        [
            [0, 1, 1, 1, 1, 1, 1, 0],  # 0, 7: prompt / PAD
            [1, 1, 1, 1, 1, 1, 0, 0],
        ],
        dtype=torch.bool,
    )
    chosen = torch.tensor([[0, 1, 1, 1, 0, 1, 0, 0], [1, 1, 0, 1, 1, 0, 0, 0]], dtype=torch.bool)
    to_wrong = torch.tensor([[0, 0, 1, 1, 0, 0, 0, 0], [0, 1, 0, 0, 1, 0, 0, 0]], dtype=torch.bool)
    proposals = torch.tensor(
        [
            [9, 9, 0, 4, 9, 9, 9, 9],  # (0, 3): proposes the original 4
            [9, 0, 9, 9, 9, 9, 9, 9],
        ]
    )
    x, y, masked, wrong = diffusion.hybrid_corrupt(tok, maskable, chosen, to_wrong, proposals, M, W)
    assert x.tolist() == [[1, M, 0, 4, 5, M, 7, 8], [M, 0, 6, M, 9, 3, 2, 1]]
    assert y.tolist() == [[-1, 2, W, 4, 5, 6, 7, -1], [8, W, 6, 5, W, 3, -1, -1]]
    assert masked.tolist() == (chosen & ~to_wrong).tolist()
    assert wrong.tolist() == [[0, 0, 1, 0, 0, 0, 0, 0], [0, 1, 0, 0, 1, 0, 0, 0]]


def test_row_batch_targets_with_prompt_and_pad(rows_root):
    src = make_source(rows_root, dataset='rows', block_size=16, hybrid_wrong_frac=0.3)
    V, M, W = 20, 20, 21
    assert (src.vocab_size, src.mask_id, src.wrong_id) == (22, M, W) and src.causal is False
    b = src.get_batch('train', 400, torch.Generator().manual_seed(0))
    tok = src.clean('train', 400, torch.Generator().manual_seed(0))[0]
    x, y, masked, wrong, maskable = b['x'], b['y'], b['masked'], b['wrong'], b['maskable']
    pos = torch.arange(12)
    assert torch.equal(maskable, ((pos >= 6) & (pos < 10)) & (tok != 1))
    assert torch.equal(b['attention_mask'], tok != 1)
    assert (y[~maskable] == -1).all() and torch.equal(x[~maskable], tok[~maskable])  # prompt, PAD
    assert torch.equal(x == M, masked) and torch.equal(y[masked], tok[masked])
    assert torch.equal(y == W, wrong) and (x[wrong] != tok[wrong]).all() and x[wrong].max() < V
    clean = maskable & ~masked & ~wrong
    assert torch.equal(x[clean], tok[clean]) and torch.equal(y[clean], tok[clean])
    assert masked.any() and wrong.any() and clean.any()
    assert not (masked | wrong)[tok == 1].any()


def test_context_other_tokens_draw_from_the_rows_prompt():
    V = 30
    tok = torch.tensor([[3, 4, 5, 3, 9, 9, 9], [7, 7, 7, 7, 7, 7, 7], [1, 2, 3, 4, 5, 6, 7]])
    context = torch.tensor(
        [[1, 1, 1, 1, 0, 0, 0], [1, 1, 1, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0, 0]], dtype=torch.bool
    )
    seen = torch.zeros(3, 7, V, dtype=torch.bool)
    for seed in range(300):
        out = diffusion.context_other_tokens(tok, context, V, torch.Generator().manual_seed(seed))
        assert (out != tok).all() and (out >= 0).all() and (out < V).all()
        seen |= torch.nn.functional.one_hot(out, V).bool()
    # row 0: at the answer positions (holding 9) exactly the prompt's tokens 3, 4, 5 (never a
    # fallback: each differs from 9); at a prompt position holding 3 the other prompt tokens, and
    # a uniform fallback when the draw is 3 itself (1 draw in 2: positions 0 and 3 hold 3)
    assert [seen[0, p].nonzero().flatten().tolist() for p in (4, 5, 6)] == [[3, 4, 5]] * 3
    assert seen[0, 0, [4, 5]].all() and seen[0, 0].sum() > 15
    # row 1: the prompt holds only the original token: uniform over the other V - 1 tokens
    assert seen[1].sum(-1).min() > 15
    # row 2 has no prompt: uniform as well
    assert seen[2].sum(-1).min() > 15


def test_context_source_wrong_tokens_come_from_the_prompt(rows_root):
    src = make_source(
        rows_root,
        dataset='rows',
        block_size=16,
        hybrid_wrong_frac=0.5,
        hybrid_wrong_source='context',
    )
    b = src.get_batch('train', 400, torch.Generator().manual_seed(0))
    tok = src.clean('train', 400, torch.Generator().manual_seed(0))[0]
    wrong, maskable = b['wrong'], b['maskable']
    prompt = ~maskable & b['attention_mask']  # (B, T)
    assert (
        wrong.any()
        and (b['x'][wrong] != tok[wrong]).all()
        and (b['y'][wrong] == src.wrong_id).all()
    )
    # a wrong token is one the row's prompt holds, unless every prompt token equals the original
    in_prompt = ((b['x'][:, :, None] == tok[:, None, :]) & prompt[:, None, :]).any(-1)  # (B, T)
    other = ((tok[:, None, :] != tok[:, :, None]) & prompt[:, None, :]).any(-1)
    # a fallback only after drawing the original
    assert in_prompt[wrong & other].float().mean() > 0.9
    uni = make_source(rows_root, dataset='rows', block_size=16, hybrid_wrong_frac=0.5)
    ub = uni.get_batch('train', 400, torch.Generator().manual_seed(0))
    u_in = ((ub['x'][:, :, None] == tok[:, None, :]) & prompt[:, None, :]).any(-1)
    assert in_prompt[wrong].float().mean() > u_in[ub['wrong']].float().mean() + 0.2


def test_context_source_needs_rows(data_root):
    with pytest.raises(ConfigError, match='context draws wrong tokens from a row'):
        make_source(data_root, hybrid_wrong_source='context')


@pytest.mark.parametrize('frac', [0.0, 0.2, 0.5])
def test_wrong_share_of_chosen_positions_is_hybrid_wrong_frac(data_root, frac):
    V = base_vocab(data_root)
    src = make_source(data_root, hybrid_wrong_frac=frac)
    b = src.get_batch('train', 1024, torch.Generator().manual_seed(5))
    tok = src.clean('train', 1024, torch.Generator().manual_seed(5))[0]
    chosen = b['masked'] | b['wrong']
    assert not (b['masked'] & b['wrong']).any()
    share = float(b['wrong'].sum() / chosen.sum())  # ~16k chosen positions: s.d. <= 0.004
    assert share == pytest.approx(frac, abs=0.015)
    assert (b['x'][b['wrong']] != tok[b['wrong']]).all() and (b['x'][b['wrong']] < V).all()
    assert chosen.float().sum() / (b['t'].sum() * 32) == pytest.approx(1.0, abs=0.03)  # ratio t
    # every maskable position is supervised: the original except at wrong positions
    assert torch.equal(b['y'], torch.where(b['wrong'], V + 1, tok))
    src.observe()  # a training batch, as train.py says
    d = src.diagnostics()
    assert d['wrong_frac'] == pytest.approx(float(b['wrong'].float().mean()))
    assert d['mask_frac'] == pytest.approx(float(b['masked'].float().mean()))
    src.get_batch('val', 8, torch.Generator().manual_seed(0))
    assert src.diagnostics() == d  # val batches leave the training diagnostics alone
    if frac == 0.0:  # no wrong tokens: the denoiser's inputs, drawn from the same randomness
        un = make_source(data_root, 'unmasking').get_batch(
            'train', 1024, torch.Generator().manual_seed(5)
        )
        assert isinstance(src, batches.Hybrid) and torch.equal(b['x'], un['x'])
        assert torch.equal(b['y'][b['masked']], un['y'][un['y'] != -1])


def test_self_source_uses_the_frozen_denoisers_drafts(data_root, runs):
    V = base_vocab(data_root)
    src = make_source(
        data_root,
        hybrid_wrong_frac=0.5,
        hybrid_wrong_source='self',
        hybrid_denoiser=runs['unmasking'],
    )
    assert src.run_tag == 'hybrid_self' and src.meta['hybrid_denoiser'] == runs['unmasking']

    src.denoiser = ProposeToken(5, V + 2)  # a "denoiser" that always proposes token 5
    b = src.get_batch('train', 64, torch.Generator().manual_seed(4))
    tok = src.clean('train', 64, torch.Generator().manual_seed(4))[0]
    chosen = src.denoiser.seen == V  # the denoiser saw every chosen position as [MASK]
    assert torch.equal(src.denoiser.seen[~chosen], tok[~chosen])
    assert torch.equal(chosen, b['masked'] | (chosen & (b['x'] != V)))
    drafted = chosen & ~b['masked']  # positions given the draft instead of [MASK]
    assert (b['x'][drafted] == 5).all() and torch.equal(b['x'][~chosen], tok[~chosen])
    assert torch.equal(b['wrong'], drafted & (tok != 5))
    same = drafted & (tok == 5)  # a draft equal to the original: clean, target the original
    assert same.any() and (b['y'][same] == 5).all()
    assert torch.equal(b['y'], torch.where(b['wrong'], V + 1, tok))
    # a hybrid checkpoint is a valid frozen denoiser too (its drafts exclude [MASK] and WRONG)
    src = make_source(data_root, hybrid_wrong_source='self', hybrid_denoiser=runs['hybrid'])
    b = src.get_batch('train', 16, torch.Generator().manual_seed(0))
    assert b['x'].max() <= V and (b['x'][b['wrong']] < V).all()


@pytest.mark.parametrize(
    'over, match',
    [
        (dict(hybrid_wrong_frac=1.0), 'hybrid_wrong_frac=1.0'),
        (dict(hybrid_wrong_frac=-0.1), 'hybrid_wrong_frac=-0.1'),
        (dict(hybrid_wrong_source='model'), "hybrid_wrong_source='model'"),
        (dict(hybrid_wrong_source='self'), "'self' needs a frozen denoiser"),
        (dict(hybrid_denoiser='x.pt'), "'uniform' takes none"),
    ],
)
def test_bad_config_is_a_config_error(data_root, over, match):
    with pytest.raises(ConfigError, match=match):
        make_source(data_root, **over)


def test_a_causal_checkpoint_is_not_a_denoiser(data_root, runs):
    with pytest.raises(ConfigError, match='not an unmasking or hybrid checkpoint: it is a next'):
        make_source(data_root, hybrid_wrong_source='self', hybrid_denoiser=runs['judge'])


# ---- (b) remask='self' in the sampler ----

L, BASE, MASK, WRONG = 12, 5, 5, 6


class FakeHybrid(torch.nn.Module):
    """Fixed random draft logits over the base vocabulary; the WRONG logit is +30 at `flag`
    positions (where the input is not [MASK], unless flag_masked) and -30 elsewhere; the [MASK]
    logit is very low; position 2 is the most confident (token 0), so confidence and margin
    order commit it first. Records every input."""

    def __init__(self, flag=(), flag_masked=False):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.logits = torch.cat(
            [torch.randn(L, BASE, generator=g) * 2, torch.full((L, 2), -30.0)], 1
        )
        self.logits[2, 0] = 20.0
        self.flag, self.flag_masked, self.inputs = list(flag), flag_masked, []

    def forward(self, x, attention_mask=None):
        self.inputs.append(x.clone())
        lg = self.logits.expand(x.size(0), -1, -1).clone()
        on = torch.zeros_like(x, dtype=torch.bool)
        on[:, self.flag] = True
        if not self.flag_masked:
            on &= x != MASK
        lg[..., WRONG] = torch.where(on, 30.0, -30.0)
        return lg, None


class ForcedWrong(torch.nn.Module):
    """A real tiny bidirectional GPT whose WRONG logit is forced high at position `pos`."""

    def __init__(self, pos):
        super().__init__()
        torch.manual_seed(0)
        self.gpt = GPT(
            GPTConfig(
                n_layer=1, n_head=2, n_embd=16, block_size=L, vocab_size=BASE + 2, causal=False
            )
        )
        self.pos, self.inputs = pos, []

    def forward(self, x, attention_mask=None):
        self.inputs.append(x.clone())
        lg, _ = self.gpt(x, attention_mask=attention_mask)
        lg = lg.clone()
        lg[:, self.pos, WRONG] += 100.0
        return lg, None


def remasked_positions(inputs, s):
    """Positions visible in the input of step s and [MASK] in that of step s + 1."""
    return (inputs[s] != MASK) & (inputs[s + 1] == MASK)


@pytest.mark.parametrize('order', ['random', 'confidence', 'margin'])
@pytest.mark.parametrize('block_len', [0, 4])
@pytest.mark.parametrize('kind', ['fake', 'gpt'])
def test_self_remask_one_nfe_per_step_remasks_the_flagged_position(order, block_len, kind):
    model = FakeHybrid(flag=[2]) if kind == 'fake' else ForcedWrong(pos=2)
    steps = 9
    out, info = diffusion.diffusion_sample(
        model,
        torch.full((3, L), MASK),
        steps,
        MASK,
        BASE,
        order=order,
        block_len=block_len,
        remask='self',
        remask_ratio=1.0,
        wrong_id=WRONG,
        gen=torch.Generator().manual_seed(1),
    )
    assert info['nfe'] == steps == len(model.inputs)  # no second model call
    assert not (out == MASK).any() and out.max() < BASE and len(info['remasked']) == steps - 1
    n_back = 0
    for s in range(steps - 1):
        back = remasked_positions(model.inputs, s)
        assert not back[:, torch.arange(L) != 2].any()  # only the flagged position goes back
        assert torch.equal(back[:, 2], model.inputs[s][:, 2] != MASK)  # ... whenever committed
        assert torch.equal(back.sum(1), info['remasked'][s])
        n_back += int(back.sum())
    assert n_back > 0


def test_self_remask_never_sends_back_a_token_committed_in_the_same_step():
    model = FakeHybrid(flag=range(L), flag_masked=True)  # P(WRONG) ~ 1 everywhere, [MASK] too
    _, info = diffusion.diffusion_sample(
        model,
        torch.full((2, L), MASK),
        6,
        MASK,
        BASE,
        order='confidence',
        remask='self',
        remask_ratio=1.0,
        wrong_id=WRONG,
    )
    assert info['remasked'][0].tolist() == [0, 0]  # step 0: nothing was committed in its input
    for s in range(1, 5):
        back = remasked_positions(model.inputs, s)
        assert torch.equal(back.sum(1), info['remasked'][s]) and (info['remasked'][s] > 0).all()


@pytest.mark.parametrize('order', ['random', 'confidence'])
def test_self_remask_below_threshold_is_exactly_no_remasking(order):
    kw = dict(order=order, remask_ratio=1.0, wrong_id=WRONG)
    ref, _ = diffusion.diffusion_sample(
        FakeHybrid(),
        torch.full((4, L), MASK),
        6,
        MASK,
        BASE,
        remask='none',
        gen=torch.Generator().manual_seed(2),
        **kw,
    )
    out, info = diffusion.diffusion_sample(
        FakeHybrid(),
        torch.full((4, L), MASK),
        6,
        MASK,
        BASE,
        remask='self',
        gen=torch.Generator().manual_seed(2),
        **kw,
    )
    assert torch.equal(out, ref) and sum(int(r.sum()) for r in info['remasked']) == 0
    # threshold 1.0: even a flag with P(WRONG) ~ 1 is not above it
    out, info = diffusion.diffusion_sample(
        FakeHybrid(flag=[2]),
        torch.full((4, L), MASK),
        6,
        MASK,
        BASE,
        remask='self',
        remask_threshold=1.0,
        gen=torch.Generator().manual_seed(2),
        **kw,
    )
    assert torch.equal(out, ref) and sum(int(r.sum()) for r in info['remasked']) == 0


def test_self_remask_needs_a_wrong_output():
    with pytest.raises(ValueError, match="remask='self' needs wrong_id"):
        diffusion.diffusion_sample(
            FakeHybrid(), torch.full((1, L), MASK), 4, MASK, BASE, remask='self'
        )

    class BaseOnly(torch.nn.Module):
        def forward(self, x, attention_mask=None):
            return torch.zeros(*x.shape, BASE + 1), None  # base + [MASK]: no WRONG output

    with pytest.raises(ValueError, match='needs a model with a WRONG output'):
        diffusion.diffusion_sample(
            BaseOnly(), torch.full((1, L), MASK), 4, MASK, BASE, remask='self', wrong_id=WRONG
        )


# ---- (c) sample.py ----


def test_sample_py_remask_self(runs, capsys, monkeypatch):
    args = ['--mode=diffusion', '--num_samples=2', '--steps=8', '--start=ROMEO:', '--length=24']
    for remask in ('self', 'none', 'random'):  # a hybrid checkpoint is a plain denoiser too
        outs = sample.main([f'--ckpt={runs["hybrid"]}', f'--remask={remask}'] + args)
        assert len(outs) == 2 and all(o.startswith('ROMEO:') and len(o) == 24 for o in outs)
        assert 'NFE per sample: 8\n' in capsys.readouterr().out
    un = runs['unmasking']
    with pytest.raises(
        ConfigError,
        match=re.escape(
            f"--remask=self needs a checkpoint trained "
            f"with --objective=hybrid; {un} has objective "
            f"'unmasking'"
        ),
    ):
        sample.main([f'--ckpt={un}', '--remask=self'] + args)
    argv = ['sample.py', f'--ckpt={un}', '--remask=self'] + args
    monkeypatch.setattr(sys, 'argv', argv)
    with pytest.raises(SystemExit, match=r'^error: --remask=self needs'):
        run_cli(sample.main)
    with pytest.raises(ConfigError, match='not a remasking checkpoint'):  # load_remasker's check
        sample.main(
            [f'--ckpt={un}', '--remask=learned', f'--remasker_ckpt={runs["hybrid"]}'] + args
        )


def test_bench_self_remask_rows(runs, data_root, tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        'diffusion_eval',
        os.path.join(os.path.dirname(train.__file__), 'bench', 'diffusion_eval.py'),
    )
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    args = [
        f'--denoiser={runs["hybrid"]}',
        f'--judge={runs["judge"]}',
        '--num_samples=4',
        '--length=16',
        '--nfe=4',
        f'--data_dir={data_root}/tiny_char',
        f'--png={tmp_path}/p.png',
    ]
    plain = [r['strategy'] for r in bench.main(args)]
    rows = bench.main(args + ['--self_remask=True'])
    assert [r['strategy'] for r in rows] == plain + [
        'random order + self remask',
        'confidence + self remask',
    ]
    for r in rows[-2:]:
        assert r['nfe'] == r['steps'] == 4 and math.isfinite(r['nll'])
    with pytest.raises(ConfigError, match='--remask=self'):
        bench.main(
            [a.replace(runs['hybrid'], runs['unmasking']) for a in args] + ['--self_remask=True']
        )


# ---- (d) train.py ----


def test_train_smoke_losses_eval_keys_checkpoint_and_diagnostics(runs, data_root):
    V = base_vocab(data_root)
    hist, out = runs['hist'], os.path.join(runs['root'], 'hy')
    losses = [h['loss'] for h in hist['train']]
    assert len(losses) == 6 and all(math.isfinite(v) for v in losses)
    assert [e['iter'] for e in hist['eval']] == [0, 3, 6]
    for e in hist['eval']:
        assert math.isfinite(e['val']) and math.isfinite(e['val_masked_ce'])
        for k in ('clean_as_wrong', 'wrong_recall', 'wrong_precision'):
            assert 0.0 <= e[k] <= 1.0
    assert hist['eval'][0]['val_masked_ce'] == pytest.approx(math.log(V + 2), rel=0.05)  # ~uniform
    assert hist['eval'][-1]['val'] < hist['eval'][0]['val']
    names = {'ckpt.pt', 'ckpt_hybrid_uniform_3.pt', 'ckpt_hybrid_uniform_6.pt'}
    assert names <= set(os.listdir(out))
    ck = torch.load(os.path.join(out, 'ckpt.pt'), weights_only=False)
    assert ck['objective'] == 'hybrid' and ck['model_args']['causal'] is False
    assert ck['meta']['wrong_token_id'] == V + 1 and ck['model_args']['vocab_size'] == V + 2
    line = r'^iter \d+/6: .*, mask_frac ([\d.e-]+), wrong_frac ([\d.e-]+)'
    diag = [(float(m), float(w)) for m, w in re.findall(line, runs['log'], re.M)]
    assert len(diag) == 6
    share = sum(w for _, w in diag) / sum(m + w for m, w in diag)  # wrong share of chosen
    assert 0.1 < share < 0.3  # hybrid_wrong_frac 0.2 over 6 batches of 8 x 32


def test_train_smoke_on_policy(tiny_args, runs, tmp_path):
    h = train.main(
        tiny_args
        + [
            '--objective=hybrid',
            '--hybrid_wrong_source=self',
            f'--hybrid_denoiser={runs["hybrid"]}',
            '--max_iters=2',
            '--eval_interval=2',
        ]
    )
    assert all(math.isfinite(t['loss']) for t in h['train'])
    assert 0.0 <= h['eval'][-1]['wrong_recall'] <= 1.0
    ck = torch.load(tmp_path / 'out' / 'ckpt_hybrid_self_2.pt', weights_only=False)
    assert ck['objective'] == 'hybrid' and ck['meta']['hybrid_denoiser'] == runs['hybrid']
