"""
Per-objective batch sources: what the model is trained to predict lives here, and nothing else.

Every source returns a dict of CPU tensors
    x (B, T) long inputs, y (B, T) long targets (-1 = ignored),
    optionally attention_mask (B, T) bool (True = real token) and loss_mask (B, T),
plus objective-specific tensors its metrics use. The model never knows which objective a batch
came from.

A source: `Source(cfg, data_dir, seed)` with .vocab_size, .meta, .causal,
    .host_batch(split, B, gen) -> (batch, stats)   what a subclass writes: CPU tensors, all
                                randomness from `gen` (train.py seeds one per micro-batch from
                                (seed, iter, index): resume and DDP are exact), no state changed,
                                so train.py builds the next step's batches in a thread while the
                                device runs this one; stats describe the batch (tensors);
    .device_batch(batch, device) -> (batch, stats) the device stage: moves the batch (pinned,
                                non-blocking); sources that draft with a frozen denoiser
                                (remasking, hybrid) run it here, on the training device;
    .get_batch(split, B, gen)   both stages on the CPU, the stats in self.last_stats (tests, REPL);
    .observe(stats)             train.py: "these were the stats of a training micro-batch",
    .diagnostics() -> dict      what the log line shows (floats: read only at log lines),
    .evaluate(model, device)    objective metrics at eval time (model in eval mode).
Batches are host code: `draw` runs host_batch with the CPU as default device, so they are
built on the host whatever default device a caller has set (tests/test_device_guard.py runs the
trainer and the sampler with the default device 'meta' to find tensors made without a device).
Each source declares the config keys it reads in `defaults` (plus COMMON_KEYS); self.cfg holds
only those, so reading another objective's key fails at once. Register sources in OBJECTIVES.
"""

import os
import warnings

import numpy as np
import torch

import chat
import checkpoint
import diffusion
import mlm
import pathstar
import shards
import tasks
import utils
from configurator import ConfigError
from utils import DataError, TokenFile, gather_windows, load_meta, seeded, to_device

COMMON_KEYS = ('block_size', 'batch_size', 'eval_iters', 'seed')  # trainer keys a source may read


def check_dataset_dir(data_dir):
    if not os.path.isdir(data_dir):
        raise DataError(
            f"dataset folder {data_dir} not found: check --dataset, or run "
            f"data/<dataset>/prepare.py (or pathstar.py) first"
        )


def pause_pad_targets(y, pause, pad):
    """(is_pause, is_pad): (B, T) bool, the targets that are PAUSE / PAD (never supervised);
    all False for an id the meta does not name (None)."""
    none = torch.zeros_like(y, dtype=torch.bool)
    return (y == pause if pause is not None else none), (y == pad if pad is not None else none)


def random_rows(rows, batch_size, gen):
    return rows[torch.randint(len(rows), (batch_size,), generator=gen)]


class Source:
    defaults = {}
    causal = True

    def __init__(self, cfg, data_dir, seed):
        self.cfg = {k: cfg[k] for k in self.keys() if k in cfg}  # declared keys only
        self.data_dir = data_dir
        self.gen = torch.Generator().manual_seed(seed)  # for get_batch(gen=None): tests, REPL
        self.last_stats, self.diag = {}, {}
        check_dataset_dir(data_dir)

    @classmethod
    def keys(cls):
        """The config keys this source reads: its own `defaults` (and its bases') + COMMON_KEYS."""
        keys = set(COMMON_KEYS)
        for klass in cls.__mro__:
            keys.update(getattr(klass, 'defaults', {}))
        return keys

    def draw(self, split, batch_size, gen, **kw):
        """(host batch, stats) of host_batch, built with the CPU as default device."""
        with torch.device('cpu'):
            return self.host_batch(split, batch_size, gen, **kw)

    def device_batch(self, batch, device):
        """(batch on device, stats of this stage): the batch moved, nothing else to do."""
        return to_device(batch, device), {}

    def get_batch(self, split, batch_size, gen=None, **kw):
        """The complete batch on the CPU (both stages); its stats in self.last_stats."""
        b, stats = self.draw(split, batch_size, gen or self.gen, **kw)
        b, more = self.device_batch(b, 'cpu')
        self.last_stats = {**stats, **more}
        return b

    def batch_on(self, device, split, batch_size, gen, **kw):
        """The complete batch on device (evaluation: the stats are not kept)."""
        return self.device_batch(self.draw(split, batch_size, gen, **kw)[0], device)[0]

    def observe(self, stats=None):
        """stats (default: of the last get_batch) were a training micro-batch's: they become the
        diagnostics. Kept as tensors (maybe on the device): read only at log lines."""
        self.diag = dict(self.last_stats if stats is None else stats)

    def diagnostics(self):
        return {k: float(v) for k, v in self.diag.items()}

    def eval_gen(self, name):
        """The fixed generator of an evaluation (same batches at every evaluation)."""
        return seeded(self.cfg['seed'], 'eval', name)


