"""SEP-varlen MLM: packing, attention mask, corruption, diagnostics, mask polarity."""

import pickle

import numpy as np
import pytest
import torch

import batches
import mlm
import model as model_mod
import train
from configurator import ConfigError
from model import GPT, GPTConfig
from utils import DataError

NL, SEP = 0, 99  # synthetic data: token 0 ends a line


def synthetic_lines(seed=0, n_lines=300, max_len=40):
    """A token stream of lines of random length 1..max_len, each ending with NL (the last one
    not), tokens 1..9 inside lines. Returns (data, list of (start, end) per line)."""
    rng = np.random.default_rng(seed)
    lines = [np.append(rng.integers(1, 10, rng.integers(0, max_len)), NL) for _ in range(n_lines)]
    lines[-1] = lines[-1][:-1] if len(lines[-1]) > 1 else np.array([5])  # unterminated last line
    data = np.concatenate(lines).astype(np.uint16)
    ends = np.cumsum([len(l) for l in lines])
    return data, list(zip(np.concatenate([[0], ends[:-1]]), ends))


def reference_pack(lines, i, T):
    """Greedy packing written the slow, obvious way: whole lines from line i while the text
    plus one [SEP] fits in T; an overlong first line is cut to T-1. Returns n_text."""
    n, s = 0, lines[i][0]
    for _, b in lines[i:]:
        if b - s > T - 1:
            break
        n = b - s
    return n if n > 0 else min(T - 1, lines[-1][1] - s)


@pytest.mark.parametrize('T', [2, 8, 32, 64])
def test_packing_matches_reference_for_every_line_start(T):
    data, lines = synthetic_lines()
    bounds = mlm.line_bounds(data, [NL])
    assert list(bounds[:-1]) == [a for a, _ in lines] and bounds[-1] == len(data)  # line starts
    first = np.arange(len(bounds) - 1)
    x, n_text = mlm.pack_lines(data, bounds, first, T, SEP)
    assert x.shape == (len(first), T)
    for i, (s, _) in enumerate(lines):
        n = reference_pack(lines, i, T)
        assert n_text[i] == n, f"line {i}"
        assert x[i, :n].tolist() == data[s : s + n].tolist()  # the text, from a line start
        assert (x[i, n:] == SEP).all() and not (x[i, :n] == SEP).any()  # [SEP] then filler
        truncated = lines[i][1] - s > T - 1
        if not truncated:  # whole lines only: the text ends at a line end
            assert s + n in set(bounds.tolist())
        else:
            assert n == min(T - 1, len(data) - s)
    assert (n_text <= T - 1).all() and (n_text >= 1).all()
    # long lines exist in this data, so truncation was exercised for small T
    if T <= 32:
        assert any(b - a > T - 1 for a, b in lines)


def test_corruption_statistics_and_labels():
    g = torch.Generator().manual_seed(0)
    B, T, V = 512, 64, 50
    x = torch.randint(V, (B, T), generator=g)
    n_text = torch.randint(1, T, (B,), generator=g)
    xc, y, kind = mlm.corrupt(x, n_text, torch.full((B,), 0.15), V, V, g)
    text = torch.arange(T) < n_text[:, None]
    sel = kind > 0
    assert not (sel & ~text).any()  # only text positions are ever selected
    assert torch.equal(y, torch.where(sel, x, -1))  # original token where selected, -1 elsewhere
    assert (y[~text] == -1).all()
    assert torch.equal(xc[~sel], x[~sel])  # unselected positions untouched
    assert (xc[kind == 1] == V).all()  # [MASK]
    assert torch.equal(xc[kind == 3], x[kind == 3])  # unchanged
    rnd = xc[kind == 2]
    assert rnd.max() < V and rnd.min() >= 0  # random tokens from the base vocabulary only
    assert len(torch.unique(rnd)) == V  # ... and all of it
    n_sel = sel.sum().item()
    assert sel.sum() / text.sum() == pytest.approx(0.15, abs=0.006)
    for k, share in ((1, 0.8), (2, 0.1), (3, 0.1)):
        assert (kind == k).sum().item() / n_sel == pytest.approx(share, abs=0.015)


def test_ratio_drawn_per_sample_spans_the_range():
    g = torch.Generator().manual_seed(1)
    r = mlm.draw_ratio(20000, 'uniform', 0.15, 1e-3, g)
    assert r.min() >= 1e-3 and r.max() <= 1.0
    assert r.mean().item() == pytest.approx(0.5, abs=0.01)
    assert r.quantile(0.1).item() == pytest.approx(0.1, abs=0.01)
    assert torch.equal(mlm.draw_ratio(4, 'fixed', 0.15, 1e-3, g), torch.full((4,), 0.15))


