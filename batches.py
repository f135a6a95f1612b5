"""
Per-objective batch functions: what the model is trained to predict lives here.

Every source returns a dict of CPU tensors
    x (B, T) long inputs, y (B, T) long targets (-1 = ignored),
    optionally attention_mask (B, T) bool (True = real token) and loss_mask (B, T),
and `to_device` moves it (pinned, non_blocking on CUDA). The model never knows which
objective a batch came from. Randomness comes from `gen or self.gen`; train.py reseeds
self.gen per micro-batch from (seed, iter, index), so a resumed or DDP run draws exactly the
batches an uninterrupted single-process run would.

A source: `Source(cfg, data_dir, seed)` with .vocab_size, .meta, .get_batch(split, B, gen=None),
 optional .causal (default True), .diagnostics() -> dict (log lines) and
.evaluate(model, cfg, device) -> dict (eval time, model in eval mode).
Register it in OBJECTIVES; its config keys and defaults go in its `defaults` dict.
"""
import math
import os
import warnings

import numpy as np
import torch
from torch.nn import functional as F

import diffusion
import mlm
import pathstar
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


def gather_windows(data, starts, length):
    """data (memmap/ndarray), starts (B,) -> int64 tensor (B, length) of data[s:s+length]:
    one fancy-indexed read instead of a Python loop over rows."""
    return torch.from_numpy(data[np.asarray(starts)[:, None] + np.arange(length)].astype(np.int64))


class Source:
    defaults = {}
    causal = True

    def __init__(self, cfg, data_dir, seed):
        self.cfg, self.data_dir = cfg, data_dir
        self.gen = torch.Generator().manual_seed(seed)

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
        rows = gather_windows(data, ix, T + 1)  # (B, T+1)
        return {'x': rows[:, :-1], 'y': rows[:, 1:]}