class NextToken(Source):
    """Plain next-token prediction on random windows of a flat token stream (nanoGPT). PAUSE and
    PAD targets are never supervised when the meta names them (meta['special_tokens']: path-star
    data, e.g. the older flat path-star streams with no row structure), and their shares are
    logged (masked_pause, masked_pad) as the pathstar objective logs them."""

    def __init__(self, cfg, data_dir, seed):
        super().__init__(cfg, data_dir, seed)
        self.meta = load_meta(data_dir, required=False)
        if self.meta is None:
            warnings.warn(
                f"no meta.pkl in {data_dir}: assuming GPT-2 BPE (vocab_size 50304, uint16)"
            )
            self.meta = {'vocab_size': 50304}
        self.vocab_size = self.meta['vocab_size']
        self.T = self.cfg['block_size']
        self.files = {
            s: shards.token_file(data_dir, s, self.meta, self.T + 1, f'--block_size={self.T}')
            for s in ('train', 'val')
        }
        self.pause, self.pad = pathstar.pause_pad_ids(self.meta)

    def host_batch(self, split, batch_size, gen):
        rows = self.files[split].windows(batch_size, self.T + 1, gen)  # (B, T+1)
        x, y = rows[:, :-1], rows[:, 1:]
        if self.pause is None and self.pad is None:
            return {'x': x, 'y': y}, {}
        is_pause, is_pad = pause_pad_targets(y, self.pause, self.pad)
        stats = {'masked_pause': is_pause.float().mean(), 'masked_pad': is_pad.float().mean()}
        return {'x': x, 'y': y.masked_fill(is_pause | is_pad, -1)}, stats


class PathStar(Source):
    """Whole path-star rows (pathstar.py): x = row[:-1], y = row[1:]; PAUSE/PAD targets are
    never supervised; loss_on='answer' supervises only the answer tokens, 'all' the rest too.
    pathstar_teacherless: answer inputs become '$' (one parallel pass, Bachmann & Nagarajan)."""

    defaults = dict(
        pathstar_loss_on='answer',
        pathstar_teacherless=False,
        pathstar_eval_rows=500,
        pathstar_online=False,
    )  # online: a fresh graph for every training example

    def __init__(self, cfg, data_dir, seed):
        super().__init__(cfg, data_dir, seed)
        self.meta = load_meta(data_dir)
        self.vocab_size = self.meta['vocab_size']
        if 'row_len' not in self.meta:
            raise DataError(f"{data_dir}/meta.pkl has no 'row_len': generate it with pathstar.py")
        self.rows = {
            s: TokenFile(data_dir, s, self.meta).rows(self.meta['row_len'])
            for s in ('train', 'val')
        }  # (n, row_len): small enough to hold in memory
        if self.cfg['block_size'] < self.meta['row_len'] - 1:
            raise DataError(
                f"--block_size={self.cfg['block_size']} is too small for {data_dir} "
                f"(rows of {self.meta['row_len']} tokens): use --block_size="
                f"{self.meta['row_len'] - 1}"
            )
        self.pause, self.pad = pathstar.pause_pad_ids(self.meta)
        if self.pause is None and self.pad is None:
            warnings.warn(
                f"{data_dir}/meta.pkl names no PAUSE/PAD token (no "
                f"meta['special_tokens']): nothing is masked"
            )
        if self.cfg['pathstar_eval_rows'] < 1:
            raise ConfigError(
                f"--pathstar_eval_rows={self.cfg['pathstar_eval_rows']}: must be >= 1 "
                f"(held-out rows decoded at each evaluation)"
            )
        self.loss_on = self.cfg['pathstar_loss_on']
        if self.loss_on not in ('answer', 'all'):
            raise DataError(f"--pathstar_loss_on={self.loss_on}: use 'answer' or 'all'")
        has_answer = 'answer_start' in self.meta or 'answer_by_first_token' in self.meta
        if self.loss_on == 'answer' and not has_answer:
            warnings.warn(f"{data_dir}/meta.pkl has no answer span: --pathstar_loss_on=all")
            self.loss_on = 'all'
        self.teacherless, self.online = (
            self.cfg['pathstar_teacherless'],
            self.cfg['pathstar_online'],
        )
        if self.teacherless and 'teacherless_token' not in self.meta:
            raise DataError(
                f"--pathstar_teacherless needs an in-context dataset ({data_dir} has "
                f"no meta['teacherless_token'])"
            )

    def host_batch(self, split, batch_size, gen):
        if split == 'train' and self.online:
            rows = torch.from_numpy(pathstar.online_rows(self.meta, batch_size, gen))
        else:
            rows = random_rows(self.rows[split], batch_size, gen)
        x, y = rows[:, :-1].clone(), rows[:, 1:].clone()  # (B, row_len-1)
        is_pause, is_pad = pause_pad_targets(y, self.pause, self.pad)
        prompt = torch.zeros_like(is_pad)
        if self.loss_on == 'answer' or self.teacherless:
            ans = pathstar.answer_mask(rows, self.meta)  # (B, row_len), row positions
            if self.loss_on == 'answer':
                prompt = ~ans[:, 1:] & ~is_pause & ~is_pad
            if self.teacherless:  # inputs at answer positions (the last one is cut) -> '$'
                x[ans[:, :-1]] = self.meta['teacherless_token']
        y[is_pause | is_pad | prompt] = -1
        stats = {
            'masked_pause': is_pause.float().mean(),
            'masked_pad': is_pad.float().mean(),
            'masked_prompt': prompt.float().mean(),
        }
        return {'x': x, 'y': y}, stats

    def evaluate(self, model, device):
        """Path accuracy on the first pathstar_eval_rows held-out and train rows."""
        how = 'parallel' if self.teacherless else 'greedy'
        report = pathstar.path_report(
            model, self.rows, self.meta, how, self.cfg['pathstar_eval_rows'], device
        )
        return pathstar.report_keys(report)