def make_source(data_root, **kw):
    cfg = dict(
        train.DEFAULTS,
        data_root=data_root,
        dataset='tiny_char',
        objective='mlm',
        block_size=64,
        **kw,
    )
    return batches.make_source(cfg, seed=0)


def test_special_ids_attention_mask_and_labels_on_real_batches(data_root):
    src = make_source(data_root)
    with open(f'{data_root}/tiny_char/meta.pkl', 'rb') as f:
        base = pickle.load(f)['vocab_size']
    assert (src.mask_id, src.sep_id, src.vocab_size) == (base, base + 1, base + 2)
    assert src.meta['itos'][base] == '[MASK]' and src.meta['stoi']['[SEP]'] == base + 1
    assert src.causal is False
    b = src.get_batch('train', 256)
    assert set(b) == {'x', 'y', 'attention_mask'} and b['attention_mask'].dtype == torch.bool
    am, x, y = b['attention_mask'], b['x'], b['y']
    valid = am.sum(1)
    # a prefix of ones (up to and including [SEP]), zeros after
    assert torch.equal(am, torch.arange(64) < valid[:, None])
    sep_pos = valid - 1
    assert (x[torch.arange(256), sep_pos] == src.sep_id).all()
    assert (x[~am] == src.sep_id).all()  # filler is [SEP], never corrupted
    assert (y[~am] == -1).all() and (y[torch.arange(256), sep_pos] == -1).all()
    text = torch.arange(64) < sep_pos[:, None]
    assert not (x[text] == src.sep_id).any()  # [SEP] only at the end
    # every sample starts at a line start and its text ends with '\n' unless it was cut
    nl = src.meta['stoi']['\n']
    orig = torch.where(y >= 0, y, x)
    ends_nl = orig[torch.arange(256), sep_pos - 1] == nl
    assert ends_nl.float().mean() > 0.9
    # the text of every sample occurs in train.bin right after a newline (or at 0)
    data = src.files['train'].data()
    starts = set(src.bounds['train'][:-1].tolist())
    for r in range(20):
        row = orig[r, : sep_pos[r]].numpy()
        hits = [s for s in starts if np.array_equal(data[s : s + len(row)], row)]
        assert hits, f"sample {r} is not a line-aligned slice of train.bin"


def test_batches_are_a_function_of_the_generator(data_root):
    src = make_source(data_root, mlm_ratio='uniform')
    a = src.get_batch('train', 8, gen=torch.Generator().manual_seed(5))
    b = src.get_batch('train', 8, gen=torch.Generator().manual_seed(5))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_diagnostics_count_training_batches_only(data_root):
    src = make_source(data_root)
    assert src.diagnostics() == {}
    src.get_batch('train', 64, gen=torch.Generator().manual_seed(0))  # evaluation-style call
    assert src.diagnostics() == {}
    for _ in range(20):
        src.get_batch('train', 64)
        src.observe()  # what train.py does after drawing a training micro-batch
    d = src.diagnostics()
    assert d['mask%'] + d['rand%'] + d['keep%'] == pytest.approx(100)
    assert d['mask%'] == pytest.approx(80, abs=3) and d['rand%'] == pytest.approx(10, abs=2.5)
    assert 2 <= d['len_min'] <= d['len_mean'] <= d['len_max'] <= 64
    assert d['ratio_cum_p10'] < d['ratio_cum_p50'] < d['ratio_cum_p90']
    assert d['ratio_cum_p50'] == pytest.approx(0.15, abs=0.03)
    # supervised tokens per token = 15% of the text share of the block
    assert d['sup_per_tok'] == pytest.approx(0.15 * (d['len_mean'] - 1) / 64, rel=0.08)
    assert src.stats.samples == 20 * 64


def mask_leaks(model, b):
    """(filler changes a visible prediction, a visible token changes another visible one)."""
    am, x = b['attention_mask'], b['x']
    base, _ = model(x, attention_mask=am)
    noise = x.clone()
    noise[~am] = torch.randint(60, (int((~am).sum()),), generator=torch.Generator().manual_seed(0))
    out, _ = model(noise, attention_mask=am)
    filler_effect = (out - base)[am].abs().max().item()
    changed = x.clone()
    changed[:, 0] = (changed[:, 0] + 1) % 60  # the first token of every sample
    out, _ = model(changed, attention_mask=am)
    other = am.clone()
    other[:, 0] = False
    # the smallest, over every other visible position, of the largest logit change there
    visible_effect = (out - base).abs().amax(-1)[other].min().item()
    return filler_effect, visible_effect


