"""
Text quality of masked-diffusion sampling strategies at equal NFE .

Unconditional samples of `length` tokens from a denoiser, scored by a separately trained
next-token judge (never the generator): judge NLL per token (nats, tokens 2..L given their
prefix), unigram entropy of the pooled samples (bits), repetition rate (share of repeated
character 4-grams within a sample). Reference row: the same metrics on real val windows.

    python bench/diffusion_eval.py --denoiser=out-diffusion-unmasking/ckpt.pt \
        --judge=out-diffusion-judge/ckpt.pt --remaskers="random:out-.../ckpt.pt,onpolicy:..."

Learned remasking costs one remasker pass per step but the last, so it runs steps = NFE // 2
(NFE = 2 steps - 1); the other strategies run steps = NFE. Prints a markdown table, saves a PNG.

--self_remask=True: the denoiser is a `hybrid` checkpoint (train.py --objective=hybrid); adds the
rows "random order + self remask" and "confidence + self remask": the pass that drafts also
scores P(WRONG) at committed positions (sample.py --remask=self), so steps = NFE. Its plain rows
(no / random / learned remasking) then sample from the same hybrid model.
"""

import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import diffusion  # noqa: E402
from checkpoint import check_kind, load_model  # noqa: E402
from configurator import ConfigError, load_config, run_cli  # noqa: E402

DEFAULTS = dict(
    denoiser='out-diffusion-unmasking/ckpt.pt',
    judge='out-diffusion-judge/ckpt.pt',
    remaskers='',
    num_samples=200,
    length=64,
    nfe='16,32,64',
    temperature=1.0,
    remask_ratio=0.25,
    remask_threshold=0.5,
    seed=1337,
    data_dir='data/shakespeare_char',
    png='docs/diffusion_eval.png',
    num_threads=1,
    self_remask=False,
)  # True: --denoiser is a hybrid ckpt; adds the self-remask rows


@torch.no_grad()
def judge_nll(judge, x):
    """NLL (nats/token) of x (N, L) under a causal judge, tokens 2..L given their prefix:
    (mean, standard error over the N samples)."""
    logits, _ = judge(x)
    nll = F.cross_entropy(logits[:, :-1].transpose(1, 2), x[:, 1:], reduction='none').mean(1)
    return float(nll.mean()), float(nll.std() / math.sqrt(len(nll)))


def unigram_entropy(x, vocab):
    p = torch.bincount(x.flatten(), minlength=vocab).double()
    p = p[p > 0] / p.sum()
    return float(-(p * p.log2()).sum())


def repetition(x, n=4):
    """Mean over samples of 1 - distinct n-grams / n-grams."""
    out = []
    for row in x.tolist():
        grams = [tuple(row[i : i + n]) for i in range(len(row) - n + 1)]
        out.append(1 - len(set(grams)) / len(grams))
    return float(np.mean(out))


def metrics(judge, x, vocab):
    nll, se = judge_nll(judge, x)
    return dict(nll=nll, se=se, ent=unigram_entropy(x, vocab), rep=repetition(x))


