"""Multi-token prediction: per-head shifted targets and masks, losses, speculative decoding."""

import pytest
import torch
import torch.nn.functional as F

from model import GPT, GPTConfig, supervised_weights
from mtp import speculative_generate


def model_k(k, **kw):
    torch.manual_seed(0)
    return GPT(
        GPTConfig(block_size=24, vocab_size=13, n_layer=2, n_head=2, n_embd=16, n_future=k, **kw)
    ).eval()


def test_head_i_is_supervised_on_the_input_shifted_by_i_with_masks_shifted_too():
    """Check each head's loss against a hand-built target: x shifted by i, masked -> -1."""
    model = model_k(3)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(13, (2, 12), generator=g)
    y = torch.cat([x[:, 1:], torch.randint(13, (2, 1), generator=g)], 1)  # next-token targets
    y[0, 4:6] = -1  # e.g. PAUSE targets
    loss_mask = torch.ones(2, 12)
    loss_mask[1, :5] = 0  # e.g. a masked prompt
    am = torch.ones(2, 12, dtype=torch.bool)
    am[1, 10:] = False  # padding at the row end: targets at 10 and later are padding
    sums, weights, _ = model.loss_terms(x, y, attention_mask=am, loss_mask=loss_mask)
    h, attn = model.trunk(x, am)
    logits = model.head_logits(h, attn)  # (3, B, T, V)
    for i in range(3):
        want = torch.full_like(y, -1)
        target_real = torch.cat([am[:, 1:], am[:, -1:]], 1)  # y_t is the token at t+1
        supervised = (y != -1) & (loss_mask > 0) & am & target_real
        want[:, : 12 - i] = torch.where(supervised[:, i:], y[:, i:], -1)
        ce = F.cross_entropy(
            logits[i].flatten(0, 1), want.flatten(), ignore_index=-1, reduction='sum'
        )
        assert sums[i].item() == pytest.approx(ce.item(), rel=1e-5)
        assert weights[i].item() == int((want != -1).sum())
    # row ends: head 3 is never supervised at the last two positions of any row
    assert weights.tolist() == supervised_weights(y, loss_mask, am, 3, causal=True).tolist()
    assert (want[1, 7:] == -1).all()  # head 3 at 7 would predict x[1, 10], padding


def test_head_targets_are_the_input_shifted_by_i():
    from model import future_targets

    x = torch.arange(10)[None]
    y = torch.cat([x[:, 1:], torch.tensor([[10]])], 1)
    tgt, _ = future_targets(y, torch.ones(1, 10), 4)
    for i in range(4):
        assert tgt[i, 0, : 10 - i].tolist() == list(range(i + 1, 11))
        assert tgt[i, 0, 10 - i :].tolist() == [-1] * i


def test_k1_loss_equals_plain_cross_entropy():
    model = model_k(1)
    x = torch.randint(13, (3, 10), generator=torch.Generator().manual_seed(1))
    y = x.roll(-1, 1)
    y[:, -1] = -1
    logits, loss = model(x, y)
    assert loss.item() == pytest.approx(
        F.cross_entropy(logits.flatten(0, 1), y.flatten(), ignore_index=-1).item(), rel=1e-6
    )


def test_loss_averages_heads_each_normalised_by_its_own_count():
    model = model_k(2)
    x = torch.randint(13, (2, 8), generator=torch.Generator().manual_seed(2))
    y = x.roll(-1, 1)
    y[0, 3:] = -1
    sums, weights, _ = model.loss_terms(x, y)
    _, loss = model(x, y)
    assert loss.item() == pytest.approx((sums / weights).mean().item(), rel=1e-6)
    weighted_model = model_k(2, future_head_weights=[3.0, 1.0])  # same seed: same weights
    _, weighted = weighted_model(x, y)
    assert weighted.item() == pytest.approx(
        (0.75 * sums[0] / weights[0] + 0.25 * sums[1] / weights[1]).item(), rel=1e-6
    )


def test_no_nan_when_a_head_has_nothing_to_supervise():
    model = model_k(4).train()
    x = torch.randint(13, (2, 6), generator=torch.Generator().manual_seed(3))
    y = torch.full_like(x, -1)
    y[:, :2] = 5  # only positions 0 and 1: head i at t needs y[t+i-1], so heads 3, 4 see nothing
    sums, weights, _ = model.loss_terms(x, y)
    assert weights.tolist() == [4.0, 2.0, 0.0, 0.0]
    _, loss = model(x, y)
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.parametrize('k', [2, 4])
@pytest.mark.parametrize('pos_emb', ['learned', 'rope'])  # rope: the heads' blocks rotate too
def test_speculative_decoding_equals_greedy_head1(k, pos_emb):
    model = model_k(k, pos_emb=pos_emb)
    prompt = torch.tensor([[1, 2, 3]])
    want = model.generate(prompt, 30, temperature=0)
    got, stats = speculative_generate(model, prompt, 30)  # crosses block_size=24: cropping
    assert torch.equal(got, want)
    assert stats['nfe'] <= 30 and 0 <= stats['acceptance_rate'] <= 1


def test_speculative_decoding_accepts_drafts_of_a_model_that_knows_the_future():
    """A model trained to continue a counting sequence drafts correctly: fewer forwards."""
    model = model_k(3).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    x = torch.arange(24)[None] % 13
    y = (torch.arange(24)[None] + 1) % 13
    for _ in range(150):
        _, loss = model(x.repeat(4, 1), y.repeat(4, 1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    got, stats = speculative_generate(model, x[:, :4], 16)
    assert got[0].tolist() == [i % 13 for i in range(20)]
    assert stats['acceptance_rate'] > 0.9 and stats['nfe'] <= 7


def test_train_and_sample_with_extra_heads(tiny_args, tmp_path):
    """n_future=2 end to end: per-head val losses logged, speculative sampling == greedy."""
    import sample
    import train
    from configurator import ConfigError

    hist = train.main(tiny_args + ['--max_iters=20', '--eval_interval=20', '--n_future=2'])
    ev = hist['eval'][-1]
    assert ev['val'] == pytest.approx((ev['val_head1'] + ev['val_head2']) / 2)
    assert ev['val_head1'] != ev['val_head2']
    common = [f'--out_dir={tmp_path}/out', '--num_samples=1', '--max_new_tokens=25', '--start=KING']
    spec = sample.main(common + ['--speculative=True'])
    greedy = sample.main(common + ['--temperature=0'])
    assert spec == greedy
    train.main(tiny_args + ['--max_iters=1', '--eval_interval=5', f'--out_dir={tmp_path}/k1'])
    with pytest.raises(ConfigError, match='needs a checkpoint with extra heads'):
        sample.main([f'--out_dir={tmp_path}/k1', '--speculative=True'])


def test_eval_loss_uses_the_training_head_weights(tiny_args):
    import train

    hist = train.main(
        tiny_args
        + ['--max_iters=2', '--eval_interval=2', '--n_future=2', '--future_head_weights=[3.0, 1.0]']
    )
    ev = hist['eval'][-1]
    assert ev['val'] == pytest.approx(0.75 * ev['val_head1'] + 0.25 * ev['val_head2'], rel=1e-5)
