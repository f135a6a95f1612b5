"""
The chat template and its loss mask, shared by data/chat/prepare.py, the `sft` batch source,
sample.py --mode=chat and the mask viewer:

    python chat.py --dataset=data/chat_gsm8k_char [--split=val] [--n=2] [--plain]

prints exchanges (user/system turns + the assistant's reply) with the supervised tokens
(mask = 1) highlighted, to check masks by eye.

Template: every message is  <|role|> content <|end|>  with one special token per role tag and
one end-of-turn token, appended to the tokenizer's vocabulary. For the role being trained
(`mask_role`, default assistant) the mask is 1 on the content and on its <|end|> (so the model
learns to stop), 0 on the tag; every other token (system/user text, tags) is 0.
"""

import os
import sys
import warnings

import numpy as np
import torch
from torch.nn import functional as F

import utils
from configurator import ArgumentParser, ConfigError, run_cli
from utils import DataError, load_meta, token_dtype

ROLES = ('system', 'user', 'assistant')
SPECIALS = ('<|system|>', '<|user|>', '<|assistant|>', '<|end|>')
# a mask density outside this range is almost certainly a template or role mistake
DENSITY_RANGE = (0.02, 0.95)


# --- tokenizers ------------------------------------------------------------------------------
def text_codec(meta, bpe_dir=''):
    """(encode plain text -> ids, decode ids -> text, special name -> id) for a chat meta."""
    return (*utils.text_codec(meta, bpe_dir), meta['special'])


def render(messages, encode, special, mask_role='assistant'):
    """One conversation -> (ids list, mask list of 0/1), aligned token by token."""
    ids, mask = [], []
    for m in messages:
        tag, body = special[f"<|{m['role']}|>"], encode(m['content'])
        on = int(m['role'] == mask_role)
        ids += [tag] + body + [special['<|end|>']]
        mask += [0] + [on] * (len(body) + 1)
    return ids, mask


def prompt_ids(user_text, encode, special, system=None):
    """The prompt that asks for an assistant turn: [<|system|> s <|end|>] <|user|> u <|end|> <|assistant|>."""
    msgs = ([{'role': 'system', 'content': system}] if system else []) + [
        {'role': 'user', 'content': user_text}
    ]
    ids, _ = render(msgs, encode, special)
    return ids + [special['<|assistant|>']]


def check_messages(messages, where):
    if not isinstance(messages, list) or not messages:
        raise DataError(f"{where}: 'messages' must be a non-empty list")
    for m in messages:
        if (
            not isinstance(m, dict)
            or m.get('role') not in ROLES
            or not isinstance(m.get('content'), str)
        ):
            raise DataError(
                f"{where}: each message needs a role in {ROLES} and a string 'content', "
                f"got {str(m)[:80]}"
            )


# --- shards on disk: <split>/shard_NNN.bin (tokens) + <split>/shard_NNN_mask.bin (uint8) -------
def shard_paths(data_dir, split):
    d = os.path.join(data_dir, split)
    if not os.path.isdir(d):
        raise DataError(f"{d} not found: run data/chat/prepare.py --out_dir={data_dir}")
    toks = sorted(
        f
        for f in os.listdir(d)
        if f.startswith('shard_') and f.endswith('.bin') and not f.endswith('_mask.bin')
    )
    if not toks:
        raise DataError(f"{d} holds no shard_*.bin: run data/chat/prepare.py --out_dir={data_dir}")
    masks = {f for f in os.listdir(d) if f.endswith('_mask.bin')}
    for f in masks:  # a mask whose token shard is gone is as broken as the reverse
        if f.replace('_mask.bin', '.bin') not in toks:
            raise DataError(
                f"{os.path.join(d, f)} has no token shard "
                f"{f.replace('_mask.bin', '.bin')}: re-run data/chat/prepare.py"
            )
    return [(os.path.join(d, f), os.path.join(d, f[:-4] + '_mask.bin')) for f in toks]


def check_shard(tok_path, mask_path, tokens, mask):
    """Raise DataError on a broken token/mask pair; returns the mask density."""
    if mask is None:
        raise DataError(
            f"{tok_path} has no mask shard {os.path.basename(mask_path)}: re-run "
            f"data/chat/prepare.py, or train on every token with --use_loss_mask=False"
        )
    if len(tokens) != len(mask):
        raise DataError(
            f"{mask_path} has {len(mask)} entries but {tok_path} has {len(tokens)} "
            f"tokens: the shards are out of step; re-run data/chat/prepare.py"
        )
    if len(mask) and int(utils.head(mask).max()) > 1:  # start-up reads the head (SCAN_LIMIT)
        raise DataError(f"{mask_path} holds values other than 0/1: re-run data/chat/prepare.py")
    return float(utils.head(mask).mean()) if len(mask) else 0.0


