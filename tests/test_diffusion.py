"""Masked diffusion: masking statistics, remasking inputs/targets, extra ids, checkpoint names,
the sampler's schedule, orders, remasking and NFE (diffusion.py, batches.py, sample.py)."""

import math
import os

import pytest
import torch
from torch.nn import functional as F

import diffusion
import sample
import train
from configurator import ConfigError
from conftest import ProposeToken, base_vocab, source_of
from model import GPT, GPTConfig, supervised_weights
from utils import DataError


def make_source(data_root, objective='unmasking', **over):
    return source_of(data_root, objective, **over)


def test_two_extra_ids_and_bidirectional(data_root):
    src, V = make_source(data_root), base_vocab(data_root)
    assert src.meta['base_vocab_size'] == V and src.vocab_size == src.meta['vocab_size'] == V + 2
    assert (src.meta['mask_token_id'], src.meta['wrong_token_id']) == (V, V + 1)
    assert src.causal is False and make_source(data_root, 'remasking').causal is False


def test_unmasking_fraction_tracks_t_and_targets_are_the_originals(data_root):
    src, V = make_source(data_root), base_vocab(data_root)
    b = src.get_batch('train', 512, torch.Generator().manual_seed(1))
    tok = src.clean('train', 512, torch.Generator().manual_seed(1))[0]
    masked = b['x'] == V
    assert torch.equal(masked, b['y'] != -1)
    assert torch.equal(b['y'][masked], tok[masked]) and torch.equal(b['x'][~masked], tok[~masked])
    t = b['t']
    assert t.min() >= 1e-3 and t.max() < 1
    # stratified: exactly one t per stratum [i/B, (i+1)/B)
    strata = ((t - 1e-3) / (1 - 1e-3) * 512).floor().long().sort().values
    assert torch.equal(strata, torch.arange(512))
    frac = masked.float().mean(1)
    assert (frac - t).abs().mean() < 0.08  # binomial(32, t) noise
    assert masked.float().sum() / (t.sum() * 32) == pytest.approx(1.0, abs=0.03)
    lo, hi = t < 0.1, t > 0.9
    assert frac[lo].mean() < 0.12 and frac[hi].mean() > 0.88


def test_rows_mask_only_real_answer_positions(rows_root):
    src = make_source(rows_root, dataset='rows', block_size=16)
    assert src.vocab_size == 22 and src.mask_id == 20
    b = src.get_batch('train', 400, torch.Generator().manual_seed(0))
    masked = b['x'] == 20
    assert masked[:, :6].sum() == 0 and masked[:, 10:].sum() == 0  # graph/query and PAD stay
    tok = src.clean('train', 400, torch.Generator().manual_seed(0))[0]
    assert not masked[tok == 1].any()  # PAD inside the answer is never masked
    assert torch.equal(b['attention_mask'], tok != 1)
    assert masked.sum() / (b['t'][:, None] * b['maskable']).sum() == pytest.approx(1, abs=0.05)
    r = make_source(rows_root, 'remasking', dataset='rows', block_size=16)
    rb = r.get_batch('train', 400, torch.Generator().manual_seed(0))
    assert not rb['wrong'][:, :6].any() and not rb['wrong'][tok == 1].any()
    with pytest.raises(DataError, match='rows of 12 tokens exceed --block_size=8'):
        make_source(rows_root, dataset='rows', block_size=8)


@pytest.mark.parametrize('loss_type', ['all_positions', 'corrupted_only'])
def test_remasking_inputs_and_targets(data_root, loss_type):
    src, V = (
        make_source(data_root, 'remasking', remasking_loss_type=loss_type),
        base_vocab(data_root),
    )
    b = src.get_batch('train', 256, torch.Generator().manual_seed(3))
    tok = src.clean('train', 256, torch.Generator().manual_seed(3))[0]
    wrong = b['x'] != tok
    assert torch.equal(wrong, b['wrong'])
    assert b['x'].max() < V  # random base-vocabulary tokens: never MASK nor WRONG
    assert (b['y'][wrong] == V + 1).all()
    if loss_type == 'all_positions':
        assert torch.equal(b['y'][~wrong], tok[~wrong])
    else:
        assert (b['y'][~wrong] == -1).all()
    assert wrong.float().sum() / (b['t'].sum() * 32) == pytest.approx(1.0, abs=0.04)
    with pytest.raises(ConfigError, match='remasking_loss_type=both'):
        make_source(data_root, 'remasking', remasking_loss_type='both')