def main(argv=None):
    cfg, _ = load_config(DEFAULTS, sys.argv[1:] if argv is None else argv)
    torch.set_num_threads(cfg['num_threads'])
    den, ck = load_model(cfg['denoiser'], flag='--denoiser')
    judge, jck = load_model(cfg['judge'], flag='--judge')
    check_kind(ck, causal=False, fix='the denoiser is an unmasking or hybrid checkpoint')
    check_kind(jck, causal=True, fix='the judge is a next-token checkpoint')
    base, mask_id, wrong_id = diffusion.vocab_ids(ck['meta'])
    remaskers = {}
    for item in filter(None, cfg['remaskers'].split(',')):
        if ':' not in item:
            raise ConfigError(f"--remaskers={cfg['remaskers']}: items are name:ckpt, got {item!r}")
        name, path = item.split(':', 1)
        remaskers[name] = diffusion.load_remasker(path, ck['meta'])
    N, L = cfg['num_samples'], cfg['length']
    val = np.memmap(os.path.join(cfg['data_dir'], 'val.bin'), dtype=np.uint16, mode='r')
    ix = np.random.default_rng(cfg['seed']).integers(0, len(val) - L, N)
    real = torch.from_numpy(np.stack([val[i : i + L] for i in ix]).astype(np.int64))
    rows = [
        dict(
            strategy='real val windows (reference)',
            nfe=0,
            steps=0,
            sec=0.0,
            **metrics(judge, real, base),
        )
    ]
    strategies = [
        ('random order', 'random', 'none', None),
        ('confidence order', 'confidence', 'none', None),
        ('random order + random remask', 'random', 'random', None),
        ('confidence + random remask', 'confidence', 'random', None),
    ]
    strategies += [
        (f'{o} + learned remask ({n})', o, 'learned', n)
        for n in remaskers
        for o in ('random', 'confidence')
    ]
    if cfg['self_remask']:  # one pass per step: the hybrid denoiser flags its own wrong tokens
        diffusion.check_self_remask(ck, cfg['denoiser'])
        strategies += [
            ('random order + self remask', 'random', 'self', None),
            ('confidence + self remask', 'confidence', 'self', None),
        ]
    for nfe in [int(v) for v in cfg['nfe'].split(',')]:
        for label, order, remask, rname in strategies:
            steps = nfe // 2 if remask == 'learned' else nfe
            t0 = time.time()
            out, info = diffusion.diffusion_sample(
                den,
                torch.full((N, L), mask_id),
                steps,
                mask_id,
                base,
                order=order,
                temperature=cfg['temperature'],
                remask=remask,
                remask_ratio=cfg['remask_ratio'],
                remasker=remaskers.get(rname),
                wrong_id=wrong_id,
                remask_threshold=cfg['remask_threshold'],
                gen=torch.Generator().manual_seed(cfg['seed']),
            )
            rows.append(
                dict(
                    strategy=label,
                    nfe=info['nfe'],
                    steps=steps,
                    sec=time.time() - t0,
                    **metrics(judge, out, base),
                )
            )
            r = rows[-1]
            print(
                f"{label:45s} NFE {r['nfe']:3d}: judge NLL {r['nll']:.3f} ± {r['se']:.3f}, entropy "
                f"{r['ent']:.3f}, rep4 {r['rep']:.3f} ({r['sec']:.1f}s)",
                flush=True,
            )
    print(
        f"\n{N} samples of {L} tokens, temperature {cfg['temperature']}, remask_ratio "
        f"{cfg['remask_ratio']}, judge {cfg['judge']}\n"
    )
    print(
        '| strategy | NFE | steps | judge NLL (nats/tok) ± s.e. | unigram entropy (bits) | rep. 4-grams |'
    )
    print('|---|---|---|---|---|---|')
    for r in rows:
        print(
            f"| {r['strategy']} | {r['nfe'] or '-'} | {r['steps'] or '-'} | {r['nll']:.3f} ± {r['se']:.3f} | "
            f"{r['ent']:.3f} | {r['rep']:.3f} |"
        )
    plot(rows, cfg['png'])
    return rows


def plot(rows, path):
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    ref = rows[0]
    for ax, key, name in (
        (axes[0], 'nll', 'judge NLL (nats/token)'),
        (axes[1], 'ent', 'unigram entropy (bits)'),
    ):
        for label in dict.fromkeys(r['strategy'] for r in rows[1:]):
            rs = [r for r in rows[1:] if r['strategy'] == label]
            ax.plot([r['nfe'] for r in rs], [r[key] for r in rs], 'o-', label=label)
        ax.axhline(ref[key], color='k', ls='--', label='real val windows')
        ax.set_xscale('log', base=2)
        ax.set_xlabel('NFE per sample')
        ax.set_ylabel(name)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
    fig.savefig(path, dpi=110)
    print(f"saved {path}")


if __name__ == '__main__':
    run_cli(main)