class MaskedLM(Source):
    """Bidirectional masked LM. mlm_packing='sep': samples start at a line beginning, pack
    whole lines and end with [SEP]; batches carry attention_mask (True up to and including
    [SEP]). mlm_packing='window': random fixed windows, no [SEP], no mask (the baseline).
    [MASK] and [SEP] are appended to the dataset's vocabulary: ids base_vocab, base_vocab + 1,
    recorded in self.meta (and so in every checkpoint). See mlm.py."""

    causal = False
    defaults = dict(
        mlm_packing='sep',
        mlm_probability=0.15,
        mlm_ratio='fixed',
        mlm_ratio_eps=1e-3,
        mlm_mask_frac=0.8,
        mlm_random_frac=0.1,
        mlm_eval_ratio=0.15,
    )

    def __init__(self, cfg, data_dir, seed):
        super().__init__(cfg, data_dir, seed)
        self.check_config(self.cfg)
        base = load_meta(data_dir)
        self.base_vocab = base['vocab_size']
        self.mask_id, self.sep_id = self.base_vocab, self.base_vocab + 1
        self.vocab_size = self.base_vocab + 2
        self.meta = dict(
            base, vocab_size=self.vocab_size, mask_token_id=self.mask_id, sep_token_id=self.sep_id
        )
        if 'itos' in base:
            self.meta['itos'] = {**base['itos'], self.mask_id: '[MASK]', self.sep_id: '[SEP]'}
            self.meta['stoi'] = {**base['stoi'], '[MASK]': self.mask_id, '[SEP]': self.sep_id}
        self.packing, self.T = self.cfg['mlm_packing'], self.cfg['block_size']
        self.files, self.bounds = {}, {}
        for split in ('train', 'val'):
            f = self.files[split] = shards.token_file(
                data_dir, split, base, self.T + 1, f'--block_size={self.T}'
            )
            if self.packing != 'sep':
                continue
            self.nl_ids = mlm.newline_ids(base, f.path)
            # line starts indexed once where that is cheap (one file of at most SCAN_LIMIT
            # tokens: each rank reads it); else each sample finds its first line start in a
            # window of 2T (mlm.pack_window_lines)
            if not shards.many_shards(f) and f.n <= utils.SCAN_LIMIT:
                self.bounds[split] = mlm.line_bounds(f.data(), self.nl_ids)
            elif isinstance(f, shards.Shards) and f.lengths.max() < 2 * self.T:
                raise DataError(
                    f"{f.path}: every {split} shard is shorter than 2 x --block_size={self.T}, "
                    f"the window SEP packing reads: lower block_size"
                )
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
        if not (
            0 <= cfg['mlm_mask_frac']
            and 0 <= cfg['mlm_random_frac']
            and cfg['mlm_mask_frac'] + cfg['mlm_random_frac'] <= 1.0
        ):
            bad('mlm_random_frac', "mlm_mask_frac and mlm_random_frac must be >= 0 and sum to <= 1")
        if cfg['block_size'] < 2:
            bad('block_size', "MLM needs at least 2 positions (a token and its [SEP])")

    def host_batch(self, split, B, gen, **corruption):
        """corruption: ratio_mode, p, mask_frac, random_frac (default: the config's; mlm.evaluate
        passes its own)."""
        c = self.cfg
        ratio_mode, p, mask_frac, random_frac = (
            corruption.get(k, c[key])
            for k, key in (
                ('ratio_mode', 'mlm_ratio'),
                ('p', 'mlm_probability'),
                ('mask_frac', 'mlm_mask_frac'),
                ('random_frac', 'mlm_random_frac'),
            )
        )
        T = self.T
        f = self.files[split]
        if self.packing == 'sep' and split not in self.bounds:  # no line index
            x, n_text = mlm.pack_window_lines(f.windows(B, 2 * T, gen), self.nl_ids, T, self.sep_id)
        elif self.packing == 'sep':
            first = torch.randint(len(self.bounds[split]) - 1, (B,), generator=gen).numpy()
            x, n_text = mlm.pack_lines(f.data(), self.bounds[split], first, T, self.sep_id)
            f.check_ids(torch.where(x == self.sep_id, 0, x))
        else:
            x = self.files[split].windows(B, T, gen)
            n_text = torch.full((B,), T)
        ratio = mlm.draw_ratio(B, ratio_mode, p, self.cfg['mlm_ratio_eps'], gen)
        xc, y, kind = mlm.corrupt(
            x, n_text, ratio, self.base_vocab, self.mask_id, gen, mask_frac, random_frac
        )
        b = {'x': xc, 'y': y}
        if self.packing == 'sep':
            b['attention_mask'] = torch.arange(T) <= n_text[:, None]  # (B, T), [SEP] included
        valid = n_text + 1 if self.packing == 'sep' else n_text
        return b, {'kind': kind, 'valid_len': valid, 'n_text': n_text}

    def observe(self, stats=None):
        stats = self.last_stats if stats is None else stats
        self.stats.update(**stats)  # cumulative since the start of training

    def diagnostics(self):
        return self.stats.summary()

    def evaluate(self, model, device):
        return mlm.evaluate(self, model, device)