def test_on_policy_corruptions_are_the_denoisers_samples(data_root, tiny_args, tmp_path):
    train.main(tiny_args + ['--objective=unmasking', '--max_iters=1', '--eval_interval=100'])
    ck = str(tmp_path / 'out' / 'ckpt.pt')
    src, V = make_source(data_root, 'remasking', remasking_denoiser=ck), base_vocab(data_root)

    src.denoiser = ProposeToken(5, V + 2)  # a "denoiser" that always proposes token 5
    b = src.get_batch('train', 64, torch.Generator().manual_seed(4))
    tok = src.clean('train', 64, torch.Generator().manual_seed(4))[0]
    seen = src.denoiser.seen  # the denoiser saw [MASK] exactly at the chosen positions
    chosen = seen == V
    assert chosen.any() and torch.equal(seen[~chosen], tok[~chosen])
    assert (b['x'][chosen] == 5).all() and torch.equal(b['x'][~chosen], tok[~chosen])
    # WRONG only where the sample differs from the original: chosen positions holding 5 stay
    assert torch.equal(b['wrong'], chosen & (tok != 5)) and (chosen & (tok == 5)).any()
    assert torch.equal(b['y'], torch.where(b['wrong'], V + 1, tok))
    with pytest.raises(ConfigError, match='not an unmasking checkpoint: it is a next-token'):
        train.main(tiny_args + ['--max_iters=1', '--eval_interval=100', f'--out_dir={tmp_path}/nt'])
        make_source(data_root, 'remasking', remasking_denoiser=f'{tmp_path}/nt/ckpt.pt')


def test_checkpoint_names_meta_and_val_metrics(tiny_args, data_root, tmp_path):
    V = base_vocab(data_root)
    h = train.main(tiny_args + ['--objective=unmasking', '--max_iters=4', '--eval_interval=2'])
    out = tmp_path / 'out'
    assert {'ckpt.pt', 'ckpt_unmasking_2.pt', 'ckpt_unmasking_4.pt'} <= set(os.listdir(out))
    ck = torch.load(out / 'ckpt_unmasking_4.pt', weights_only=False)
    assert ck['meta']['mask_token_id'] == V and ck['model_args']['vocab_size'] == V + 2
    assert ck['model_args']['causal'] is False
    e0 = h['eval'][0]  # an untrained model is ~uniform over V+2 ids: ~log2(V+2) bits per token
    assert e0['val_masked_ce'] == pytest.approx(math.log(V + 2), rel=0.05)
    assert e0['val_bound_bpt'] == pytest.approx(math.log2(V + 2), rel=0.25)
    h = train.main(
        tiny_args
        + [
            '--objective=remasking',
            '--remasking_loss_type=corrupted_only',
            '--max_iters=30',
            '--eval_interval=30',
            f'--out_dir={tmp_path}/r',
        ]
    )
    assert os.path.exists(tmp_path / 'r' / 'ckpt_remasking_corrupted_only_30.pt')
    assert h['eval'][-1]['clean_as_wrong'] > 0.9  # the collapse: every target it saw was WRONG


class Recorder(torch.nn.Module):
    """A fake denoiser: fixed logits (L, V) for every row; records each input canvas."""

    def __init__(self, logits):
        super().__init__()
        self.logits, self.inputs = logits, []

    def forward(self, x, attention_mask=None):
        self.inputs.append(x.clone())
        return self.logits.expand(x.size(0), -1, -1), None


def test_schedule_commits_the_scheduled_count_and_ends_unmasked():
    L, V, mask = 16, 12, 10
    model = Recorder(torch.randn(L, V, generator=torch.Generator().manual_seed(0)))
    canvas = torch.full((3, L), mask)
    canvas[:, :3] = torch.tensor([1, 2, 3])
    out, info = diffusion.diffusion_sample(model, canvas, 5, mask, 10, order='random')
    assert torch.stack(info['committed']).T.tolist() == [[2, 3, 2, 3, 3]] * 3  # 13 over 5 steps
    assert info['nfe'] == 5 and len(model.inputs) == 5
    assert not (out == mask).any() and out.max() < 10
    assert torch.equal(out[:, :3], canvas[:, :3])