class PathStar(Source):
    """Whole path-star rows (pathstar.py): x = row[:-1], y = row[1:]; PAUSE/PAD targets are
    never supervised; loss_on='answer' supervises only the answer tokens, 'all' the rest too.
    pathstar_teacherless: answer inputs become '$' (one parallel pass, Bachmann & Nagarajan)."""
    defaults = dict(pathstar_loss_on='answer', pathstar_teacherless=False, pathstar_eval_rows=500,
                    pathstar_online=False)  # online: a fresh graph for every training example

    def __init__(self, cfg, data_dir, seed):
        super().__init__(cfg, data_dir, seed)
        check_split_files(data_dir)
        self.meta = load_meta(data_dir)
        self.vocab_size = self.meta['vocab_size']
        if 'row_len' not in self.meta:
            raise DataError(f"{data_dir}/meta.pkl has no 'row_len': generate it with pathstar.py")
        self.rows = {s: torch.from_numpy(pathstar.read_rows(data_dir, s, self.meta).astype(np.int64))
                     for s in ('train', 'val')}  # (n, row_len): small enough to hold in memory
        for s, r in self.rows.items():
            if int(r.max()) >= self.vocab_size:
                raise DataError(f"{data_dir}/{s}.bin holds id {int(r.max())} >= vocab_size "
                                f"{self.vocab_size}: re-generate the dataset")
        if cfg['block_size'] < self.meta['row_len'] - 1:
            raise DataError(f"--block_size={cfg['block_size']} is too small for {data_dir} "
                            f"(rows of {self.meta['row_len']} tokens): use --block_size="
                            f"{self.meta['row_len'] - 1}")
        self.pause, self.pad = pathstar.special_ids(self.meta)
        if self.pause is None and self.pad is None:
            warnings.warn(f"{data_dir}/meta.pkl names no PAUSE/PAD token (neither "
                          f"meta['special_tokens'] nor meta['pause_token']): nothing is masked")
        self.loss_on = cfg['pathstar_loss_on']
        if self.loss_on not in ('answer', 'all'):
            raise DataError(f"--pathstar_loss_on={self.loss_on}: use 'answer' or 'all'")
        has_answer = 'answer_start' in self.meta or 'answer_by_first_token' in self.meta
        if self.loss_on == 'answer' and not has_answer:
            warnings.warn(f"{data_dir}/meta.pkl has no answer span: --pathstar_loss_on=all")
            self.loss_on = 'all'
        self.teacherless, self.online = cfg['pathstar_teacherless'], cfg['pathstar_online']
        if self.teacherless and 'teacherless_token' not in self.meta:
            raise DataError(f"--pathstar_teacherless needs an in-context dataset ({data_dir} has "
                            f"no meta['teacherless_token'])")
        self.last = {}

    def get_batch(self, split, batch_size, gen=None):
        if split == 'train' and self.online:
            rows = torch.from_numpy(pathstar.online_rows(self.meta, batch_size, gen or self.gen))
        else:
            rows = self.rows[split]
            rows = rows[torch.randint(len(rows), (batch_size,), generator=gen or self.gen)]
        x, y = rows[:, :-1].clone(), rows[:, 1:].clone()  # (B, row_len-1)
        is_pause = y == self.pause if self.pause is not None else torch.zeros_like(y, dtype=torch.bool)
        is_pad = y == self.pad if self.pad is not None else torch.zeros_like(y, dtype=torch.bool)
        prompt = torch.zeros_like(is_pad)
        if self.loss_on == 'answer' or self.teacherless:
            ans = pathstar.answer_mask(rows, self.meta)  # (B, row_len), row positions
            if self.loss_on == 'answer':
                prompt = ~ans[:, 1:] & ~is_pause & ~is_pad
            if self.teacherless:  # inputs at answer positions (the last one is cut) -> '$'
                x[ans[:, :-1]] = self.meta['teacherless_token']
        y[is_pause | is_pad | prompt] = -1
        n = y.numel()
        self.last = {'masked_pause': is_pause.sum().item() / n, 'masked_pad': is_pad.sum().item() / n,
                     'masked_prompt': prompt.sum().item() / n}
        return {'x': x, 'y': y}

    def diagnostics(self):
        return self.last

    def evaluate(self, model, cfg, device):
        """Path accuracy on the first pathstar_eval_rows held-out and train rows."""
        mode = 'parallel' if self.teacherless else 'greedy'
        n, out = cfg['pathstar_eval_rows'], {}
        for split in ('val', 'train'):
            rows = self.rows[split]
            if self.meta.get('format') == 'inweights':
                rows = rows[rows[:, 0] == self.meta['path_token']]
            if 'answer_start' not in self.meta or len(rows) == 0:
                return {}
            r = pathstar.evaluate_paths(model, rows[:n], self.meta, mode, device=device)
            out[f'{split}_path_acc'] = r['exact_match']
            out[f'{split}_pos_acc'] = pathstar.fmt(r['per_position'])
            if split == 'val' and 'tf_per_position' in r:  # given the true prefix
                out['val_tf_pos_acc'] = pathstar.fmt(r['tf_per_position'])
        if self.meta.get('format') == 'inweights':  # edge facts: is v recalled from u?
            rows = self.rows['train']
            rows = rows[rows[:, 0] == self.meta['edge_token']][:n]
            a, _ = self.meta['answer_by_first_token'][self.meta['edge_token']]
            out['edge_acc'] = pathstar.evaluate_paths(model, rows, self.meta, 'greedy', a, 1,
                                                      device=device)['exact_match']
        return out