def check_split(data_dir, split, dtype, vocab_size, need_mask=True, n_tokens=None):
    """Validate every shard of a split at load; returns [(tokens memmap, mask memmap, paths)].
    The token shards' sizes are checked first (utils.size_problem; n_tokens: the split's count
    from meta['split_tokens'], None for older metas). need_mask=False (--use_loss_mask=False)
    accepts token shards without a mask shard, with a warning (mask None: every token is
    supervised)."""
    fix = 're-run data/chat/prepare.py'
    paths = shard_paths(data_dir, split)
    where = os.path.join(data_dir, split)
    for tok_path, _ in paths:
        utils.token_count(tok_path, dtype, fix=fix)  # empty, or not whole tokens
    problem = utils.size_problem(sum(os.path.getsize(tp) for tp, _ in paths), dtype, n_tokens)
    if problem:
        raise DataError(f"{where} (its token shards together) {problem}; {fix}")
    out, n_sup, n_tok, unmasked = [], 0, 0, []
    for tok_path, mask_path in paths:
        tokens = np.memmap(tok_path, dtype=dtype, mode='r')
        mask = np.memmap(mask_path, dtype=np.uint8, mode='r') if os.path.exists(mask_path) else None
        if mask is None and not need_mask:
            unmasked.append(os.path.basename(mask_path))
        else:
            check_shard(tok_path, mask_path, tokens, mask)
            m = utils.head(mask)  # start-up reads each shard's head only (utils.SCAN_LIMIT)
            n_sup, n_tok = n_sup + int(m.sum(dtype=np.int64)), n_tok + len(m)
        if len(tokens):  # batches check every window (batches.SFT.windows)
            utils.check_ids(torch.tensor(int(utils.head(tokens).max())), vocab_size, tok_path, fix)
        out.append((tokens, mask, (tok_path, mask_path)))
    if unmasked:
        warnings.warn(
            f"{where}: no mask shard ({', '.join(unmasked)}): with --use_loss_mask=False "
            f"all tokens are supervised"
        )
    if n_tok:
        check_density(n_sup, n_tok, where)
    return out


def check_density(n_sup, n_tok, where):
    if n_sup == 0:
        raise DataError(
            f"{where}: no supervised token at all (every mask is 0): is --mask_role a "
            f"role present in the data? re-run data/chat/prepare.py"
        )
    density = n_sup / max(n_tok, 1)
    if not DENSITY_RANGE[0] <= density <= DENSITY_RANGE[1]:
        warnings.warn(
            f"{where}: implausible mask density {density:.3f} (expected within "
            f"{DENSITY_RANGE}): check --mask_role and the template"
        )
    return density


# --- evaluation of the sft objective ----------------------------------------------------------
@torch.no_grad()
def sft_metrics(source, model, device):
    """Val CE on the masked (e.g. assistant) tokens and on all tokens, whatever use_loss_mask
    is, so runs with and without the mask compare on the same figure. `source`: the sft batch
    source (its windows())."""
    c = source.cfg
    gen = source.eval_gen('sft')
    sums = torch.zeros(2, dtype=torch.float64, device=device)
    counts = torch.zeros(2, dtype=torch.float64, device=device)
    for _ in range(c['eval_iters']):
        b = source.batch_on(device, 'val', c['batch_size'], gen, mask_always=True)
        logits, _ = model(b['x'])
        ce = F.cross_entropy(logits.float().flatten(0, 1), b['y'].flatten(), reduction='none')
        m = b['loss_mask'].flatten().double()
        sums += torch.stack([(ce.double() * m).sum(), ce.double().sum()])
        counts += torch.stack([m.sum(), torch.ones_like(m).sum()])
    loss = (sums / counts.clamp(min=1)).tolist()
    if not source.has_masks('val'):  # no mask shards (--use_loss_mask=False): all tokens only
        return {'val_all': loss[1]}
    return {f"val_{source.meta.get('mask_role', 'assistant')}": loss[0], 'val_all': loss[1]}