def test_confidence_and_margin_orders_and_semi_ar_blocks():
    L, V, mask = 8, 6, 4
    peak = torch.arange(L, dtype=torch.float)  # position i: one token with logit i
    logits = torch.zeros(L, V)
    logits[torch.arange(L), torch.arange(L) % 4] = peak
    for order in ('confidence', 'margin'):
        model = Recorder(logits)
        out, _ = diffusion.diffusion_sample(
            model, torch.full((2, L), mask), L, mask, 4, order=order, temperature=0
        )
        first_masked = [int((x[0] == mask).nonzero()[-1]) for x in model.inputs]
        assert first_masked == list(range(L - 1, -1, -1))  # most confident (rightmost) first
        assert torch.equal(out[0], torch.arange(L) % 4)
    model = Recorder(logits)
    diffusion.diffusion_sample(
        model, torch.full((1, L), mask), 4, mask, 4, order='confidence', block_len=4
    )
    x2 = model.inputs[2][0]  # start of block 2: block 1 done, block 2 untouched
    assert not (x2[:4] == mask).any() and (x2[4:] == mask).all()
    with pytest.raises(ValueError, match='steps=1 < 2 blocks'):
        diffusion.diffusion_sample(model, torch.full((1, L), mask), 1, mask, 4, block_len=4)


def test_random_and_learned_remasking_budget_ids_and_nfe():
    L, V, mask, wrong = 12, 7, 5, 6
    model = Recorder(torch.randn(L, V, generator=torch.Generator().manual_seed(1)))
    out, info = diffusion.diffusion_sample(
        model, torch.full((4, L), mask), 6, mask, 5, remask='random', remask_ratio=0.5
    )
    assert info['nfe'] == 6 and len(info['remasked']) == 5 and not (out == mask).any()
    assert [int(r[0]) for r in info['remasked']] == [1] * 5  # round(0.5 * 2) per step
    # steps 1..5 commit the 2 scheduled tokens plus the one sent back
    assert [int(c[0]) for c in info['committed']] == [2, 3, 3, 3, 3, 3]
    # one token per step: the 0.25 budget carries over (a remask every 4th step), never rounds to 0
    _, info = diffusion.diffusion_sample(
        model, torch.full((1, L), mask), L, mask, 5, remask='random', remask_ratio=0.25
    )
    assert [int(r[0]) for r in info['remasked']] == [0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0]

    class Remasker(torch.nn.Module):  # says position 0 is WRONG, everything else fine
        def __init__(self):
            super().__init__()
            self.inputs = []

        def forward(self, x, attention_mask=None):
            self.inputs.append(x.clone())
            lg = torch.zeros(x.size(0), x.size(1), V)
            lg[..., 0] = 1.0
            lg[:, 0, wrong] = 20.0
            return lg, None

    logits = torch.zeros(L, V)
    logits[0, 2] = 30.0  # position 0 is the most confident: committed first
    model, rm = Recorder(logits), Remasker()
    out, info = diffusion.diffusion_sample(
        model,
        torch.full((2, L), mask),
        4,
        mask,
        5,
        order='confidence',
        remask='learned',
        remasker=rm,
        wrong_id=wrong,
        remask_ratio=1.0,
    )
    assert info['nfe'] == 4 + 3 and len(rm.inputs) == 3
    for x in rm.inputs:  # the remasker sees full drafts of base tokens, as in training
        assert x.shape == (2, L) and x.max() < 5
    for x in model.inputs[1:]:  # position 0 went back to [MASK] after every step but the last
        assert (x[:, 0] == mask).all()
    assert [int(r[0]) for r in info['remasked']] == [1, 1, 1]  # only the one above threshold
    assert not (out == mask).any()
    with pytest.raises(ValueError, match='needs a remasker'):
        diffusion.diffusion_sample(model, torch.full((1, L), mask), 4, mask, 5, remask='learned')