class MaskedLM(Source):
    """Bidirectional masked LM (issue 5). mlm_packing='sep': samples start at a line beginning,
    pack whole lines and end with [SEP]; batches carry attention_mask (True up to and including
    [SEP]). mlm_packing='window': random fixed windows, no [SEP], no mask (the baseline).
    [MASK] and [SEP] are appended to the dataset's vocabulary: ids base_vocab, base_vocab + 1,
    recorded in self.meta (and so in every checkpoint). See mlm.py."""
    causal = False
    defaults = dict(mlm_packing='sep', mlm_probability=0.15, mlm_ratio='fixed', mlm_ratio_eps=1e-3,
                    mlm_mask_frac=0.8, mlm_random_frac=0.1, mlm_eval_ratio=0.15)

    def __init__(self, cfg, data_dir, seed):
        super().__init__(cfg, data_dir, seed)
        self.check_config(cfg)
        check_split_files(data_dir)
        base = load_meta(data_dir)
        self.base_vocab = base['vocab_size']
        self.mask_id, self.sep_id = self.base_vocab, self.base_vocab + 1
        self.vocab_size = self.base_vocab + 2
        self.meta = dict(base, vocab_size=self.vocab_size, mask_id=self.mask_id, sep_id=self.sep_id)
        if 'itos' in base:
            self.meta['itos'] = {**base['itos'], self.mask_id: '[MASK]', self.sep_id: '[SEP]'}
            self.meta['stoi'] = {**base['stoi'], '[MASK]': self.mask_id, '[SEP]': self.sep_id}
        dtype = np.dtype(base.get('dtype', token_dtype(self.base_vocab)))
        self.packing, self.T = cfg['mlm_packing'], cfg['block_size']
        self.data, self.bounds = {}, {}
        for split in ('train', 'val'):
            path = os.path.join(data_dir, f'{split}.bin')
            self.data[split] = open_tokens(path, self.base_vocab, dtype)
            if len(self.data[split]) <= self.T:
                raise DataError(f"{path} has {len(self.data[split])} tokens, too few for "
                                f"--block_size={self.T}: lower block_size")
            if self.packing == 'sep':  # line starts, indexed once
                self.bounds[split] = mlm.line_bounds(self.data[split], mlm.newline_ids(base, path))
        self.stats = mlm.MLMStats()

    @staticmethod
    def check_config(cfg):
        def bad(key, why):
            raise ConfigError(f"--{key}={cfg[key]!r}: {why}")
        if cfg['mlm_packing'] not in ('sep', 'window'):
            bad('mlm_packing', "choose 'sep' (line-aligned, ends in [SEP]) or 'window'")
        if cfg['mlm_ratio'] not in ('fixed', 'uniform'):
            bad('mlm_ratio', "choose 'fixed' (mlm_probability) or 'uniform' (drawn per sample)")
        for key in ('mlm_probability', 'mlm_eval_ratio', 'mlm_ratio_eps'):
            if not 0.0 < cfg[key] <= 1.0:
                bad(key, "must be in (0, 1]")
        if not (0 <= cfg['mlm_mask_frac'] and 0 <= cfg['mlm_random_frac']
                and cfg['mlm_mask_frac'] + cfg['mlm_random_frac'] <= 1.0):
            bad('mlm_random_frac', "mlm_mask_frac and mlm_random_frac must be >= 0 and sum to <= 1")
        if cfg['block_size'] < 2:
            bad('block_size', "MLM needs at least 2 positions (a token and its [SEP])")

    def make_batch(self, split, B, gen, ratio_mode, p, mask_frac, random_frac):
        data, T = self.data[split], self.T
        if self.packing == 'sep':
            first = torch.randint(len(self.bounds[split]) - 1, (B,), generator=gen).numpy()
            x, n_text = mlm.pack_lines(data, self.bounds[split], first, T, self.sep_id)
        else:
            s = torch.randint(len(data) - T + 1, (B,), generator=gen).numpy()
            x = gather_windows(data, s, T)
            n_text = torch.full((B,), T)
        ratio = mlm.draw_ratio(B, ratio_mode, p, self.cfg['mlm_ratio_eps'], gen)
        xc, y, kind = mlm.corrupt(x, n_text, ratio, self.base_vocab, self.mask_id, gen,
                                  mask_frac, random_frac)
        b = {'x': xc, 'y': y}
        if self.packing == 'sep':
            b['attention_mask'] = torch.arange(T) <= n_text[:, None]  # (B, T), [SEP] included
        return b, kind, n_text

    def get_batch(self, split, batch_size, gen=None):
        c = self.cfg
        b, kind, n_text = self.make_batch(split, batch_size, gen or self.gen, c['mlm_ratio'],
                                          c['mlm_probability'], c['mlm_mask_frac'],
                                          c['mlm_random_frac'])
        if gen is None and split == 'train':  # training batches only, not evaluation's
            valid = n_text + 1 if self.packing == 'sep' else n_text
            self.stats.update(kind, valid, n_text)
        return b

    def diagnostics(self):
        return self.stats.summary()

    def evaluate(self, model, cfg, device):
        return mlm.evaluate(self, model, cfg, device)