# --- chat sampling (sample.py --mode=chat) ---------------------------------------------------
def reply(
    model,
    meta,
    user_text,
    max_new_tokens=300,
    temperature=0.0,
    top_k=None,
    system=None,
    device='cpu',
    bpe_dir='',
):
    """Generate the assistant's answer to one user message; stops at <|end|>."""
    encode, decode, special = text_codec(meta, bpe_dir)
    x = torch.tensor(prompt_ids(user_text, encode, special, system), device=device)[None]
    end = special['<|end|>']
    y = model.generate(x, max_new_tokens, temperature=temperature, top_k=top_k, stop_token=end)
    new = y[0, x.size(1) :].tolist()
    return decode(new[: new.index(end)] if end in new else new)


def sample_chat(cfg, model, ckpt, text):
    """sample.py --mode=chat: `text` is the user message."""
    meta = ckpt['meta'] or {}
    if 'special' not in meta:
        raise ConfigError(
            f"--mode=chat needs a checkpoint trained on chat data (data/chat/prepare.py); "
            f"{ckpt['path']} was trained on objective '{ckpt.get('objective')}'"
        )
    outs = []
    for _ in range(cfg['num_samples']):
        try:
            outs.append(
                reply(
                    model,
                    meta,
                    text,
                    cfg['max_new_tokens'],
                    cfg['temperature'],
                    cfg['top_k'],
                    device=cfg['device'],
                    bpe_dir=cfg['bpe_dir'],
                )
            )
        except DataError as e:  # characters outside a char vocabulary
            raise ConfigError(f"--start={cfg['start']!r}: {e}") from None
        print(f"user: {text}\nassistant: {outs[-1]}\n---------------")
    return outs


# --- the mask viewer -------------------------------------------------------------------------
def show(data_dir, split='val', n=2, plain=None):
    """Decode the first n exchanges of a split; supervised tokens highlighted."""
    meta = load_meta(data_dir)
    if 'special' not in meta:
        raise DataError(
            f"{data_dir}/meta.pkl has no chat special tokens: --dataset must be a folder "
            f"written by data/chat/prepare.py"
        )
    _, decode, special = text_codec(meta)
    tokens, mask, _ = check_split(
        data_dir,
        split,
        np.dtype(meta.get('dtype', token_dtype(meta['vocab_size']))),
        meta['vocab_size'],
        n_tokens=(meta.get('split_tokens') or {}).get(split),
    )[0]
    plain = (not sys.stdout.isatty()) if plain is None else plain
    on, off = ('[[', ']]') if plain else ('\033[42;30m', '\033[0m')
    t = np.asarray(tokens)
    # the stream does not mark conversations: show *exchanges*, each starting at a system/user
    # tag right after an assistant turn's <|end|> (or at 0). role[p] = tag of p's turn.
    is_tag = np.isin(t, [special[s] for s in SPECIALS[:3]])
    role = t[np.maximum.accumulate(np.where(is_tag, np.arange(len(t)), 0))]
    opener = np.isin(t, [special['<|system|>'], special['<|user|>']])
    opener[1:] &= (t[:-1] == special['<|end|>']) & (role[:-1] == special['<|assistant|>'])
    bounds = np.flatnonzero(opener).tolist() + [len(t)]
    out = []
    for a, b in list(zip(bounds[:-1], bounds[1:]))[:n]:
        parts, i = [], a
        while i < b:  # group runs of equal mask, decode each run once
            j = i
            while j < b and mask[j] == mask[i]:
                j += 1
            text = decode(tokens[i:j])
            parts.append(on + text + off if mask[i] else text)
            i = j
        out.append(''.join(parts))
    print(
        f"{data_dir}/{split}: {len(tokens):,} tokens, mask density {float(np.mean(mask)):.3f}; "
        f"supervised tokens shown as {on}...{off}"
    )
    for k, s in enumerate(out):
        print(f"--- exchange {k} ---\n{s}")
    return out


def main(argv=None):
    p = ArgumentParser(description='show a chat dataset with its loss mask highlighted')
    p.add_argument('--dataset', required=True, help='a folder written by data/chat/prepare.py')
    p.add_argument('--split', default='val')
    p.add_argument('--n', type=int, default=2)
    p.add_argument('--plain', action='store_true', help='[[...]] instead of colour')
    a = p.parse_args(argv)
    return show(a.dataset, a.split, a.n, a.plain or None)


if __name__ == '__main__':
    run_cli(main)