def test_gumbel_sampling_is_float64_categorical():
    logits = torch.log(torch.tensor([0.7, 0.2, 0.1])).expand(40000, 3)
    s = diffusion.gumbel_argmax(logits, 1.0, torch.Generator().manual_seed(0))
    freq = torch.bincount(s, minlength=3).double() / 40000
    assert freq.tolist() == pytest.approx([0.7, 0.2, 0.1], abs=0.01)
    assert (diffusion.gumbel_argmax(logits, 0, None) == 0).all()


def test_sample_py_diffusion_mode_end_to_end(tiny_args, tmp_path):
    train.main(tiny_args + ['--objective=unmasking', '--max_iters=2', '--eval_interval=100'])
    train.main(
        tiny_args
        + [
            '--objective=remasking',
            '--max_iters=2',
            '--eval_interval=100',
            f'--out_dir={tmp_path}/rm',
        ]
    )
    args = [
        f'--out_dir={tmp_path}/out',
        '--mode=diffusion',
        '--num_samples=2',
        '--steps=8',
        '--start=ROMEO:',
        '--length=24',
    ]
    for extra in (
        ['--order=random'],
        ['--remask=learned', f'--remasker_ckpt={tmp_path}/rm/ckpt.pt'],
    ):
        outs = sample.main(args + extra)
        assert len(outs) == 2 and all(o.startswith('ROMEO:') and len(o) == 24 for o in outs)
    with pytest.raises(ConfigError, match='not a remasking checkpoint'):
        sample.main(args + ['--remask=learned', f'--remasker_ckpt={tmp_path}/out/ckpt.pt'])
    train.main(tiny_args + ['--max_iters=1', '--eval_interval=100', f'--out_dir={tmp_path}/nt'])
    with pytest.raises(ConfigError, match='^--out_dir=.* not an unmasking or hybrid checkpoint'):
        sample.main([f'--out_dir={tmp_path}/nt', '--mode=diffusion'])


def test_path_accuracy_decodes_answers_and_traces_the_order():
    """An oracle denoiser that knows each row's answer, most sure of the goal end: confidence
    order commits goal first (then backwards), is exact; random order is exact too but in
    another order; the graph/query prefix is never changed."""
    import torch

    from diffusion import path_accuracy

    base, a, L, T = 20, 6, 5, 12
    meta = {
        'base_vocab_size': base,
        'mask_token_id': base,
        'wrong_token_id': base + 1,
        'answer_start': a,
        'answer_len': L,
        'special_tokens': {'PAD': 19},
    }
    g = torch.Generator().manual_seed(0)
    rows = torch.randint(0, 18, (40, T), generator=g)
    rows[:, a + L :] = 19  # PAD after the answer

    class Oracle(torch.nn.Module):
        def forward(self, x, attention_mask=None):
            assert attention_mask is not None and not attention_mask[:, a + L :].any()
            assert (x[:, :a] == rows[: len(x), :a]).all()  # prompt intact
            logits = torch.zeros(*x.shape, base + 2)
            sure = torch.arange(T, dtype=torch.float) * 0.5 + 1.0  # later position = surer
            logits.scatter_(2, rows[: len(x), :, None], sure[None, :, None].expand(len(x), T, 1))
            return logits, None

    r = path_accuracy(Oracle(), rows, meta, 'confidence')
    assert r['exact_match'] == 1.0 and r['order'] == [4.0, 3.0, 2.0, 1.0, 0.0]
    r = path_accuracy(Oracle(), rows, meta, 'random')
    assert r['exact_match'] == 1.0 and r['order'] != [4.0, 3.0, 2.0, 1.0, 0.0]
    assert abs(sum(r['order']) / L - 2.0) < 1e-9
    r = path_accuracy(Oracle(), rows, meta, 'confidence', steps=1)  # one parallel pass
    assert r['exact_match'] == 1.0 and r['order'] == [0.0] * L
    from diffusion import single_position_accuracy

    assert single_position_accuracy(Oracle(), rows, meta) == [1.0] * L

    class Blind(Oracle):  # right everywhere except where the input is [MASK]
        def forward(self, x, attention_mask=None):
            logits, _ = super().forward(x, attention_mask)
            return torch.where((x == base)[..., None], -logits, logits), None

    assert single_position_accuracy(Blind(), rows, meta) == [0.0] * L