@pytest.mark.parametrize('variant', ['real', 'inverted', 'query_broadcast'])
def test_key_mask_polarity_and_broadcast(data_root, monkeypatch, variant):
    """Visible tokens change predictions at every other visible position (bidirectional);
    tokens after [SEP] change nothing. The wrong masks an earlier build could have had are
    caught by the same check."""
    real = model_mod.build_attn_mask
    if variant == 'inverted':  # SDPA's True = attend, misread as True = blocked
        monkeypatch.setattr(model_mod, 'build_attn_mask', lambda am, c: real(~am, c))
    elif variant == 'query_broadcast':  # mask over queries instead of keys
        monkeypatch.setattr(
            model_mod,
            'build_attn_mask',
            lambda am, c: am[:, None, :, None] | torch.eye(am.size(1), dtype=torch.bool),
        )
    src = make_source(data_root)
    b = src.get_batch('val', 4, gen=torch.Generator().manual_seed(0))
    assert (~b['attention_mask']).sum(1).min() > 0  # every row has filler to perturb
    torch.manual_seed(0)
    m = GPT(
        GPTConfig(
            block_size=64,
            vocab_size=src.vocab_size,
            n_layer=2,
            n_head=2,
            n_embd=32,
            causal=src.causal,
        )
    ).eval()
    filler_effect, visible_effect = mask_leaks(m, b)
    if variant == 'real':
        assert filler_effect < 1e-5 and visible_effect > 1e-4
    else:
        assert filler_effect > 1e-3 or visible_effect < 1e-6


def test_train_end_to_end_logs_diagnostics_probe_and_special_ids(tiny_args, tmp_path, capsys):
    hist = train.main(
        tiny_args
        + [
            '--objective=mlm',
            '--max_iters=40',
            '--eval_interval=40',
            '--log_interval=20',
            '--mlm_probability=0.3',
        ]
    )
    out = capsys.readouterr().out
    assert 'mask%' in out and 'ratio_cum_p50' in out and 'len_mean' in out
    last = hist['eval'][-1]
    assert last['val_mlm'] < hist['eval'][0]['val_mlm'] - 0.5
    assert last['attn_probe'] == pytest.approx(last['val_mlm_nomask'] - last['val_mlm'])
    assert abs(last['attn_probe']) > 1e-4  # the key mask changes the loss
    ckpt = torch.load(tmp_path / 'out' / 'ckpt.pt', weights_only=False)
    V = ckpt['meta']['vocab_size']
    assert ckpt['model_args']['vocab_size'] == V and ckpt['model_args']['causal'] is False
    assert (ckpt['meta']['mask_token_id'], ckpt['meta']['sep_token_id']) == (V - 2, V - 1)
    assert ckpt['model']['lm_head.weight'].shape[0] == V
    win = train.main(
        tiny_args
        + [
            '--objective=mlm',
            '--mlm_packing=window',
            '--max_iters=2',
            '--eval_interval=100',
            f'--out_dir={tmp_path}/w',
        ]
    )
    assert 'attn_probe' not in win['eval'][-1] and 'val_mlm' in win['eval'][-1]


def test_bad_mlm_inputs_are_clear_errors(tiny_args, data_root, tmp_path):
    with pytest.raises(ConfigError, match="--mlm_packing='lines'.*'sep'"):
        train.main(tiny_args + ['--objective=mlm', '--mlm_packing=lines'])
    with pytest.raises(ConfigError, match='--mlm_probability=0.0'):
        train.main(tiny_args + ['--objective=mlm', '--mlm_probability=0.0'])
    bad = tmp_path / 'nolines'
    bad.mkdir()
    for name in ('train.bin', 'val.bin'):
        (bad / name).write_bytes((np.arange(1, 200) % 3).astype(np.uint16).tobytes())
    (bad / 'meta.pkl').write_bytes(
        pickle.dumps(
            {'vocab_size': 3, 'stoi': {'a': 0, 'b': 1, 'c': 2}, 'itos': {0: 'a', 1: 'b', 2: 'c'}}
        )
    )
    with pytest.raises(DataError, match="no '\\\\n' character.*--mlm_packing=window"):
        train.main(tiny_args + ['--objective=mlm', f'--data_root={tmp_path}', '--dataset=nolines'])
