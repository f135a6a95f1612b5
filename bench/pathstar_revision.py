"""
Path-star revision test: does a hybrid model (train.py --objective=hybrid) flag and fix a wrong
first decision?

    python bench/pathstar_revision.py --hybrid=out-hybrid-pathstar-d2-l5/ckpt.pt --num_eval=1000

On in-context path-star rows the answer s a1 ... g is decoded with confidence order, one token
per pass (greedy tokens). Forced: s and g are given their true values, one pass of the model
picks the position confidence order would commit first among a1 ... a_{l-2}, and that position
gets the wrong node (the node at the same depth of another arm: the one wrong decision a planner
can make); the rest stays [MASK]. Then the model decodes the rest in l passes, with
--remask=none (the wrong node stays) and --remask=self (it may flag it, P(WRONG) > threshold,
send it back and redraw it; budget: one token per step). Reports exact match with and without
forcing, how often the wrong node is flagged in the first pass, how often it is fixed, and the
remasking of correct tokens (unforced runs), and at each middle position how often the model
flags the other arm's node against a uniform other token (what hybrid_wrong_source=uniform
trains on).
"""

import os
import shlex
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import diffusion  # noqa: E402
import tasks  # noqa: E402
from checkpoint import load_model  # noqa: E402
from configurator import ConfigError, load_config, run_cli  # noqa: E402

DEFAULTS = dict(hybrid='', num_eval=1000, remask_threshold=0.5, num_threads=1, seed=0)


@torch.no_grad()
def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    cfg, _ = load_config(DEFAULTS, argv)
    torch.set_num_threads(cfg['num_threads'])
    if not cfg['hybrid']:
        raise ConfigError("--hybrid: a hybrid checkpoint trained on in-context path-star rows")
    model, ck = load_model(cfg['hybrid'])
    diffusion.check_self_remask(ck, cfg['hybrid'])
    meta = ck['meta']
    base, mask_id, wrong_id = diffusion.vocab_ids(meta)
    rows = tasks.val_rows(ck)[: cfg['num_eval']]
    a, L = meta['answer_start'], meta['answer_len']
    truth = torch.as_tensor(rows[:, a : a + L])
    n, thr = len(rows), cfg['remask_threshold']
    run = dict(temperature=0, remask_ratio=1.0, remask_threshold=thr)

    def exact(out):
        return (out[:, a : a + L] == truth).all(1).double()

    res = {}
    for remask in ('none', 'self'):  # unforced: the model's own first decision
        out, info = tasks.decode(model, rows, meta, L, order='confidence', remask=remask, **run)
        res[f'unforced_{remask}'] = exact(out)
        if remask == 'self':
            res['unforced_remasked'] = info['remasked'].double()
    # forced: s, g true, the first confidence pick among the middle nodes gets a wrong node
    x = torch.as_tensor(rows).clone()
    x[:, a + 1 : a + L - 1] = mask_id
    probs = model(x)[0][..., :base].float().softmax(-1).amax(-1)[:, a + 1 : a + L - 1]
    j = probs.argmax(1)  # (n,): index into a1 .. a_{l-2}
    wrong = torch.as_tensor(tasks.wrong_arm(rows, meta))[torch.arange(n), j]
    pos = a + 1 + j
    x[torch.arange(n), pos] = wrong
    pw = diffusion.p_wrong(model(x)[0], wrong_id)[torch.arange(n), pos]
    res['flagged'] = (pw > thr).double()
    free = torch.zeros_like(x, dtype=torch.bool)
    free[:, a : a + L] = True
    for remask in ('none', 'self'):
        out, _ = diffusion.diffusion_sample(
            model,
            x,
            L,
            mask_id,
            base,
            order='confidence',
            remask=remask,
            free=free,
            wrong_id=wrong_id,
            **run,
        )
        res[f'forced_{remask}'] = exact(out)
        res[f'fixed_{remask}'] = (
            out[torch.arange(n), pos] == truth[torch.arange(n), j + 1]
        ).double()
    print(
        "forced position (a1 = 1): "
        + ', '.join(f"a{k + 1} {float((j == k).double().mean()):.3f}" for k in range(L - 2))
    )
    print(f"\n{n} held-out graphs, confidence order, {L} passes, greedy tokens, threshold {thr}\n")
    print("| decoding | exact match ± s.e. | wrong node flagged (first pass) | wrong node fixed |")
    print("|---|---|---|---|")
    for r in ('none', 'self'):
        m, se = tasks.mean_se(res[f'unforced_{r}'].numpy())
        print(f"| unforced, remask {r} | {m:.3f} ± {se:.3f} | - | - |")
    for r in ('none', 'self'):
        m, se = tasks.mean_se(res[f'forced_{r}'].numpy())
        flag = f"{res['flagged'].mean():.3f}" if r == 'self' else '-'
        print(
            f"| forced wrong first decision, remask {r} | {m:.3f} ± {se:.3f} | {flag} | "
            f"{res[f'fixed_{r}'].mean():.3f} |"
        )
    print(
        f"\nunforced, remask self: {res['unforced_remasked'].mean():.3f} tokens sent back per graph"
    )
    # Which wrong nodes the model can see: at each middle position (the others [MASK], s and g
    # true), the other arm's node there (a plausible error) against a uniform other token (the
    # corruption hybrid_wrong_source=uniform trains on).
    gen = torch.Generator().manual_seed(cfg['seed'])
    wrong_all = torch.as_tensor(tasks.wrong_arm(rows, meta))  # (n, l-1)
    print("\n| forced position | other-arm node flagged | uniform other token flagged |")
    print("|---|---|---|")
    for k in range(L - 2):
        p = a + 1 + k
        for name, tok in (('arm', wrong_all[:, k]), ('uniform', None)):
            xk = torch.as_tensor(rows).clone()
            xk[:, a + 1 : a + L - 1] = mask_id
            if tok is None:
                tok = diffusion.random_other_tokens(truth[:, k + 1], base, gen)
            xk[:, p] = tok
            pw = diffusion.p_wrong(model(xk)[0], wrong_id)[:, p]
            res[f'flag_{name}_a{k + 1}'] = (pw > thr).double()
        print(
            f"| a{k + 1} | {res[f'flag_arm_a{k + 1}'].mean():.3f} | "
            f"{res[f'flag_uniform_a{k + 1}'].mean():.3f} |"
        )
    print(f"command: python bench/pathstar_revision.py {shlex.join(argv)}")
    return {k: float(v.mean()) for k, v in res.items()}


if __name__ == '__main__':
    run_cli(main)
