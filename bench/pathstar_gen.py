"""
Path-star generation speed (target: >= 100k examples/s for G(2,5)), the pathstar.py code path
(train + val with the train/val duplicate check), best of 3, no disk writes.

    python bench/pathstar_gen.py                    # G(2,5,N=50) and G(5,5,N=50), 200k + 10k
    python bench/pathstar_gen.py --d=2 --l=5 --n=1000000
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import pathstar  # noqa: E402
from configurator import ArgumentParser, run_cli  # noqa: E402


def main(argv=None):
    p = ArgumentParser()
    p.add_argument('--d', type=int, nargs='*', default=[2, 5])
    p.add_argument('--l', type=int, default=5)
    p.add_argument('--N', type=int, default=50)
    p.add_argument('--n', type=int, default=200_000, help='train examples (val: n/20)')
    a = p.parse_args(argv)
    for d in a.d:
        best = float('inf')
        for rep in range(3):
            t0 = time.perf_counter()
            tr, va, _ = pathstar.make_incontext(d, a.l, a.N, a.n, a.n // 20, seed=rep, quiet=True)
            best = min(best, time.perf_counter() - t0)
        n = len(tr) + len(va)
        print(
            f"G({d},{a.l},N={a.N}): {n:,} examples ({tr.shape[1]} tokens) in {best:.3f} s = "
            f"{n / best:,.0f} examples/s"
        )


if __name__ == '__main__':
    run_cli(main)