class SFT(Source):
    """Supervised fine-tuning on chat shards from data/chat/prepare.py: random windows of the
    token stream, as NextToken, with the aligned uint8 mask shifted *with the targets*:
    x = tok[i:i+T], y = tok[i+1:i+T+1], loss_mask = mask[i+1:i+T+1] (mask[j] = 1: token j is
    a supervised target). use_loss_mask=False trains on every token of the same windows, and
    also reads data without mask shards (chat.check_split warns)."""

    defaults = {'use_loss_mask': True}

    def __init__(self, cfg, data_dir, seed):
        super().__init__(cfg, data_dir, seed)
        self.meta = load_meta(data_dir)
        if 'special' not in self.meta:
            raise DataError(
                f"{data_dir}/meta.pkl has no chat special tokens: --objective=sft "
                f"needs data from data/chat/prepare.py"
            )
        self.vocab_size = self.meta['vocab_size']
        self.dtype = np.dtype(self.meta['dtype'])
        self.block_size, self.use_loss_mask = self.cfg['block_size'], self.cfg['use_loss_mask']
        self.shards = {}  # split -> [(token path, mask path, length)]
        for split in ('train', 'val'):
            shards = chat.check_split(
                data_dir,
                split,
                self.dtype,
                self.vocab_size,
                need_mask=self.use_loss_mask,
                n_tokens=(self.meta.get('split_tokens') or {}).get(split),
            )
            for tok, _, (path, _) in shards:
                if len(tok) <= self.block_size:
                    raise DataError(
                        f"{path} has {len(tok)} tokens, too few for --block_size="
                        f"{self.block_size}: lower block_size or add conversations"
                    )
            # mask path None: no mask shard (use_loss_mask=False), every token supervised
            self.shards[split] = [
                (tp, mp if mask is not None else None, len(tok)) for tok, mask, (tp, mp) in shards
            ]

    def has_masks(self, split):
        """Does every shard of the split have its mask shard?"""
        return all(mp is not None for _, mp, _ in self.shards[split])

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
            utils.check_ids(toks[rows], self.vocab_size, tp, 're-run data/chat/prepare.py')
            if mp is None:  # no mask shard: every token supervised
                masks[rows] = True
            else:
                mask = np.memmap(mp, dtype=np.uint8, mode='r')
                masks[rows] = gather_windows(mask, starts, T + 1) > 0
        return toks, masks

    def host_batch(self, split, batch_size, gen, mask_always=False):
        """mask_always: a loss_mask also with use_loss_mask=False (chat.sft_metrics reports
        both figures)."""
        rows, mask = self.windows(split, batch_size, gen)
        batch = {'x': rows[:, :-1], 'y': rows[:, 1:]}
        if self.use_loss_mask or mask_always:
            batch['loss_mask'] = mask[:, 1:]  # shifted with the targets
        return batch, {'mask_frac': mask[:, 1:].float().mean()}  # supervised share

    def evaluate(self, model, device):
        return chat.sft_metrics(self, model, device)


