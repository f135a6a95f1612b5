"""
SEP-varlen masked language modelling: packing, BERT corruption, diagnostics, eval.

A sample starts at a line beginning, packs whole lines while they fit and ends with [SEP]:
    x[b]              = line_1 ... line_k [SEP] [SEP] ...      (T = block_size)
    attention_mask[b] = 1 ...          1    1     0    ...     (True up to and including [SEP])
Positions after [SEP] are filler ([SEP] ids): hidden from every query by the key mask and never
supervised. A first line that alone does not fit with its [SEP] is truncated to T-1 tokens.
The batch source (batches.MaskedLM) calls these functions; they hold no state but MLMStats.
"""

import numpy as np
import torch

from utils import DataError

GPT2_NEWLINES = (198, 628)  # GPT-2 BPE tokens '\n' and '\n\n'


def newline_ids(meta, path):
    """Token ids that end a line, from the dataset's meta."""
    if 'newline_ids' in meta:
        return list(meta['newline_ids'])
    if 'stoi' in meta:
        if '\n' not in meta['stoi']:
            raise DataError(
                f"{path}: the vocabulary has no '\\n' character, so there are no lines "
                f"to pack; use --mlm_packing=window"
            )
        return [meta['stoi']['\n']]
    if meta.get('tokenizer', 'gpt2') == 'gpt2':
        return list(GPT2_NEWLINES)
    raise DataError(f"{path}: cannot tell which tokens end a line; add 'newline_ids' to meta.pkl")


def line_bounds(data, nl_ids):
    """Sorted int64 positions where a line starts (0 and after every newline token), plus
    len(data) as the end of the last line. Computed once at load; (n_lines + 1,)"""
    after_nl = np.flatnonzero(np.isin(data, nl_ids)) + 1
    return np.unique(np.concatenate([[0], after_nl, [len(data)]]).astype(np.int64))


def pack_lines(data, bounds, first, T, sep_id):
    """first (B,) indices into bounds[:-1] -> x (B, T) int64 and n_text (B,) int64.

    x[b, :n_text[b]] are whole lines of data starting at bounds[first[b]], x[b, n_text[b]] is
    [SEP], the rest [SEP] filler. n_text <= T-1 always leaves room for the [SEP]."""
    s = bounds[first]  # (B,) sample starts
    # last line boundary e with e - s <= T-1: lines s..e fit with one slot left for [SEP]
    e = bounds[np.searchsorted(bounds, s + T - 1, side='right') - 1]
    n_text = e - s  # 0: the first line is overlong
    n_text = np.where(n_text > 0, n_text, np.minimum(T - 1, len(data) - s))
    idx = np.minimum(s[:, None] + np.arange(T), len(data) - 1)  # (B, T), clipped at the end
    rows = torch.from_numpy(data[idx].astype(np.int64))
    n_text = torch.from_numpy(n_text)
    x = torch.where(torch.arange(T) < n_text[:, None], rows, sep_id)
    return x, n_text


def pack_window_lines(rows, nl_ids, T, sep_id):
    """pack_lines for a stream with no line index (a split of many shards, where indexing every
    line start up front would read the whole corpus): rows (B, W >= 2T) are windows at uniform
    random starts; a sample starts at the first line start after the window's first token and
    packs whole lines from there, as pack_lines. A window whose first T tokens hold no newline
    starts mid-line, truncated to T-1 tokens, like an overlong line. Line starts are drawn with
    weight = the length of the line before them (pack_lines: uniformly). -> x (B, T), n_text (B,)"""
    B, W = rows.shape
    assert W >= 2 * T, (W, T)
    is_nl = torch.isin(rows, torch.tensor(list(nl_ids), dtype=rows.dtype))
    pos = torch.arange(W)
    first_nl = torch.where(is_nl[:, :T], pos[:T], W).min(1).values
    s = torch.where(first_nl < T, first_nl + 1, 0)  # (B,) in [0, T]
    ends = torch.where(is_nl, pos + 1, -1)  # (B, W): a line ends before each of these
    fits = (ends > s[:, None]) & (ends <= s[:, None] + T - 1)  # room for the [SEP]
    e = torch.where(fits, ends, -1).max(1).values
    n_text = torch.where(e > 0, e - s, T - 1)
    x = rows.gather(1, s[:, None] + torch.arange(T))
    return torch.where(torch.arange(T) < n_text[:, None], x, sep_id), n_text


