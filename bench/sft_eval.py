"""
SFT demo figures for one checkpoint (README, "SFT"):

    python bench/sft_eval.py --ckpt=out-sft-mask/ckpt.pt --dataset=data/chat_gsm8k_char \
        --gsm8k=../shared/data/gsm8k --n_answers=50

1. val loss over the *whole* val stream (consecutive block_size windows, no sampling), on the
   supervised (assistant) tokens and on all tokens;
2. greedy answers to the first n_answers GSM8K test questions (= the val split): how many
   stop with <|end|>, contain '#### <number>', and whose number equals the reference.
"""

import argparse
import json
import os
import re
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))
from chat import check_split, prompt_ids, text_codec  # noqa: E402
from checkpoint import load_model  # noqa: E402
from configurator import ArgumentParser, run_cli  # noqa: E402
from utils import DataError, load_meta  # noqa: E402

ANSWER = re.compile(r'####\s*(-?[\d,]*\d(?:\.\d+)?)')


@torch.no_grad()
def stream_loss(model, data_dir, meta, batch_size=32):
    T = model.config.block_size
    sums, counts = np.zeros(2), np.zeros(2)
    for tokens, mask, _ in check_split(
        data_dir, 'val', np.dtype(meta['dtype']), meta['vocab_size']
    ):
        n = (len(tokens) - 1) // T  # windows [k*T, (k+1)*T], targets shifted by one
        tok = torch.from_numpy(np.array(tokens[: n * T + 1]).astype(np.int64))
        m = torch.from_numpy(np.array(mask[: n * T + 1])).double()
        for a in range(0, n, batch_size):
            idx = torch.arange(a, min(a + batch_size, n))[:, None] * T + torch.arange(T + 1)
            logits, _ = model(tok[idx[:, :-1]])
            ce = F.cross_entropy(
                logits.flatten(0, 1), tok[idx[:, 1:]].flatten(), reduction='none'
            ).double()
            w = m[idx[:, 1:]].flatten()
            sums += [(ce * w).sum().item(), ce.sum().item()]
            counts += [w.sum().item(), w.numel()]
    return sums / counts


@torch.no_grad()
def answers(model, meta, rows, max_new_tokens):
    encode, decode, special = text_codec(meta)
    end = special['<|end|>']
    stats = dict(stopped=0, formatted=0, correct=0)
    examples = []
    for row in rows:
        x = torch.tensor(prompt_ids(row['question'], encode, special))[None]
        new = model.generate(x, max_new_tokens, temperature=0, stop_token=end)[
            0, x.size(1) :
        ].tolist()
        stopped = end in new
        text = decode(new[: new.index(end)] if stopped else new)
        found = ANSWER.findall(text)
        gold = row['answer'].split('####')[-1].strip().replace(',', '')
        stats['stopped'] += stopped
        stats['formatted'] += bool(found)
        stats['correct'] += bool(found) and found[-1].replace(',', '') == gold
        examples.append(text)
    return stats, examples


def main(argv=None):
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--ckpt', required=True)
    p.add_argument('--dataset', required=True, help='folder from data/chat/prepare.py --gsm8k')
    p.add_argument('--gsm8k', default='../shared/data/gsm8k')
    p.add_argument('--n_answers', type=int, default=50)
    p.add_argument('--max_new_tokens', type=int, default=400)
    p.add_argument('--num_threads', type=int, default=1)
    p.add_argument('--show', type=int, default=1, help='answers to print')
    a = p.parse_args(argv)
    torch.set_num_threads(a.num_threads)
    model, ckpt = load_model(a.ckpt)
    meta = load_meta(a.dataset)
    same = all(meta.get(k) == ckpt['meta'].get(k) for k in ('tokenizer', 'itos', 'special'))
    if not same:
        raise DataError(f"--ckpt={a.ckpt} was not trained on --dataset={a.dataset}")
    t0 = time.time()
    loss_sup, loss_all = stream_loss(model, a.dataset, meta)
    with open(os.path.join(a.gsm8k, 'test.jsonl'), encoding='utf-8') as f:
        rows = [json.loads(line) for line in f][: a.n_answers]
    stats, examples = answers(model, meta, rows, a.max_new_tokens)
    n = len(rows)
    use_mask = ckpt['config'].get('use_loss_mask')
    print(
        f"{a.ckpt} (use_loss_mask={use_mask}, iter {ckpt['iter_num']}): "
        f"val loss assistant {loss_sup:.4f}, all tokens {loss_all:.4f} | {n} greedy answers: "
        f"stop at <|end|> {stats['stopped']}/{n}, '#### <number>' {stats['formatted']}/{n} "
        f"({100 * stats['formatted'] / max(n, 1):.0f}%), correct {stats['correct']}/{n} "
        f"[{time.time() - t0:.0f}s]"
    )
    for q, e in zip(rows[: a.show], examples):
        print(f"--- Q: {q['question']}\n--- A: {e}")


if __name__ == '__main__':
    run_cli(main)
