"""
Conversations -> aligned token + loss-mask shards for SFT (objective `sft`):

    <out_dir>/train/shard_000.bin       token ids (uint16/uint32, meta['dtype'])
    <out_dir>/train/shard_000_mask.bin  uint8, 1 = compute the loss on this token
    <out_dir>/val/...                   the same
    <out_dir>/meta.pkl                  tokenizer, vocab_size, special token ids, counts

Inputs (one of):
  --input=chats.jsonl         {"messages": [{"role": "system"|"user"|"assistant", "content": ...}]}
                              per line; --val_fraction of the conversations go to val
  --gsm8k=../shared/data/gsm8k  train.jsonl -> train, test.jsonl -> val (question -> answer;
                              the <<a*b=c>> calculator annotations are stripped, '#### n' kept)
  --chatterbot=../shared/data/chatterbot_corpus_en  every *.yml: turns alternate user/assistant
Tokenizer: --tokenizer=char (vocabulary of the data, or --base_meta=<base meta.pkl> to extend a
base model's: characters the base lacks are appended, with a warning) or --tokenizer=gpt2
(tiktoken, offline with --bpe_dir). Role tags and <|end|> are appended to the vocabulary.
See chat.py for the template and which tokens the mask covers (--mask_role, default assistant).
"""

import argparse
import glob
import json
import os
import random
import re
import sys
import warnings

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..'))
from chat import SPECIALS, check_density, check_messages, render  # noqa: E402
from configurator import ArgumentParser, run_cli  # noqa: E402
from utils import (  # noqa: E402
    DataError,
    gpt2_encoding,
    load_meta,
    script_command,
    token_dtype,
    write_dataset_dir,
)

SHARD_TOKENS = 50_000_000  # tokens per shard file


# --- converters: each returns {split: [messages, ...]} ----------------------------------------
def read_jsonl(path, val_fraction, seed):
    if not os.path.isfile(path):
        raise DataError(f"--input={path} not found")
    convs = []
    with open(path, encoding='utf-8') as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                msgs = json.loads(line)['messages']
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise DataError(
                    f"{path}:{n}: not a {{\"messages\": [...]}} JSON line ({e})"
                ) from None
            check_messages(msgs, f"{path}:{n}")
            convs.append(msgs)
    return split_convs(convs, val_fraction, seed, path)


def split_convs(convs, val_fraction, seed, where):
    if len(convs) < 2:
        raise DataError(f"{where}: need at least 2 conversations (one for train, one for val)")
    random.Random(seed).shuffle(convs)
    n_val = min(max(1, int(len(convs) * val_fraction)), len(convs) - 1)
    return {'train': convs[n_val:], 'val': convs[:n_val]}


def gsm8k_messages(row):
    answer = re.sub(r'<<[^>]*>>', '', row['answer'])  # calculator annotations: not prose
    return [{'role': 'user', 'content': row['question']}, {'role': 'assistant', 'content': answer}]


def read_gsm8k(folder):
    out = {}
    for split, name in (('train', 'train.jsonl'), ('val', 'test.jsonl')):
        path = os.path.join(folder, name)
        if not os.path.isfile(path):
            raise DataError(f"--gsm8k={folder}: {name} not found there")
        with open(path, encoding='utf-8') as f:
            out[split] = [gsm8k_messages(json.loads(line)) for line in f if line.strip()]
    return out


def read_chatterbot(folder, val_fraction, seed):
    import yaml

    files = sorted(glob.glob(os.path.join(folder, '*.yml')))
    if not files:
        raise DataError(f"--chatterbot={folder}: no *.yml files there")
    convs = []
    for path in files:
        with open(path, encoding='utf-8') as f:
            doc = yaml.safe_load(f) or {}
        for turns in doc.get('conversations') or []:
            turns = [str(t) for t in turns if t is not None]
            if len(turns) >= 2:
                convs.append(
                    [
                        {'role': ('user', 'assistant')[i % 2], 'content': t}
                        for i, t in enumerate(turns)
                    ]
                )
    return split_convs(convs, val_fraction, seed, folder)


# --- vocabulary --------------------------------------------------------------------------------
def char_vocab(splits, base_meta_path):
    """itos/stoi over the data's characters (after the base's, if any) + the special tokens."""
    chars = sorted(
        {c for convs in splits.values() for msgs in convs for m in msgs for c in m['content']}
    )
    itos = {}
    if base_meta_path:
        base = load_meta(base_meta_path, flag='--base_meta')  # plain data only: never runs code
        if base.get('tokenizer', 'char') != 'char' or 'itos' not in base:
            raise DataError(
                f"--base_meta={base_meta_path} is not a character vocabulary; use "
                f"--tokenizer={base.get('tokenizer')}"
            )
        itos = dict(base['itos'])
        clash = [s for s in SPECIALS if s in itos.values()]
        if clash:
            raise DataError(
                f"--base_meta={base_meta_path} already has {clash}: prepare from the "
                f"base model's own (pre-SFT) meta.pkl"
            )
        missing = [c for c in chars if c not in set(itos.values())]
        if missing:  # new rows for these are initialised by GPT.resize_vocab at init_from
            warnings.warn(
                f"{len(missing)} characters of the chat data are not in the base "
                f"vocabulary ({''.join(missing)[:40]!r}...): appended as new tokens"
            )
        chars = missing
    for c in list(chars) + list(SPECIALS):
        itos[len(itos)] = c
    stoi = {s: i for i, s in itos.items()}
    meta = {'tokenizer': 'char', 'itos': itos, 'stoi': stoi, 'vocab_size': len(itos)}
    return (lambda s: [stoi[c] for c in s]), meta


