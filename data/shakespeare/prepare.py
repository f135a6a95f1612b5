"""
Tiny Shakespeare with GPT-2 BPE (tiktoken) -> train.bin / val.bin (uint16) + meta.pkl.

    python data/shakespeare/prepare.py [--input=input.txt] [--bpe_dir=folder with vocab.bpe,encoder.json]

--bpe_dir loads the GPT-2 files from disk (offline); without it tiktoken downloads them.
"""

import argparse
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, '..', '..'))
sys.path.insert(0, os.path.join(HERE, '..', 'shakespeare_char'))
from configurator import ArgumentParser, run_cli  # noqa: E402
from prepare import read_input  # noqa: E402  (same download-once logic)
from utils import gpt2_encoding, script_command, write_dataset_dir  # noqa: E402


def main(argv=None):
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--input', default=None)
    p.add_argument('--bpe_dir', default=None)
    p.add_argument('--out_dir', default=HERE)
    p.add_argument('--val_fraction', type=float, default=0.1)
    args = p.parse_args(argv)
    data = read_input(args.input)
    enc = gpt2_encoding(args.bpe_dir)
    n = int(len(data) * (1 - args.val_fraction))
    train = np.array(enc.encode_ordinary(data[:n]), dtype=np.uint16)
    val = np.array(enc.encode_ordinary(data[n:]), dtype=np.uint16)
    meta = {
        'vocab_size': 50304,
        'tokenizer': 'gpt2',
        'dtype': 'uint16',
        'eot_token': enc.eot_token,
        'objective': 'next_token',  # what the data is: train.py picks the objective from it
        'split_tokens': {'train': len(train), 'val': len(val)},  # utils.TokenFile checks sizes
        # the largest id per split: start-up need not scan the files (utils.TokenFile)
        'split_max_token': {'train': int(train.max()), 'val': int(val.max())},
        'prepare': script_command('data/shakespeare/prepare.py', p, args),
    }
    write_dataset_dir(args.out_dir, {'train.bin': train, 'val.bin': val, 'meta.pkl': meta})
    print(f"train {len(train):,} / val {len(val):,} BPE tokens -> {args.out_dir}")


if __name__ == '__main__':
    run_cli(main)
