"""
Per-objective batch functions: what the model is trained to predict lives here.

Every source returns a dict of CPU tensors
    x (B, T) long inputs, y (B, T) long targets (-1 = ignored),
    optionally attention_mask (B, T) bool (True = real token) and loss_mask (B, T),
and `to_device` moves it (pinned, non_blocking on CUDA). The model never knows which
objective a batch came from. Randomness comes from a torch.Generator owned by the source,
whose state is checkpointed, so a resumed run draws exactly the batches it would have drawn.

A source: `Source(cfg, data_dir, seed)` with .vocab_size, .meta, .get_batch(split, B, gen=None),
.state_dict()/.load_state_dict(), optional .causal (default True) and .diagnostics() -> dict.
Register it in OBJECTIVES; its config keys and defaults go in its `defaults` dict.
"""
import math
import os
import warnings

import numpy as np
import torch
from torch.nn import functional as F

import diffusion
from configurator import ConfigError
from utils import DataError, load_meta, token_dtype


def to_device(batch, device):
    if torch.device(device).type == 'cuda':
        return {k: v.pin_memory().to(device, non_blocking=True) for k, v in batch.items()}
    return {k: v.to(device) for k, v in batch.items()}


def check_split_files(data_dir, splits=('train', 'val'), suffix='.bin'):
    if not os.path.isdir(data_dir):
        raise DataError(f"dataset folder {data_dir} not found: check --dataset, or run "
                        f"data/<dataset>/prepare.py (or pathstar.py) first")
    for split in splits:
        p = os.path.join(data_dir, split + suffix)
        if not os.path.exists(p):
            raise DataError(f"{p} not found: re-run the dataset's prepare script")


def open_tokens(path, vocab_size, dtype):
    """Memmap a token file and check every id is < vocab_size (once, at load)."""
    data = np.memmap(path, dtype=dtype, mode='r')
    if len(data) == 0:
        raise DataError(f"{path} is empty: re-run the dataset's prepare script")
    top = int(data.max())
    if top >= vocab_size:
        raise DataError(f"{path} holds token id {top} >= vocab_size {vocab_size} from meta.pkl: "
                        f"the data and meta.pkl disagree; re-run the dataset's prepare script")
    return data


class Source:
    defaults = {}
    causal = True

    def __init__(self, cfg, data_dir, seed):
        self.cfg, self.data_dir = cfg, data_dir
        self.gen = torch.Generator().manual_seed(seed)

    def state_dict(self):
        return {'gen': self.gen.get_state()}

    def load_state_dict(self, state):
        self.gen.set_state(state['gen'])

    def diagnostics(self):
        return {}


class NextToken(Source):
    """Plain next-token prediction on random windows of a flat token stream (nanoGPT)."""

    def __init__(self, cfg, data_dir, seed):
        super().__init__(cfg, data_dir, seed)
        check_split_files(data_dir)
        self.meta = load_meta(data_dir, required=False)
        if self.meta is None:
            warnings.warn(f"no meta.pkl in {data_dir}: assuming GPT-2 BPE (vocab_size 50304, uint16)")
            self.meta = {'vocab_size': 50304}
        self.vocab_size = self.meta['vocab_size']
        self.dtype = np.dtype(self.meta.get('dtype', token_dtype(self.vocab_size)))
        self.block_size = cfg['block_size']
        self.paths = {s: os.path.join(data_dir, f'{s}.bin') for s in ('train', 'val')}
        for split, path in self.paths.items():
            n = len(open_tokens(path, self.vocab_size, self.dtype))
            if n <= self.block_size:
                raise DataError(f"{path} has {n} tokens, too few for --block_size={self.block_size}: "
                                f"lower block_size below {n}")

    def get_batch(self, split, batch_size, gen=None):
        # re-open the memmap each batch, as nanoGPT does, to avoid its memory leak
        data = np.memmap(self.paths[split], dtype=self.dtype, mode='r')
        T = self.block_size
        ix = torch.randint(len(data) - T, (batch_size,), generator=gen or self.gen).numpy()
        rows = np.stack([data[i:i + T + 1] for i in ix]).astype(np.int64)  # (B, T+1)
        rows = torch.from_numpy(rows)
        return {'x': rows[:, :-1], 'y': rows[:, 1:]}


