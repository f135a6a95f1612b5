"""
The cost of every objective against plain next-token at the same shape.

    python bench/objectives.py                    # small and medium shapes, 1 thread
    python bench/objectives.py --shapes=small --steps=10

For each objective and shape, bench/throughput.py runs in its own process (so peak memory is
that run's) and prints ms/step (median after warm-up), tokens/s, the batch function's share of
the step and peak RSS; the ratio column divides by next-token on shakespeare_char at the same
batch size, block size and model. Datasets that are missing are reported, not made.
"""

import argparse
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from configurator import ArgumentParser, ConfigError, run_cli  # noqa: E402

SHAPES = {  # batch, block, layers, width
    'small': dict(batch_size=12, block_size=64, n_layer=4, n_head=4, n_embd=128),
    'medium': dict(batch_size=16, block_size=256, n_layer=6, n_head=6, n_embd=384),
}
# (label, dataset, flags, shape overrides); path-star rows have a fixed length (row_len - 1 = 31)
CASES = [
    ('next_token', 'shakespeare_char', ['--objective=next_token'], {}),
    (
        'next_token, 2 heads (MTP)',
        'shakespeare_char',
        ['--objective=next_token', '--n_future=2'],
        {},
    ),
    ('mlm, fixed window', 'shakespeare_char', ['--objective=mlm', '--mlm_packing=window'], {}),
    (
        'mlm, SEP-varlen (key mask)',
        'shakespeare_char',
        ['--objective=mlm', '--mlm_packing=sep'],
        {},
    ),
    ('sft (loss mask)', 'chat_gsm8k_char', ['--objective=sft'], {}),
    (
        'pathstar G(2,5)',
        'incontext_pathstar_d2_l5_n50',
        ['--objective=pathstar'],
        {'block_size': 31},
    ),
    ('unmasking (diffusion)', 'shakespeare_char', ['--objective=unmasking'], {}),
    ('remasking (diffusion)', 'shakespeare_char', ['--objective=remasking'], {}),
]


def run(dataset, flags, shape, steps, threads):
    args = (
        [f'--{k}={v}' for k, v in shape.items()]
        + flags
        + [
            f'--dataset={dataset}',
            '--device=cpu',
            '--compile=False',
            f'--num_threads={threads}',
            f'--bench_steps={steps}',
            '--bench_warmup=3',
            '--bench_json=True',
        ]
    )
    p = subprocess.run(
        [sys.executable, os.path.join(ROOT, 'bench', 'throughput.py')] + args,
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=dict(os.environ, OMP_NUM_THREADS=str(threads)),
    )
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith('JSON ')]
    if p.returncode or not lines:
        return None, (p.stderr.strip().splitlines() or ['failed'])[-1]
    return json.loads(lines[-1][5:]), None


def main(argv=None):
    ap = ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument('--shapes', default='small,medium')
    ap.add_argument('--steps', type=int, default=10)
    ap.add_argument('--threads', type=int, default=1)
    ap.add_argument('--only', default='', help='run only cases whose label contains this text')
    a = ap.parse_args(argv)
    unknown = [s for s in a.shapes.split(',') if s not in SHAPES]
    if unknown:
        raise ConfigError(
            f"--shapes={a.shapes}: unknown {unknown}; choose from {', '.join(SHAPES)}"
        )
    print(
        '| objective | shape | ms/step | tokens/s | batch fn share | peak RSS MiB | x next-token |'
    )
    print('|---|---|---|---|---|---|---|')
    for shape_name in a.shapes.split(','):
        shape = SHAPES[shape_name]
        refs = {}
        for label, dataset, flags, overrides in CASES:
            if a.only not in label:
                continue
            if not os.path.exists(os.path.join(ROOT, 'data', dataset, 'meta.pkl')):
                print(f'| {label} | {shape_name} | (no data/{dataset}: prepare it first) |||||')
                continue
            sh = dict(shape, **overrides)
            T = sh['block_size']
            if T not in refs:  # plain next-token at the same shape
                refs[T], _ = run(
                    'shakespeare_char', ['--objective=next_token'], sh, a.steps, a.threads
                )
            r, err = run(dataset, flags, sh, a.steps, a.threads)
            if r is None:
                print(f'| {label} | {shape_name} | failed: {err} |||||')
                continue
            ratio = r['ms_per_step'] / refs[T]['ms_per_step'] if refs[T] else float('nan')
            print(
                f"| {label} | {shape_name} (B={sh['batch_size']}, T={T}, L={sh['n_layer']}, "
                f"C={sh['n_embd']}) | {r['ms_per_step']:.1f} | {r['tokens_per_s']:,.0f} | "
                f"{100 * r['batch_share']:.1f}% | {r['peak_mem_mib']:.0f} | {ratio:.2f} |",
                flush=True,
            )


if __name__ == '__main__':
    run_cli(main)