class MaskedSource(Source):
    """Shared data side of the masked-diffusion objectives (see diffusion.py).

    Text: random fixed windows of block_size from a flat token stream; every position can be
    masked. Row datasets (meta has `answer_start`, e.g. path-star): fixed rows of meta['row_len']
    tokens; only answer positions [answer_start, answer_start + answer_len) are masked, the
    graph and query stay visible; PAD (meta['special_tokens']['PAD']) is never attended to.
    Masking ratio t ~ U(mask_eps, 1) per row (stratified over the batch or i.i.d.), then
    t = max(t ** mask_t_power, mask_t_min) (power > 1: more low-t rows, density ~ t^(1/p - 1));
    mask_min_one: at least one masked position per row."""

    causal = False
    denoiser = None  # a frozen checkpoint drafting wrong tokens (remasking, hybrid), see proposals
    wrong_source = 'uniform'  # or (hybrid) 'context' / 'self', see propose
    defaults = {
        'mask_eps': 1e-3,
        'mask_stratified': True,
        'mask_t_min': 0.0,
        'mask_t_power': 1.0,
        'mask_min_one': False,
        'pathstar_online': False,
    }

    def __init__(self, cfg, data_dir, seed):
        super().__init__(cfg, data_dir, seed)
        self.check_config(self.cfg)
        base = load_meta(data_dir)
        self.base_vocab = base['vocab_size']
        self.vocab_size = self.base_vocab + 2
        self.meta = {
            **base,
            'vocab_size': self.vocab_size,
            'base_vocab_size': self.base_vocab,
            'mask_token_id': self.base_vocab,
            'wrong_token_id': self.base_vocab + 1,
        }
        self.mask_id, self.wrong_id = self.base_vocab, self.base_vocab + 1
        self.is_rows = 'answer_start' in base
        self.T = base['row_len'] if self.is_rows else self.cfg['block_size']
        if self.T > self.cfg['block_size']:
            raise DataError(
                f"{data_dir}: rows of {self.T} tokens exceed --block_size="
                f"{self.cfg['block_size']}; raise block_size to {self.T}"
            )
        self.pad = pathstar.pause_pad_ids(base)[1] if self.is_rows else None
        files = {
            s: shards.token_file(data_dir, s, base, self.T, f'--block_size={self.T}')
            for s in ('train', 'val')
        }
        if self.is_rows:
            self.rows = {s: f.rows(self.T) for s, f in files.items()}
        else:
            self.files = files

    @staticmethod
    def check_config(cfg):
        """The masking keys, and the keys of the subclass that reads them (a frozen denoiser's
        draft temperature, the rows decoded at evaluation)."""
        for key in ('mask_eps', 'mask_t_min'):
            if not 0.0 <= cfg[key] <= 1.0:
                raise ConfigError(f"--{key}={cfg[key]}: a masking ratio, must be in [0, 1]")
        if cfg['mask_t_power'] <= 0:
            raise ConfigError(f"--mask_t_power={cfg['mask_t_power']}: must be > 0 (1: uniform t)")
        for key in ('remasking_temperature', 'hybrid_temperature'):
            if cfg.get(key, 0) < 0:
                raise ConfigError(f"--{key}={cfg[key]}: must be >= 0 (0 = argmax)")
        if cfg.get('diffusion_eval_rows', 1) < 1:
            raise ConfigError(f"--diffusion_eval_rows={cfg['diffusion_eval_rows']}: must be >= 1")

    def clean(self, split, batch_size, gen):
        """Clean tokens (B, T), maskable (B, T) bool, attention_mask (B, T) bool or None."""
        if not self.is_rows:
            tok = self.files[split].windows(batch_size, self.T, gen)
            return tok, torch.ones_like(tok, dtype=torch.bool), None
        if split == 'train' and self.cfg['pathstar_online']:  # fresh graphs
            tok = torch.from_numpy(pathstar.online_rows(self.meta, batch_size, gen))
        else:
            tok = random_rows(self.rows[split], batch_size, gen)
        a0, pos = self.meta['answer_start'], torch.arange(self.T)
        maskable = ((pos >= a0) & (pos < a0 + self.meta['answer_len'])).expand_as(tok).clone()
        attn = None
        if self.pad is not None:
            attn = tok != self.pad
            maskable &= attn
        return tok, maskable, attn

    def corrupt(self, split, batch_size, gen):
        """clean() plus the masking draw: (tok, maskable, attn, t (B,), masked (B, T) bool)."""
        c = self.cfg
        tok, maskable, attn = self.clean(split, batch_size, gen)
        t = diffusion.draw_t(batch_size, c['mask_eps'], c['mask_stratified'], gen)
        t = (t ** c['mask_t_power']).clamp(min=c['mask_t_min'])
        masked = diffusion.draw_mask(maskable, t, gen, c['mask_min_one'])
        return tok, maskable, attn, t, masked

    def propose(self, parts, gen):
        """Wrong-token proposals for parts['chosen'] (B, T), then assemble(parts): uniform over
        the base vocabulary and never the original (on the host, now), with wrong_source
        'context' a token of the row's prompt (on the host, now), or, with a frozen denoiser
        (self.denoiser), its own draft of the row with every chosen position [MASK] (on-policy).
        A draft is a forward pass: it runs in device_batch, on the training device, from a seed
        drawn here (so the batch is still a function of gen); the host batch is then `parts`
        with 'draft_seed' and no stats yet."""
        if self.denoiser is None:
            tok = parts['tok']
            if self.wrong_source == 'context':
                context = ~parts['maskable']  # (B, T): the prompt, never corrupted
                if 'attention_mask' in parts:
                    context &= parts['attention_mask']
                parts['proposals'] = diffusion.context_other_tokens(
                    tok, context, self.base_vocab, gen
                )
            else:
                parts['proposals'] = diffusion.random_other_tokens(tok, self.base_vocab, gen)
            return self.assemble(parts)
        return {**parts, 'draft_seed': torch.randint(2**62, (), generator=gen)}, {}

    def device_batch(self, batch, device):
        if 'draft_seed' not in batch:
            return super().device_batch(batch, device)
        seed = int(batch['draft_seed'])  # a host tensor: no device sync
        parts = to_device({k: v for k, v in batch.items() if k != 'draft_seed'}, device)
        tok, chosen = parts['tok'], parts['chosen']
        gen = torch.Generator(device=device).manual_seed(seed)
        parts['proposals'] = diffusion.denoiser_samples(
            self.denoiser.to(device),  # in place, once: it stays there
            torch.where(chosen, self.mask_id, tok),
            chosen,
            self.base_vocab,
            self.draft_temperature,
            gen,
            parts.get('attention_mask'),
        )
        return self.assemble(parts)

    def batch(self, x, y, t, maskable, chosen, attn, **extra):
        """(batch dict, stats); chosen (B, T): the positions the draw corrupted ([MASK] or a
        wrong token), whose share is logged as mask_frac."""
        stats = {'t_mean': t.mean(), 'mask_frac': chosen.sum() / maskable.sum().clamp(min=1)}
        b = {'x': x, 'y': y, 't': t, 'maskable': maskable, **extra}
        return (b if attn is None else {**b, 'attention_mask': attn}), stats