def test_remasker_with_other_special_ids_is_refused(tiny_args, tmp_path):
    import torch

    train.main(tiny_args + ['--objective=unmasking', '--max_iters=1', '--eval_interval=100'])
    train.main(
        tiny_args
        + [
            '--objective=remasking',
            '--max_iters=1',
            '--eval_interval=100',
            f'--out_dir={tmp_path}/rm',
        ]
    )
    ck = torch.load(f'{tmp_path}/rm/ckpt.pt', weights_only=False)
    ck['meta']['wrong_token_id'] += 1  # e.g. trained on another base vocabulary
    torch.save(ck, f'{tmp_path}/rm_other.pt')
    with pytest.raises(
        DataError, match='^--remasker_ckpt=.* different vocabulary than the denoiser'
    ):
        sample.main(
            [
                f'--out_dir={tmp_path}/out',
                '--mode=diffusion',
                '--steps=4',
                '--length=8',
                '--remask=learned',
                f'--remasker_ckpt={tmp_path}/rm_other.pt',
            ]
        )


def test_inv_t_loss_is_ce_over_t_summed_over_the_maskable_count(data_root):
    """unmasking_loss='inv_t' (MDLM/LLaDA): loss = sum over masked positions of CE / t, divided
    by the number of maskable positions, here over two micro-batches normalised together as
    train.py does; checked against a hand computation on the same batches."""
    src = make_source(data_root, unmasking_loss='inv_t')
    torch.manual_seed(0)
    model = GPT(
        GPTConfig(
            block_size=32, vocab_size=src.vocab_size, n_layer=1, n_head=2, n_embd=16, causal=False
        )
    )
    micro = [src.get_batch('train', 6, torch.Generator().manual_seed(s)) for s in (1, 2)]
    norm = sum(
        supervised_weights(b['y'], b['loss_mask'], None, 1, False, b['norm_mask']) for b in micro
    )
    assert norm.item() == 2 * 6 * 32  # text: every position maskable
    loss = sum(model(b['x'], b['y'], loss_norm=norm, **train.forward_kwargs(b))[1] for b in micro)
    want = num = 0.0
    for b in micro:
        logits, _ = model(b['x'])
        for i, j in (b['y'] != -1).nonzero().tolist():
            ce = F.cross_entropy(logits[i, j], b['y'][i, j])
            want, num = want + ce / b['t'][i], num + 1
    assert num > 0 and loss.item() == pytest.approx((want / (2 * 6 * 32)).item(), rel=1e-5)
    plain = make_source(data_root).get_batch('train', 6, torch.Generator().manual_seed(1))
    assert torch.equal(plain['x'], micro[0]['x']) and 'norm_mask' not in plain  # same draw
    with pytest.raises(ConfigError, match="--unmasking_loss='x'"):
        make_source(data_root, unmasking_loss='x')


def test_mask_t_power_draws_more_low_t_rows(data_root):
    """mask_t_power=p: t = U(eps, 1) ** p from the same draw (p=2: mean ~1/3, half the rows
    below 1/4), the mask tracks the new t, and the floor still applies after the power."""
    gen = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    u = make_source(data_root).get_batch('train', 512, gen())
    b = make_source(data_root, mask_t_power=2.0).get_batch('train', 512, gen())
    assert torch.allclose(b['t'], u['t'] ** 2)
    assert b['t'].mean().item() == pytest.approx(1 / 3, abs=0.01)
    assert (b['t'] < 0.25).float().mean().item() == pytest.approx(0.5, abs=0.01)
    masked = b['x'] == base_vocab(data_root)
    assert masked.float().sum() / (b['t'].sum() * 32) == pytest.approx(1.0, abs=0.05)
    floor = make_source(data_root, mask_t_power=2.0, mask_t_min=0.2).get_batch('train', 512, gen())
    assert torch.equal(floor['t'], (u['t'] ** 2).clamp(min=0.2))
    with pytest.raises(ConfigError, match='--mask_t_power=0.0: must be > 0'):
        make_source(data_root, mask_t_power=0.0)
