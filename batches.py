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
        toks, masks = [], []
        for s, i in zip(which.tolist(), ix.tolist()):  # re-open memmaps per batch (nanoGPT)
            tp, mp, _ = shards[s]
            toks.append(np.memmap(tp, dtype=self.dtype, mode='r')[i:i + T + 1].astype(np.int64))
            masks.append(np.memmap(mp, dtype=np.uint8, mode='r')[i:i + T + 1])
        return torch.from_numpy(np.stack(toks)), torch.from_numpy(np.stack(masks)).bool()

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


OBJECTIVES = {
    'next_token': NextToken,
    'sft': SFT,
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