class Unmasking(MaskedSource):
    """Denoiser: [MASK] at each maskable position with prob t; predict the originals.
    unmasking_loss: 'mean' = plain mean CE over the masked positions of the whole step;
    'inv_t' = MDLM/LLaDA's NELBO weighting: sum over masked positions of CE / t, divided by the
    number of maskable positions (loss_mask = 1/t at masked positions, norm_mask = maskable:
    the trainer divides by the norm_mask total of the whole accumulated batch).
    Val also reports the masked CE and the 1/t-weighted bound (bits/token, as MDLM/LLaDA), and
    on path-star rows the decoded answers (pathstar.path_report), on task rows (tasks.py:
    NAE-SAT, Sudoku) the checked success of random and margin order (tasks.task_report)."""

    defaults = {'diffusion_eval_rows': 500, 'unmasking_loss': 'mean'}
    run_tag = 'unmasking'

    def __init__(self, cfg, data_dir, seed):
        super().__init__(cfg, data_dir, seed)
        if self.cfg['unmasking_loss'] not in ('mean', 'inv_t'):
            raise ConfigError(
                f"--unmasking_loss={self.cfg['unmasking_loss']!r}: use 'mean' (plain mean over "
                f"masked positions) or 'inv_t' (CE / t summed, over the maskable count)"
            )

    def host_batch(self, split, batch_size, gen):
        tok, maskable, attn, t, masked = self.corrupt(split, batch_size, gen)
        b, stats = self.batch(
            torch.where(masked, self.mask_id, tok),
            torch.where(masked, tok, -1),
            t,
            maskable,
            masked,
            attn,
        )
        if self.cfg['unmasking_loss'] == 'inv_t':
            b['loss_mask'] = masked / t[:, None]  # (B, T): 1/t at masked positions
            b['norm_mask'] = maskable.float()  # (B, T): the denominator counts maskable positions
        return b, stats

    def evaluate(self, model, device):
        out = diffusion.denoiser_metrics(self, model, device)
        if self.meta.get('task') in tasks.TASKS:  # NAE-SAT, Sudoku: the exact checker
            n = self.cfg['diffusion_eval_rows']
            out.update(tasks.task_report(model, self.rows['val'], self.meta, n, device))
        elif self.is_rows:  # path-star: decode the answers (confidence / random order, one pass)
            rows = {'val': self.rows['val']}
            report = pathstar.path_report(
                model, rows, self.meta, 'diffusion', self.cfg['diffusion_eval_rows'], device
            )
            out.update(pathstar.report_keys(report))
        return out


class Remasking(MaskedSource):
    """Remasker: positions chosen as for the denoiser get a different token (uniform over the base
    vocabulary, or with remasking_denoiser=ckpt a frozen denoiser's own sample: on-policy);
    target WRONG where the input differs from the original, the original elsewhere.
    remasking_loss_type: corrupted_only (only WRONG targets: collapses to 'all WRONG') or
    all_positions (every real position)."""

    defaults = {
        'remasking_loss_type': 'all_positions',
        'remasking_denoiser': '',
        'remasking_temperature': 1.0,
    }

    def __init__(self, cfg, data_dir, seed):
        super().__init__(cfg, data_dir, seed)
        lt = self.cfg['remasking_loss_type']
        if lt not in ('corrupted_only', 'all_positions'):
            raise ConfigError(f"--remasking_loss_type={lt}: use corrupted_only or all_positions")
        self.run_tag = f'remasking_{lt}'
        self.denoiser = None
        path = self.cfg['remasking_denoiser']
        if path:
            self.denoiser, _ = checkpoint.load_checked(
                path, '--remasking_denoiser', ('unmasking',), self.meta, f"the data in {data_dir}"
            )
            self.meta = {**self.meta, 'remasking_denoiser': path}
        self.draft_temperature = self.cfg['remasking_temperature']

    def host_batch(self, split, batch_size, gen):
        tok, maskable, attn, t, masked = self.corrupt(split, batch_size, gen)
        parts = dict(tok=tok, maskable=maskable, t=t, chosen=masked)
        return self.propose(parts if attn is None else {**parts, 'attention_mask': attn}, gen)

    def assemble(self, p):
        """The batch from its parts (propose): chosen positions hold their proposal."""
        tok, maskable = p['tok'], p['maskable']
        x = torch.where(p['chosen'], p['proposals'], tok)
        wrong = x != tok  # (B, T): corrupted positions
        y = torch.where(wrong, self.wrong_id, tok)
        if self.cfg['remasking_loss_type'] == 'corrupted_only':
            y = torch.where(wrong, y, -1)
        b, stats = self.batch(
            x, y, p['t'], maskable, p['chosen'], p.get('attention_mask'), wrong=wrong
        )
        stats['wrong_frac'] = wrong.sum() / maskable.sum().clamp(min=1)
        return b, stats

    def evaluate(self, model, device):
        return diffusion.remasker_metrics(self, model, device)