class MaskedSource(Source):
    """Shared data side of the masked-diffusion objectives (see diffusion.py).

    Text: random fixed windows of block_size from a flat token stream; every position can be
    masked. Row datasets (meta has `answer_start`, e.g. path-star): fixed rows of meta['row_len']
    tokens; only answer positions [answer_start, answer_start + answer_len) are masked, the
    graph and query stay visible; PAD (meta['special_tokens']['PAD']) is never attended to."""
    causal = False

    def __init__(self, cfg, data_dir, seed):
        super().__init__(cfg, data_dir, seed)
        check_split_files(data_dir)
        base = load_meta(data_dir)
        self.base_vocab = base['vocab_size']
        self.dtype = np.dtype(base.get('dtype', token_dtype(self.base_vocab)))
        self.vocab_size = self.base_vocab + 2
        self.meta = {**base, 'vocab_size': self.vocab_size, 'base_vocab_size': self.base_vocab,
                     'mask_token_id': self.base_vocab, 'wrong_token_id': self.base_vocab + 1}
        self.mask_id, self.wrong_id = self.base_vocab, self.base_vocab + 1
        self.rows = 'answer_start' in base
        self.T = base['row_len'] if self.rows else cfg['block_size']
        if self.T > cfg['block_size']:
            raise DataError(f"{data_dir}: rows of {self.T} tokens exceed --block_size="
                            f"{cfg['block_size']}; raise block_size to {self.T}")
        self.pad = base.get('special_tokens', {}).get('PAD') if self.rows else None
        self.paths = {s: os.path.join(data_dir, f'{s}.bin') for s in ('train', 'val')}
        for split, path in self.paths.items():
            n = len(open_tokens(path, self.base_vocab, self.dtype))
            if (self.rows and n % self.T) or n <= (0 if self.rows else self.T):
                raise DataError(f"{path} has {n} tokens: not whole rows of {self.T} / too few for "
                                f"--block_size={self.T}; re-run the dataset's prepare script")
        self._last = {}

    def clean(self, split, batch_size, gen):
        """Clean tokens (B, T), maskable (B, T) bool, attention_mask (B, T) bool or None."""
        data = np.memmap(self.paths[split], dtype=self.dtype, mode='r')
        T = self.T
        if self.rows:
            ix = torch.randint(len(data) // T, (batch_size,), generator=gen).numpy() * T
        else:
            ix = torch.randint(len(data) - T + 1, (batch_size,), generator=gen).numpy()
        tok = torch.from_numpy(np.stack([data[i:i + T] for i in ix]).astype(np.int64))
        maskable = torch.ones_like(tok, dtype=torch.bool)
        attn = None
        if self.rows:
            a0 = self.meta['answer_start']
            pos = torch.arange(T)
            maskable &= (pos >= a0) & (pos < a0 + self.meta['answer_len'])
            if self.pad is not None:
                attn = tok != self.pad
                maskable &= attn
        return tok, maskable, attn

    def corrupt(self, split, batch_size, gen):
        tok, maskable, attn = self.clean(split, batch_size, gen)
        t = diffusion.draw_t(batch_size, self.cfg['mask_eps'], self.cfg['mask_stratified'], gen)
        masked = diffusion.draw_mask(maskable, t, gen)
        self._last = {'t_mean': float(t.mean()),
                      'mask_frac': float(masked.sum() / maskable.sum().clamp(min=1))}
        return tok, maskable, attn, t, masked

    def diagnostics(self):
        return self._last


class Unmasking(MaskedSource):
    """Denoiser: [MASK] at each maskable position with prob t ~ U(eps, 1); predict the originals.
    Val also reports the masked CE and the 1/t-weighted bound (bits/token, as MDLM/LLaDA)."""
    defaults = {'mask_eps': 1e-3, 'mask_stratified': True}
    run_tag = 'unmasking'

    def get_batch(self, split, batch_size, gen=None):
        tok, maskable, attn, t, masked = self.corrupt(split, batch_size, gen or self.gen)
        b = {'x': torch.where(masked, self.mask_id, tok), 'y': torch.where(masked, tok, -1),
             't': t, 'maskable': maskable}
        return b if attn is None else {**b, 'attention_mask': attn}

    @torch.no_grad()
    def evaluate(self, model, cfg, device):
        """Masked CE (nats) and the bound E_t[(1/t) sum_masked CE] / #maskable in bits/token."""
        gen = torch.Generator().manual_seed(cfg['seed'] + 7)
        ce_sum = n_masked = bound = rows = 0.0
        for _ in range(cfg['eval_iters']):
            b = to_device(self.get_batch('val', cfg['batch_size'], gen), device)
            logits, _ = model(b['x'], attention_mask=b.get('attention_mask'))
            ce = F.cross_entropy(logits.float().transpose(1, 2), b['y'], ignore_index=-1,
                                 reduction='none')  # (B, T), 0 where y == -1
            ce_sum, n_masked = ce_sum + float(ce.sum()), n_masked + float((b['y'] != -1).sum())
            per_row = ce.sum(1) / b['t'] / b['maskable'].sum(1).clamp(min=1)
            bound, rows = bound + float(per_row.sum()), rows + len(per_row)
        return {'val_masked_ce': ce_sum / max(n_masked, 1),
                'val_bound_bpt': bound / rows / math.log(2)}


class Remasking(MaskedSource):
    """Remasker: positions chosen as for the denoiser get a different token (uniform over the base
    vocabulary, or with remasking_denoiser=ckpt a frozen denoiser's own sample: on-policy);
    target WRONG where the input differs from the original, the original elsewhere.
    remasking_loss_type: corrupted_only (only WRONG targets: collapses to 'all WRONG') or
    all_positions (every real position)."""
    defaults = {'remasking_loss_type': 'all_positions', 'remasking_denoiser': '',
                'remasking_temperature': 1.0}

    def __init__(self, cfg, data_dir, seed):
        super().__init__(cfg, data_dir, seed)
        lt = cfg['remasking_loss_type']
        if lt not in ('corrupted_only', 'all_positions'):
            raise ConfigError(f"--remasking_loss_type={lt}: use corrupted_only or all_positions")
        self.run_tag = f'remasking_{lt}'
        self.denoiser = None
        if cfg['remasking_denoiser']:
            import sample  # checkpoint loading lives there
            self.denoiser, ck = sample.load_checkpoint(cfg['remasking_denoiser'], 'cpu')
            if ck['meta'].get('mask_token_id') != self.mask_id or ck['model_args']['causal']:
                raise DataError(f"--remasking_denoiser={cfg['remasking_denoiser']} is not an "
                                f"unmasking checkpoint of this dataset (mask id {self.mask_id})")
            self.meta = {**self.meta, 'remasking_denoiser': cfg['remasking_denoiser']}

    def get_batch(self, split, batch_size, gen=None):
        gen = gen or self.gen
        tok, maskable, attn, t, masked = self.corrupt(split, batch_size, gen)
        if self.denoiser is None:
            x = torch.where(masked, diffusion.random_other_tokens(tok, self.base_vocab, gen), tok)
        else:
            x = diffusion.denoiser_samples(self.denoiser, torch.where(masked, self.mask_id, tok),
                                           masked, self.base_vocab,
                                           self.cfg['remasking_temperature'], gen, attn)
        wrong = x != tok  # (B, T): corrupted positions
        y = torch.where(wrong, self.wrong_id, tok)
        if self.cfg['remasking_loss_type'] == 'corrupted_only':
            y = torch.where(wrong, y, -1)
        self._last['wrong_frac'] = float(wrong.sum() / maskable.sum().clamp(min=1))
        b = {'x': x, 'y': y, 't': t, 'wrong': wrong, 'maskable': maskable}
        return b if attn is None else {**b, 'attention_mask': attn}

    @torch.no_grad()
    def evaluate(self, model, cfg, device):
        """Detection rates on val: clean_as_wrong = share of clean (maskable, uncorrupted)
        positions predicted WRONG (the corrupted_only collapse), wrong_recall = share of
        corrupted positions predicted WRONG, wrong_precision."""
        gen = torch.Generator().manual_seed(cfg['seed'] + 7)
        fp = tp = n_clean = n_wrong = n_pred = 0.0
        for _ in range(cfg['eval_iters']):
            b = to_device(self.get_batch('val', cfg['batch_size'], gen), device)
            logits, _ = model(b['x'], attention_mask=b.get('attention_mask'))
            pred = logits.argmax(-1) == self.wrong_id
            clean = b['maskable'] & ~b['wrong']
            fp, tp = fp + float((pred & clean).sum()), tp + float((pred & b['wrong']).sum())
            n_clean, n_wrong = n_clean + float(clean.sum()), n_wrong + float(b['wrong'].sum())
            n_pred += float((pred & b['maskable']).sum())
        return {'clean_as_wrong': fp / max(n_clean, 1), 'wrong_recall': tp / max(n_wrong, 1),
                'wrong_precision': tp / max(n_pred, 1)}


OBJECTIVES = {
    'next_token': NextToken,
    'unmasking': Unmasking,
    'remasking': Remasking,
}


def all_defaults():
    """Every objective's config keys, merged (train.py exposes them as flat config keys)."""
    out = {}
    for cls in OBJECTIVES.values():
        out.update(cls.defaults)
    return out


def make_source(cfg, seed):
    objective = cfg['objective']
    if objective not in OBJECTIVES:
        raise DataError(f"--objective={objective} is unknown; choose one of {sorted(OBJECTIVES)}")
    data_dir = os.path.join(cfg['data_root'], cfg['dataset'])
    return OBJECTIVES[objective](cfg, data_dir, seed)
