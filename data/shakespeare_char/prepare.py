"""
Character-level tiny Shakespeare -> train.bin / val.bin (uint16) + meta.pkl (as nanoGPT).

    python data/shakespeare_char/prepare.py [--input=path/to/input.txt] [--out_dir=...]

Without --input it uses input.txt beside this script, downloading it only if absent.
"""

import argparse
import os
import sys
import urllib.request

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..'))
from configurator import ArgumentParser, run_cli  # noqa: E402
from utils import DataError, script_command, write_dataset_dir  # noqa: E402

URL = 'https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt'
HERE = os.path.dirname(os.path.abspath(__file__))


def read_input(path):
    if path is None:
        path = os.path.join(HERE, 'input.txt')
        if not os.path.exists(path):
            print(f"downloading {URL}")
            urllib.request.urlretrieve(URL, path + '.part')
            os.replace(path + '.part', path)
    if not os.path.isfile(path):
        raise DataError(f"--input={path} not found: pass a text file (or no --input)")
    with open(path, encoding='utf-8') as f:
        return f.read()


def main(argv=None):
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--input', default=None, help='text file (default: input.txt here, downloaded)')
    p.add_argument('--out_dir', default=HERE)
    p.add_argument('--val_fraction', type=float, default=0.1)
    args = p.parse_args(argv)
    data = read_input(args.input)
    chars = sorted(set(data))
    stoi = {ch: i for i, ch in enumerate(chars)}
    itos = {i: ch for i, ch in enumerate(chars)}
    ids = np.array([stoi[c] for c in data], dtype=np.uint16)
    n = int(len(ids) * (1 - args.val_fraction))
    meta = {
        'vocab_size': len(chars),
        'itos': itos,
        'stoi': stoi,
        'tokenizer': 'char',
        'dtype': 'uint16',
        'objective': 'next_token',  # what the data is: train.py picks the objective from it
        'split_tokens': {'train': n, 'val': len(ids) - n},  # utils.TokenFile checks the sizes
        # the largest id per split: start-up need not scan the files (utils.TokenFile)
        'split_max_token': {'train': int(ids[:n].max()), 'val': int(ids[n:].max())},
        'prepare': script_command('data/shakespeare_char/prepare.py', p, args),
    }
    write_dataset_dir(args.out_dir, {'train.bin': ids[:n], 'val.bin': ids[n:], 'meta.pkl': meta})
    print(
        f"{len(data):,} characters, vocab {len(chars)}: train {n:,} / val {len(ids) - n:,} "
        f"tokens -> {args.out_dir}"
    )


if __name__ == '__main__':
    run_cli(main)