class Hybrid(MaskedSource):
    """One model that drafts and flags its own wrong tokens in the same pass (sample.py
    --remask=self). Per row a ratio t and the chosen positions exactly as for the denoiser
    (diffusion.draw_t / draw_mask over the maskable positions); of the chosen positions a share
    hybrid_wrong_frac gets a wrong token instead of [MASK]. Targets (diffusion.hybrid_corrupt):
    the original at [MASK] and at clean (maskable, unchosen) positions, WRONG at wrong positions,
    -1 at positions that are not maskable (prompt, PAD). The trainer's plain mean over all
    supervised positions is the loss.

    hybrid_wrong_source: 'uniform' = diffusion.random_other_tokens (never the original),
    'context' = diffusion.context_other_tokens (a token of the row's prompt: plausible, as a
    planner's wrong node on path-star), or 'self' = on-policy: a draft of the model itself at
    those positions. The batch source never sees the model being trained (train.py draws
    batches before the forward pass, and the source interface has no model), so 'self' uses a
    FROZEN checkpoint, hybrid_denoiser=<ckpt> (an unmasking or a hybrid checkpoint of this
    dataset), exactly as Remasking's remasking_denoiser:
    diffusion.denoiser_samples on the row with every chosen position [MASK] (the draft a sampler
    step would commit from), at hybrid_temperature. To get closer to the model's own mistakes,
    iterate: train with 'uniform', then again with hybrid_denoiser=<that run's ckpt>. A draft
    equal to the original counts as clean (target the original), so with 'self' the realised
    wrong share (diagnostic wrong_frac) is below hybrid_wrong_frac * t."""

    # hybrid_wrong_frac = 0.2: (1) 80% of the chosen positions stay [MASK], so the drafting task
    # (which writes every token at sampling time) keeps most of the unmasking supervision.
    # (2) Among a row's visible positions the WRONG share is 0.2t / (1 - 0.8t): 0.05 at t = 0.2,
    # 0.17 at t = 0.5, 0.64 at t = 0.9 (1/6 over t ~ U(0, 1)): enough positives to learn
    # P(WRONG), while "clean" stays the default wherever most of the row is visible. With 0.5 it
    # would be 0.11 / 0.33 / 0.82: the model would learn that the few tokens visible at high
    # noise (a sampler's first commits) are wrong, and --remask=self would keep undoing them.
    # (3) Every wrong token also corrupts the context of the [MASK] predictions; a sampler's
    # committed drafts are plausible tokens, so heavy uniform noise is off its distribution.
    defaults = {
        'hybrid_wrong_frac': 0.2,
        'hybrid_wrong_source': 'uniform',
        'hybrid_denoiser': '',
        'hybrid_temperature': 1.0,
    }

    def __init__(self, cfg, data_dir, seed):
        super().__init__(cfg, data_dir, seed)
        frac, src = self.cfg['hybrid_wrong_frac'], self.cfg['hybrid_wrong_source']
        path = self.cfg['hybrid_denoiser']
        if not 0.0 <= frac < 1.0:
            raise ConfigError(
                f"--hybrid_wrong_frac={frac}: must be in [0, 1) (1 leaves no [MASK] "
                f"to learn drafting from)"
            )
        if src not in ('uniform', 'context', 'self'):
            raise ConfigError(f"--hybrid_wrong_source={src!r}: use 'uniform', 'context' or 'self'")
        if src == 'context' and not self.is_rows:
            raise ConfigError(
                f"--hybrid_wrong_source=context draws wrong tokens from a row's prompt; "
                f"{data_dir} is a token stream with none: use 'uniform' or 'self'"
            )
        self.wrong_source = src  # 'self' drafts with self.denoiser, see propose
        if (src == 'self') != bool(path):
            raise ConfigError(
                f"--hybrid_wrong_source={src} with --hybrid_denoiser={path!r}: "
                f"'self' needs a frozen denoiser checkpoint, 'uniform' takes none"
            )
        self.run_tag = f'hybrid_{src}'
        self.denoiser = None
        if path:
            self.denoiser, _ = checkpoint.load_checked(
                path,
                '--hybrid_denoiser',
                ('unmasking', 'hybrid'),
                self.meta,
                f"the data in {data_dir}",
            )
            self.meta = {**self.meta, 'hybrid_denoiser': path}
        self.draft_temperature = self.cfg['hybrid_temperature']

    def host_batch(self, split, batch_size, gen):
        tok, maskable, attn, t, chosen = self.corrupt(split, batch_size, gen)
        u = torch.rand(chosen.shape, generator=gen)
        to_wrong = chosen & (u < self.cfg['hybrid_wrong_frac'])
        parts = dict(tok=tok, maskable=maskable, t=t, chosen=chosen, to_wrong=to_wrong)
        return self.propose(parts if attn is None else {**parts, 'attention_mask': attn}, gen)

    def assemble(self, p):
        """The batch from its parts (propose): diffusion.hybrid_corrupt."""
        maskable = p['maskable']
        x, y, masked, wrong = diffusion.hybrid_corrupt(
            p['tok'],
            maskable,
            p['chosen'],
            p['to_wrong'],
            p['proposals'],
            self.mask_id,
            self.wrong_id,
        )
        attn = p.get('attention_mask')
        b, stats = self.batch(x, y, p['t'], maskable, masked, attn, masked=masked, wrong=wrong)
        stats['wrong_frac'] = wrong.sum() / maskable.sum().clamp(min=1)
        return b, stats

    def evaluate(self, model, device):
        return diffusion.hybrid_metrics(self, model, device)