def corrupt(x, n_text, ratio, base_vocab, mask_id, gen, mask_frac=0.8, random_frac=0.1):
    """BERT corruption of the text prefix x[b, :n_text[b]], each position selected with
    probability ratio[b]; of the selected, mask_frac -> [MASK], random_frac -> a random base
    token (never a special id), the rest unchanged.

    Returns corrupted x (B, T), labels y (B, T) (the original token where selected, -1
    elsewhere, [SEP] and filler included) and kind (B, T) int8: 0 not selected, 1 [MASK],
    2 random, 3 selected but unchanged."""
    B, T = x.shape
    text = torch.arange(T) < n_text[:, None]
    sel = (torch.rand(B, T, generator=gen) < ratio[:, None]) & text
    u = torch.rand(B, T, generator=gen)
    to_mask = sel & (u < mask_frac)
    to_rand = sel & (u >= mask_frac) & (u < mask_frac + random_frac)
    rnd = torch.randint(base_vocab, (B, T), generator=gen)
    xc = torch.where(to_mask, mask_id, torch.where(to_rand, rnd, x))
    y = torch.where(sel, x, -1)
    kind = sel.to(torch.int8) * 3 - to_mask.to(torch.int8) * 2 - to_rand.to(torch.int8)
    return xc, y, kind


def draw_ratio(B, mode, p, eps, gen):
    """(B,) per-sample selection probability: fixed p, or uniform in [eps, 1] per sample as
    in masked-diffusion training (ratio = eps + (1 - eps) * t, t ~ U(0, 1))."""
    if mode == 'fixed':
        return torch.full((B,), p)
    return eps + (1 - eps) * torch.rand(B, generator=gen)


class MLMStats:
    """Corruption / length diagnostics, accumulated on every training batch (a few tensor
    reductions), turned into figures only at log time. Counts are cumulative since start."""

    def __init__(self, cap=200_000):
        self.kind = torch.zeros(4, dtype=torch.long)  # tokens per kind 0..3
        self.tokens = self.samples = 0
        # tensors, not Python numbers: reading a value back is left to summary() (log lines)
        self.len_sum, self.len_min, self.len_max = 0, None, None
        self.ratios, self.last, self.cap = [], None, cap

    def update(self, kind, valid_len, n_text):
        self.kind += torch.bincount(kind.flatten().long(), minlength=4)
        self.tokens += kind.numel()
        self.samples += len(valid_len)
        self.len_sum = self.len_sum + valid_len.sum()
        lo, hi = valid_len.min(), valid_len.max()
        self.len_min = lo if self.len_min is None else torch.minimum(self.len_min, lo)
        self.len_max = hi if self.len_max is None else torch.maximum(self.len_max, hi)
        # realised per-sample mask ratio: selected / corruptible tokens, (B,)
        self.last = (kind > 0).sum(1) / n_text.clamp(min=1)
        self.ratios.append(self.last)
        if len(self.ratios) > 64:  # keep the buffer one tensor, bounded by cap samples
            self.ratios = [torch.cat(self.ratios)[-self.cap :]]

    def summary(self):
        if self.last is None:
            return {}
        sel = self.kind[1:].sum().clamp(min=1).item()
        q = torch.tensor([0.1, 0.5, 0.9], device=self.last.device)
        snap, cum = self.last.quantile(q).tolist(), torch.cat(self.ratios).quantile(q).tolist()
        return {
            'mask%': 100 * self.kind[1].item() / sel,
            'rand%': 100 * self.kind[2].item() / sel,
            'keep%': 100 * self.kind[3].item() / sel,
            'len_mean': float(self.len_sum) / self.samples,
            'len_min': int(self.len_min),
            'len_max': int(self.len_max),
            'sup_per_tok': sel / self.tokens,
            'ratio_p10': snap[0],
            'ratio_p50': snap[1],
            'ratio_p90': snap[2],
            'ratio_cum_p10': cum[0],
            'ratio_cum_p50': cum[1],
            'ratio_cum_p90': cum[2],
        }


@torch.no_grad()
def evaluate(source, model, device):
    """The shared val metric: CE on positions replaced by [MASK] (all selected positions are
    masked, none random/kept) at the fixed ratio mlm_eval_ratio, over eval_iters val batches
    drawn with a fixed seed. For SEP packing also the attention-ablation probe: the same
    batches with no key mask (every query attends to the filler too)."""
    cfg = source.cfg
    was_training = model.training
    model.eval()
    gen = source.eval_gen('mlm')
    sums = {'val_mlm': 0.0, 'val_mlm_nomask': 0.0}
    weight = 0.0
    for _ in range(cfg['eval_iters']):
        b = source.batch_on(
            device,
            'val',
            cfg['batch_size'],
            gen,
            ratio_mode='fixed',
            p=cfg['mlm_eval_ratio'],
            mask_frac=1.0,
            random_frac=0.0,
        )
        s, w, _ = model.loss_terms(b['x'], b['y'], attention_mask=b.get('attention_mask'))
        sums['val_mlm'] += s.sum().item()
        weight += w.sum().item()
        if 'attention_mask' in b:
            s, _, _ = model.loss_terms(b['x'], b['y'])
            sums['val_mlm_nomask'] += s.sum().item()
    model.train(was_training)
    out = {'val_mlm': sums['val_mlm'] / max(weight, 1e-8)}
    if source.packing == 'sep':
        out['val_mlm_nomask'] = sums['val_mlm_nomask'] / max(weight, 1e-8)
        out['attn_probe'] = out['val_mlm_nomask'] - out['val_mlm']
    return out