class SFT(Source):
    """Supervised fine-tuning on chat shards from data/chat/prepare.py: random windows of the
    token stream, as NextToken, with the aligned uint8 mask shifted *with the targets*:
    x = tok[i:i+T], y = tok[i+1:i+T+1], loss_mask = mask[i+1:i+T+1] (mask[j] = 1: token j is
    a supervised target). use_loss_mask=False trains on every token of the same windows."""
    defaults = {'use_loss_mask': True}

    def __init__(self, cfg, data_dir, seed):
        super().__init__(cfg, data_dir, seed)
        from chat import check_split
        self.meta = load_meta(data_dir)
        if 'special' not in self.meta:
            raise DataError(f"{data_dir}/meta.pkl has no chat special tokens: --objective=sft "
                            f"needs data from data/chat/prepare.py")
        self.vocab_size = self.meta['vocab_size']
        self.dtype = np.dtype(self.meta['dtype'])
        self.block_size, self.use_loss_mask = cfg['block_size'], cfg['use_loss_mask']
        self.shards = {}  # split -> [(token path, mask path, length)]
        for split in ('train', 'val'):
            shards = check_split(data_dir, split, self.dtype, self.vocab_size)
            for tok, _, (path, _) in shards:
                if len(tok) <= self.block_size:
                    raise DataError(f"{path} has {len(tok)} tokens, too few for --block_size="
                                    f"{self.block_size}: lower block_size or add conversations")
            self.shards[split] = [(tp, mp, len(tok)) for tok, _, (tp, mp) in shards]
        self.mask_frac = 0.0

    def windows(self, split, batch_size, gen):
        """(B, T+1) tokens and (B, T+1) mask of random windows (shard chosen by length)."""
        shards, T = self.shards[split], self.block_size
        room = torch.tensor([n - T for _, _, n in shards], dtype=torch.float64)  # start offsets
        which = torch.multinomial(room, batch_size, replacement=True, generator=gen)
        ix = (torch.rand(batch_size, generator=gen, dtype=torch.float64) * room[which]).long()
        toks = torch.empty(batch_size, T + 1, dtype=torch.long)
        masks = torch.empty(batch_size, T + 1, dtype=torch.bool)
        for s in which.unique().tolist():  # each shard opened once per batch (nanoGPT re-opens)
            rows = (which == s).nonzero().squeeze(1)
            tp, mp, _ = shards[s]
            starts = ix[rows].numpy()
            toks[rows] = gather_windows(np.memmap(tp, dtype=self.dtype, mode='r'), starts, T + 1)
            masks[rows] = gather_windows(np.memmap(mp, dtype=np.uint8, mode='r'), starts, T + 1) > 0
        return toks, masks

    def get_batch(self, split, batch_size, gen=None):
        rows, mask = self.windows(split, batch_size, gen or self.gen)
        batch = {'x': rows[:, :-1], 'y': rows[:, 1:]}
        if self.use_loss_mask:
            batch['loss_mask'] = mask[:, 1:]  # shifted with the targets
        if split == 'train':
            self.mask_frac = float(mask[:, 1:].float().mean())
        return batch

    def diagnostics(self):
        return {'mask_frac': self.mask_frac}  # supervised share of the last train batch

    @torch.no_grad()
    def evaluate(self, model, cfg, device):
        """Val CE on the masked (e.g. assistant) tokens and on all tokens, whatever
        use_loss_mask is, so runs with and without the mask compare on the same figure."""
        import torch.nn.functional as F
        was_training = model.training
        model.eval()
        gen = torch.Generator().manual_seed(cfg['seed'] + 1)
        sums = torch.zeros(2, dtype=torch.float64)
        counts = torch.zeros(2, dtype=torch.float64)
        for _ in range(cfg['eval_iters']):
            rows, mask = self.windows('val', cfg['batch_size'], gen)
            logits, _ = model(rows[:, :-1].to(device))
            ce = F.cross_entropy(logits.float().flatten(0, 1), rows[:, 1:].flatten().to(device),
                                 reduction='none').double().cpu()
            m = mask[:, 1:].flatten().double()
            sums += torch.stack([(ce * m).sum(), ce.sum()])
            counts += torch.stack([m.sum(), torch.tensor(float(m.numel()), dtype=torch.float64)])
        model.train(was_training)
        loss = (sums / counts.clamp(min=1)).tolist()
        return {f"val_{self.meta.get('mask_role', 'assistant')}": loss[0], 'val_all': loss[1]}
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
        if self.rows and split == 'train' and self.cfg['pathstar_online']:  # fresh graphs
            tok = torch.from_numpy(pathstar.online_rows(self.meta, batch_size, gen))
        else:
            if self.rows:
                ix = torch.randint(len(data) // T, (batch_size,), generator=gen).numpy() * T
            else:
                ix = torch.randint(len(data) - T + 1, (batch_size,), generator=gen).numpy()
            tok = gather_windows(data, ix, T)
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
        t = t.clamp(min=self.cfg['mask_t_min'])
        masked = diffusion.draw_mask(maskable, t, gen, self.cfg['mask_min_one'])
        self._last = {'t_mean': float(t.mean()),
                      'mask_frac': float(masked.sum() / maskable.sum().clamp(min=1))}
        return tok, maskable, attn, t, masked

    def diagnostics(self):
        return self._last


class Unmasking(MaskedSource):
    """Denoiser: [MASK] at each maskable position with prob t ~ U(eps, 1); predict the originals.
    Val also reports the masked CE and the 1/t-weighted bound (bits/token, as MDLM/LLaDA)."""
    # mask_t_min: t = max(t, mask_t_min) (e.g. 1/answer_len); mask_min_one: >= 1 masked per row
    defaults = {'mask_eps': 1e-3, 'mask_stratified': True, 'mask_t_min': 0.0,
                'mask_min_one': False, 'diffusion_eval_rows': 500}
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
        out = {'val_masked_ce': ce_sum / max(n_masked, 1),
               'val_bound_bpt': bound / rows / math.log(2)}
        if self.rows:  # path-star: decode the answers (confidence / random order, one pass)
            n = cfg['diffusion_eval_rows']
            base_meta = {**self.meta, 'vocab_size': self.base_vocab}  # the file's dtype
            val = pathstar.read_rows(self.data_dir, 'val', base_meta)[:n].astype(np.int64)
            for name, order, steps in (('conf', 'confidence', 0), ('rand', 'random', 0),
                                       ('parallel', 'confidence', 1)):
                r = diffusion.path_accuracy(model, val, self.meta, order, steps, device)
                out[f'val_path_acc_{name}'] = r['exact_match']
                if name == 'conf':
                    out['conf_pos_acc'] = ' '.join(f'{v:.3f}' for v in r['per_position'])
                    out['conf_order'] = ' '.join(f'{v:.1f}' for v in r['order'])
            single = diffusion.single_position_accuracy(model, val, self.meta, device)
            out['single_pos_acc'] = ' '.join(f'{v:.3f}' for v in single)
        return out


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
    'pathstar': PathStar,
    'mlm': MaskedLM,
    'sft': SFT,
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