def gpt2_vocab(bpe_dir, base_meta_path):
    enc = gpt2_encoding(bpe_dir or None)
    first = enc.n_vocab
    if base_meta_path:  # specials go after the base model's (possibly padded) vocabulary
        base = load_meta(base_meta_path, flag='--base_meta')
        if base.get('tokenizer') != 'gpt2':
            raise DataError(f"--base_meta={base_meta_path} is not a gpt2 vocabulary")
        first = max(first, base['vocab_size'])
    meta = {'tokenizer': 'gpt2', 'vocab_size': first + len(SPECIALS), 'bpe_dir': bpe_dir}
    return enc.encode_ordinary, meta


# --- shards ------------------------------------------------------------------------------------
def encode_split(convs, encode, special, mask_role, dtype):
    ids, mask = [], []
    for msgs in convs:
        i, m = render(msgs, encode, special, mask_role)
        ids += i
        mask += m
    return np.array(ids, dtype=dtype), np.array(mask, dtype=np.uint8)


def main(argv=None):
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument('--input', help='JSONL of {"messages": [...]}')
    src.add_argument('--gsm8k', help='folder with GSM8K train.jsonl / test.jsonl')
    src.add_argument('--chatterbot', help='folder of chatterbot corpus *.yml')
    p.add_argument('--out_dir', required=True)
    p.add_argument('--tokenizer', choices=('char', 'gpt2'), default='char')
    p.add_argument(
        '--bpe_dir', default='', help='folder with GPT-2 vocab.bpe + encoder.json (offline)'
    )
    p.add_argument(
        '--base_meta', default='', help="base model's meta.pkl whose vocabulary to extend"
    )
    p.add_argument('--mask_role', choices=('assistant', 'user', 'system'), default='assistant')
    p.add_argument('--val_fraction', type=float, default=0.1)
    p.add_argument('--max_conversations', type=int, default=0, help='per split; 0 = all')
    p.add_argument('--seed', type=int, default=0)
    a = p.parse_args(argv)
    if a.base_meta and not os.path.isfile(a.base_meta):
        raise DataError(f"--base_meta={a.base_meta} not found")
    if a.input:
        splits = read_jsonl(a.input, a.val_fraction, a.seed)
    elif a.gsm8k:
        splits = read_gsm8k(a.gsm8k)
    else:
        splits = read_chatterbot(a.chatterbot, a.val_fraction, a.seed)
    if a.max_conversations:
        splits = {k: v[: a.max_conversations] for k, v in splits.items()}
    encode, meta = (
        char_vocab(splits, a.base_meta)
        if a.tokenizer == 'char'
        else gpt2_vocab(a.bpe_dir, a.base_meta)
    )
    V = meta['vocab_size']
    special = {s: V - len(SPECIALS) + k for k, s in enumerate(SPECIALS)}
    dtype = token_dtype(V)
    files, counts = {}, {}
    for split, convs in splits.items():
        ids, mask = encode_split(convs, encode, special, a.mask_role, dtype)
        density = check_density(int(mask.sum()), len(mask), f"{a.out_dir}/{split}")
        counts[split] = {
            'conversations': len(convs),
            'tokens': len(ids),
            'supervised': int(mask.sum()),
            'density': density,
        }
        for k in range(0, len(ids), SHARD_TOKENS):
            name = f"{split}/shard_{k // SHARD_TOKENS:03d}"
            files[name + '.bin'] = ids[k : k + SHARD_TOKENS]
            files[name + '_mask.bin'] = mask[k : k + SHARD_TOKENS]
    meta.update(special=special, dtype=np.dtype(dtype).name, mask_role=a.mask_role, counts=counts)
    meta.update(
        objective='sft',  # what the data is: train.py picks the objective from it
        split_tokens={split: c['tokens'] for split, c in counts.items()},  # checked at load
        prepare=script_command('data/chat/prepare.py', p, a),
    )
    files['meta.pkl'] = meta
    write_dataset_dir(a.out_dir, files)
    for split in splits:  # shards left by an earlier, larger run would be read as data
        d = os.path.join(a.out_dir, split)
        for f in os.listdir(d):
            if f.startswith('shard_') and f'{split}/{f}' not in files:
                os.remove(os.path.join(d, f))
    for split, c in counts.items():
        print(
            f"{split}: {c['conversations']:,} conversations, {c['tokens']:,} tokens, "
            f"{c['supervised']:,} supervised ({c['density']:.3f})"
        )
    print(f"vocab_size {V} ({meta['tokenizer']}), special {special} -> {a.out_dir}")
    return meta


if __name__ == '__main__':
    run_cli(main)