OBJECTIVES = {
    'next_token': NextToken,
    'pathstar': PathStar,
    'mlm': MaskedLM,
    'sft': SFT,
    'unmasking': Unmasking,
    'remasking': Remasking,
    'hybrid': Hybrid,
}


def all_defaults():
    """Every objective's config keys, merged (train.py exposes them as flat config keys). A key
    two sources declare must have one default."""
    out = {}
    for cls in OBJECTIVES.values():
        for klass in cls.__mro__:
            for k, v in getattr(klass, 'defaults', {}).items():
                assert out.get(k, v) == v, f"config key {k} has two defaults"
                out[k] = v
    return out


def data_objective(meta, path):
    """(objective, why): what a dataset is, from its meta (read from `path`; None: no meta.pkl).
    Every writer records meta['objective']; older metas are recognised by their keys: row_len +
    answer_start -> pathstar, chat 'special' tokens -> sft, PAUSE/PAD ids without row_len (an
    older flat path-star stream) -> next_token (which masks them), anything else -> next_token."""
    if meta is None:
        return 'next_token', f"no {path}: a token stream"
    if 'objective' in meta:
        if meta['objective'] not in OBJECTIVES:
            raise DataError(
                f"{path} names objective {meta['objective']!r}, which is not one of "
                f"{sorted(OBJECTIVES)}: pass --objective"
            )
        return meta['objective'], f"from {path}"
    if 'row_len' in meta and 'answer_start' in meta:
        return 'pathstar', f"from {path}: path-star rows (row_len, answer_start)"
    if 'special' in meta:
        return 'sft', f"from {path}: chat special tokens"
    if any(i is not None for i in pathstar.pause_pad_ids(meta)):
        return 'next_token', (
            f"from {path}: an older path-star stream (PAUSE/PAD ids, no row_len), "
            f"PAUSE/PAD targets masked"
        )
    return 'next_token', f"from {path}: a token stream"


def choose_objective(cfg, explicit):
    """(objective, why): the one place the objective of a run is chosen. Without --objective
    (not in `explicit`) it is the one the dataset names (data_objective). An explicit one wins,
    unless it cannot read the data: sft needs chat shards, pathstar needs rows (meta row_len),
    and chat shards are read by sft only; that fails naming the objective that can. Objectives
    that are a choice over the same data (mlm, unmasking, remasking, hybrid) are only ever
    explicit."""
    data_dir = os.path.join(cfg['data_root'], cfg['dataset'])
    check_dataset_dir(data_dir)
    objective = cfg['objective']
    if objective not in OBJECTIVES:
        raise DataError(f"--objective={objective} is unknown; choose one of {sorted(OBJECTIVES)}")
    meta = load_meta(data_dir, required=False)
    native, why = data_objective(meta, os.path.join(data_dir, 'meta.pkl'))
    if 'objective' not in explicit:
        return native, why
    meta = meta or {}
    need = {
        'sft': ('special' in meta, 'chat shards from data/chat/prepare.py'),
        'pathstar': ('row_len' in meta, 'rows from pathstar.py (meta.pkl row_len)'),
    }.get(objective)
    if need and not need[0]:
        raise ConfigError(
            f"--objective={objective} cannot read {data_dir}: it needs {need[1]}; this "
            f"dataset is read by --objective={native} ({why})"
        )
    if native == 'sft' and objective != 'sft':
        raise ConfigError(
            f"--objective={objective} cannot read {data_dir}: chat shards are read by "
            f"--objective=sft (--use_loss_mask=False supervises every token)"
        )
    return objective, 'as given'


def resolve_data(cfg, explicit):
    """Sets cfg['objective'] (choose_objective) and, where the dataset has fixed rows and
    block_size was not given, cfg['block_size'] from the rows (row_len - 1 for pathstar, whole
    rows for the masked objectives). Called by train.py before the source is built; returns
    the lines that say what was chosen and why."""
    cfg['objective'], why = choose_objective(cfg, explicit)
    lines = [f"objective {cfg['objective']} ({why})"]
    if 'block_size' in explicit:
        return lines
    data_dir = os.path.join(cfg['data_root'], cfg['dataset'])
    meta = load_meta(data_dir, required=False) or {}
    if cfg['objective'] == 'pathstar' and 'row_len' in meta:
        cfg['block_size'] = meta['row_len'] - 1
    elif issubclass(OBJECTIVES[cfg['objective']], MaskedSource) and 'answer_start' in meta:
        cfg['block_size'] = meta['row_len']  # MaskedSource: whole rows
    else:
        return lines
    lines.append(f"block_size {cfg['block_size']} (rows of {meta['row_len']} tokens in {data_dir})")
    return lines


def make_source(cfg, seed):
    objective = cfg['objective']
    if objective not in OBJECTIVES:
        raise DataError(f"--objective={objective} is unknown; choose one of {sorted(OBJECTIVES)}")
    data_dir = os.path.join(cfg['data_root'], cfg['dataset'])
    with torch.device('cpu'):  # a source is host code: its rows and files live on the CPU
        return OBJECTIVES[objective](cfg, data_dir, seed)
