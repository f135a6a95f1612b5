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
import os
import warnings

import numpy as np
import torch

import pathstar
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


class PathStar(Source):
    """Whole path-star rows (pathstar.py): x = row[:-1], y = row[1:]; PAUSE/PAD targets are
    never supervised; loss_on='answer' supervises only the answer tokens, 'all' the rest too.
    pathstar_teacherless: answer inputs become '$' (one parallel pass, Bachmann & Nagarajan)."""
    defaults = dict(pathstar_loss_on='answer', pathstar_teacherless=False, pathstar_eval_rows=500)

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
        self.teacherless = cfg['pathstar_teacherless']
        if self.teacherless and 'teacherless_token' not in self.meta:
            raise DataError(f"--pathstar_teacherless needs an in-context dataset ({data_dir} has "
                            f"no meta['teacherless_token'])")
        self.last = {}

    def get_batch(self, split, batch_size, gen=None):
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


OBJECTIVES = {
    'next_token': NextToken,
    'pathstar': PathStar,
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
