"""
One command that checks nanomask on a new GPU machine (about 5 minutes on one H100/H200):

    python bench/gpu_check.py                 # the GPU (device auto); prints PASS/FAIL/SKIP lines
    python bench/gpu_check.py --device=cpu    # tiny CPU mode (tests/test_gpu_check.py runs it)
    python bench/gpu_check.py --only=sampler,throughput

Checks (each one line, with its figures; exit status 1 if any FAILs):
  flex        FlexAttention compiled once: recompiles over varied evaluation batch sizes
  objectives  every objective trains 5 steps (--compile=True, bf16) and evaluates; on-policy
              drafts of a frozen denoiser run on the device
  sampler     the diffusion sampler in every order and remasking mode: equal to the CPU result
              at temperature 0 (deterministic modes; random ones must be valid)
  flex_sdpa   the masked loss with FlexAttention equals SDPA's (bf16, 1e-3)
  throughput  GPT-2 124M next-token and a key-masked objective (SEP-varlen MLM) on synthetic
              tokens at nanoGPT's shapes (batch 12, block 1024, compile, bf16): ms/it, MFU, host
              syncs per step
  resume      save, load, resume on the device; the checkpoint loads on the CPU and samples
  torchrun    with >= 2 GPUs: a 3-step DDP run of a masked objective
In CPU mode the same code runs at tiny shapes without compile; flex (CUDA-only compile) and
torchrun are SKIPped and the sampler is compared with itself across two runs.
"""

import argparse
import contextlib
import io
import json
import os
import pickle
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import warnings

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import diffusion  # noqa: E402
import pathstar  # noqa: E402
import sample  # noqa: E402
import train  # noqa: E402
from checkpoint import load_model  # noqa: E402
from configurator import run_cli  # noqa: E402
from model import GPT, GPTConfig  # noqa: E402
from utils import resolve_device  # noqa: E402

NEWLINE = 198


class Check:
    """What every check gets: the device, tiny (CPU mode), the work folder with the datasets."""

    def __init__(self, device, work):
        self.device, self.work = device, work
        self.cuda = torch.device(device).type == 'cuda'
        self.tiny = not self.cuda
        self.logs = os.path.join(work, 'logs')
        os.makedirs(self.logs, exist_ok=True)

    def model_flags(self):
        """A small model for the functional checks (compiled on the GPU)."""
        size = ['--n_layer=1', '--n_head=2', '--n_embd=32'] if self.tiny else []
        size = size or ['--n_layer=2', '--n_head=4', '--n_embd=128']
        return size + [
            f'--device={self.device}',
            f'--compile={self.cuda}',
            f"--dtype={'bfloat16' if self.cuda else 'float32'}",
            f'--data_root={self.work}',
            '--batch_size=8',
            '--eval_iters=2',
            '--warmup_iters=0',
        ]

    def train(self, name, args):
        """train.main(args) with its output in logs/<name>.log (the path is in any error)."""
        if self.cuda:
            torch._dynamo.reset()  # a fresh compile per run: no cache-size fallback to eager
        log = os.path.join(self.logs, f'{name}.log')
        with open(log, 'w') as f, contextlib.redirect_stdout(f):
            try:
                return train.main(args + [f'--out_dir={self.work}/out-{name}'])
            except SystemExit as e:
                raise RuntimeError(f"train.py exited {e.code} (log: {log})") from None


def make_data(work, tiny):
    """The datasets: web (synthetic GPT-2 tokens with newlines), char (letters and newlines),
    ps (path-star G(2,4)), chat (a chat dataset of one repeated exchange)."""
    rng = np.random.default_rng(0)
    n = 200_000 if tiny else 20_000_000
    os.makedirs(f'{work}/web', exist_ok=True)
    for split, k in (('train', n), ('val', max(n // 20, 1 << 16))):
        ids = rng.integers(0, 50257, k, dtype=np.uint16)
        ids[rng.random(k) < 1 / 40] = NEWLINE
        ids.tofile(f'{work}/web/{split}.bin')
    meta = dict(vocab_size=50304, tokenizer='gpt2', dtype='uint16', objective='next_token')
    with open(f'{work}/web/meta.pkl', 'wb') as f:
        pickle.dump(meta, f)
    letters = 'abcdefgh \n'
    os.makedirs(f'{work}/char', exist_ok=True)
    text = rng.integers(0, len(letters), 100_000).astype(np.uint16)
    text[:90_000].tofile(f'{work}/char/train.bin')
    text[90_000:].tofile(f'{work}/char/val.bin')
    meta = dict(vocab_size=len(letters), dtype='uint16', objective='next_token', tokenizer='char')
    meta.update(stoi={c: i for i, c in enumerate(letters)}, itos=dict(enumerate(letters)))
    with open(f'{work}/char/meta.pkl', 'wb') as f:
        pickle.dump(meta, f)
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        flags = ['--d=2', '--l=4', '--N=20', '--num_train=2000', '--num_val=200']
        pathstar.main(flags + [f'--data_root={work}', '--name=ps'])
        os.makedirs(f'{work}/chat/train', exist_ok=True)
        os.makedirs(f'{work}/chat/val', exist_ok=True)
        for split, k in (('train', 20_000), ('val', 4_000)):  # chat shards: tokens + 0/1 mask
            rng.integers(0, 8, k, dtype=np.uint16).tofile(f'{work}/chat/{split}/shard_000.bin')
            mask = (np.arange(k) % 4 >= 2).astype(np.uint8)
            mask.tofile(f'{work}/chat/{split}/shard_000_mask.bin')
        special = {'<|system|>': 8, '<|user|>': 9, '<|assistant|>': 10, '<|end|>': 11}
        meta = dict(vocab_size=12, dtype='uint16', objective='sft', special=special)
        meta.update(stoi={c: i for i, c in enumerate('abcdefgh')}, itos=dict(enumerate('abcdefgh')))
        with open(f'{work}/chat/meta.pkl', 'wb') as f:
            pickle.dump(meta, f)


# ------------------------------------------------------------------------------------- checks
def check_flex(c):
    """FlexAttention on key-masked batches of ten batch sizes (as evaluation sees them): after
    the first sizes (a static compile, then one with dynamic shapes) no size compiles again, and
    the unfused eager kernel (its warning) is never used."""
    if not c.cuda:
        return 'SKIP', 'FlexAttention is compiled on CUDA only'
    import torch._dynamo.utils as dyn

    torch._dynamo.reset()
    cfg = GPTConfig(block_size=256, vocab_size=1000, n_layer=2, n_head=4, n_embd=128, causal=False)
    model = GPT(cfg).to(c.device).eval()
    graphs = []
    with torch.no_grad(), torch.autocast('cuda', dtype=torch.bfloat16):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter('always')
            for B in (8, 5, 3, 16, 7, 11, 2, 9, 13, 4):
                x = torch.randint(1000, (B, 256), device=c.device)
                lens = torch.randint(16, 256, (B, 1), device=c.device)
                model(x, attention_mask=torch.arange(256, device=c.device) < lens)
                graphs.append(dyn.counters['stats']['unique_graphs'])
    unfused = sum('without torch.compile' in str(w.message) for w in caught)
    late = graphs[-1] - graphs[2]  # compiles after the third size
    ok = late == 0 and unfused == 0
    return ('PASS' if ok else 'FAIL'), (
        f"{graphs[2]} graph(s) compiled over the first 3 batch sizes, {late} over the next 7; "
        f"unfused-flex warnings: {unfused}"
    )


OBJECTIVES = [  # (name, dataset, flags)
    ('next_token', 'char', []),
    ('pathstar', 'ps', ['--pathstar_eval_rows=64']),
    ('mlm', 'char', ['--objective=mlm', '--block_size=64']),
    ('sft', 'chat', ['--block_size=32']),
    ('unmasking', 'ps', ['--objective=unmasking', '--diffusion_eval_rows=64']),
    ('unmasking_text', 'char', ['--objective=unmasking', '--block_size=64']),
    ('remasking', 'char', ['--objective=remasking', '--block_size=64']),
    ('hybrid', 'ps', ['--objective=hybrid']),
]


def check_objectives(c):
    steps = 2 if c.tiny else 5
    done = []
    for name, dataset, flags in OBJECTIVES:
        args = c.model_flags() + [f'--dataset={dataset}', *flags]
        hist = c.train(name, args + [f'--max_iters={steps}', f'--eval_interval={steps}'])
        losses = [h['loss'] for h in hist['train']]
        if len(losses) != steps or not all(np.isfinite(losses)) or len(hist['eval']) != 2:
            return 'FAIL', f"{name}: losses {losses}, evaluations {len(hist['eval'])}"
        done.append(f"{name} {losses[-1]:.3f}")
    den = f'{c.work}/out-unmasking_text'  # on-policy drafts: a frozen denoiser on the device
    for name, flags in (
        ('remasking_onpolicy', ['--objective=remasking', f'--remasking_denoiser={den}']),
        (
            'hybrid_self',
            ['--objective=hybrid', '--hybrid_wrong_source=self', f'--hybrid_denoiser={den}'],
        ),
    ):
        args = c.model_flags() + ['--dataset=char', '--block_size=64', *flags]
        hist = c.train(name, args + [f'--max_iters={steps}', f'--eval_interval={steps}'])
        done.append(f"{name} {hist['train'][-1]['loss']:.3f}")
    return 'PASS', f"{len(done)} runs x {steps} steps, final losses: " + ', '.join(done)


def sampler_model(device, seed):
    """A denoiser with well-separated logits (PyTorch init, large embeddings): argmax ties that
    float rounding could break differently on two devices are rare."""
    torch.manual_seed(seed)
    cfg = GPTConfig(
        block_size=32, vocab_size=12, n_layer=2, n_head=2, n_embd=32, causal=False,
        tie_embeddings=False, emb_init_std=1.0, linear_init='pytorch',
    )  # fmt: skip
    with torch.device('cpu'):
        m = GPT(cfg).eval()
    m.lm_head.weight.data *= 5
    return m


def check_sampler(c):
    """Every order x remasking mode: the same canvases on the device and on the CPU."""
    base, mask_id, wrong_id = 10, 10, 11
    models = {d: (sampler_model(d, 0).to(d), sampler_model(d, 1).to(d)) for d in ('cpu', c.device)}
    canvas = torch.full((16, 32), mask_id)
    canvas[:, :3] = torch.randint(10, (16, 3), generator=torch.Generator().manual_seed(0))
    equal = total = 0
    valid = []
    precision = torch.backends.cuda.matmul.fp32_precision
    torch.backends.cuda.matmul.fp32_precision = 'ieee'  # float32 as on the CPU for the comparison
    try:
        for order in diffusion.ORDERS:
            for remask in diffusion.REMASKS:
                outs = []
                for d in ('cpu', c.device) if c.cuda else ('cpu', 'cpu'):
                    den, rem = models[d]
                    x, info = diffusion.diffusion_sample(
                        den, canvas.to(d), 16, mask_id, base, order=order, temperature=0.0,
                        block_len=8, remask=remask, remasker=rem, wrong_id=wrong_id,
                        remask_threshold=0.0, gen=torch.Generator().manual_seed(0),
                    )  # fmt: skip
                    if (x == mask_id).any() or x.device.type != torch.device(d).type:
                        return 'FAIL', f"order={order} remask={remask} on {d}: invalid output"
                    outs.append(x.cpu())
                deterministic = order != 'random' and remask != 'random'
                if deterministic or not c.cuda:  # random draws differ between devices
                    rows = (outs[0] == outs[1]).all(1)
                    equal, total = equal + int(rows.sum()), total + len(rows)
                else:
                    valid.append(f"{order}/{remask}")
    finally:
        torch.backends.cuda.matmul.fp32_precision = precision
    ok = equal >= 0.99 * total
    if not c.cuda:
        return ('PASS' if ok else 'FAIL'), f"{equal}/{total} rows equal in two CPU runs"
    return ('PASS' if ok else 'FAIL'), (
        f"{equal}/{total} rows equal to the CPU's at temperature 0 (deterministic modes); "
        f"{len(valid)} modes with random draws valid on the device"
    )


def check_flex_sdpa(c):
    """The same key-masked batch through FlexAttention and SDPA: loss and logits agree."""
    torch.manual_seed(0)
    cfg = GPTConfig(block_size=128, vocab_size=500, n_layer=2, n_head=4, n_embd=64, causal=False)
    with torch.device('cpu'):
        model = GPT(cfg).eval()
    model.to(c.device)
    g = torch.Generator().manual_seed(1)
    x = torch.randint(500, (6, 128), generator=g).to(c.device)
    y = torch.where(torch.rand(6, 128, generator=g) < 0.3, x.cpu(), -1).to(c.device)
    attn = (torch.arange(128) < torch.tensor([[128], [90], [64], [33], [100], [5]])).to(c.device)
    out = {}
    ctx = torch.autocast('cuda', dtype=torch.bfloat16) if c.cuda else contextlib.nullcontext()
    for impl in ('flex', 'sdpa'):
        model.config.attn_impl = impl
        with torch.no_grad(), ctx, warnings.catch_warnings():
            warnings.simplefilter('ignore')  # on the CPU: flex's unfused-kernel warning
            s, w, logits = model.loss_terms(x, y, attention_mask=attn)
        out[impl] = (float(s.sum() / w.sum()), logits.float())
    (lf, zf), (ls, zs) = out['flex'], out['sdpa']
    rel = abs(lf - ls) / abs(ls)
    tol = 1e-3 if c.cuda else 1e-5
    real = attn[:, :, None].expand_as(zf)
    dz = float((zf - zs)[real].abs().max())
    ok = rel <= tol
    return ('PASS' if ok else 'FAIL'), (
        f"masked loss flex {lf:.5f} vs sdpa {ls:.5f} (rel {rel:.1e}, tol {tol:g}); max logit "
        f"diff at real positions {dz:.2e}"
    )


def throughput_run(c, name, flags, steps, window):
    """(median ms/it, median MFU or None, host syncs per step) of a train.py run at GPT-2 124M
    shapes (tiny on the CPU), from its metrics.jsonl: windows of `window` steps, the first
    (compilation) left out."""
    if c.tiny:
        size = ['--n_layer=1', '--n_head=2', '--n_embd=32', '--block_size=64', '--batch_size=4']
    else:
        size = ['--n_layer=12', '--n_head=12', '--n_embd=768', '--block_size=1024']
        size += ['--batch_size=12', '--compile=True', '--dtype=bfloat16']
    args = [f'--device={c.device}', '--compile=False', f'--data_root={c.work}', '--dataset=web']
    args += size + flags + ['--gradient_accumulation_steps=1', '--eval_iters=1']
    args += [f'--max_iters={steps}', f'--eval_interval={steps}', f'--log_interval={window}']
    if c.cuda:
        torch.cuda.set_sync_debug_mode('warn')
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter('always')
            c.train(name, args)
    finally:
        if c.cuda:
            torch.cuda.set_sync_debug_mode('default')
    syncs = sum('synchroniz' in str(w.message) for w in caught)
    rows = [json.loads(l) for l in open(f'{c.work}/out-{name}/metrics.jsonl')]
    warm = [r for r in rows if r['kind'] == 'train'][1:]  # the first window: compilation
    ms = statistics.median(r['dt_ms'] for r in warm)
    mfu = [r['mfu'] for r in warm if 'mfu' in r]
    return ms, (statistics.median(mfu) if mfu else None), syncs / steps


def check_throughput(c):
    steps, window = (8, 4) if c.tiny else (50, 10)
    parts = []
    for name, flags in (('gpt2_next_token', []), ('gpt2_mlm_sep', ['--objective=mlm'])):
        ms, mfu, syncs = throughput_run(c, name, flags, steps, window)
        mfu_s = f", MFU {100 * mfu:.1f}%" if mfu is not None else ''
        parts.append(f"{name} {ms:.1f} ms/it{mfu_s}, {syncs:.2f} host syncs/step (log lines incl.)")
    return 'PASS', '; '.join(parts)


def check_resume(c):
    """8 steps straight vs 4 + resume 4, on the device; then the checkpoint on the CPU."""
    args = c.model_flags() + ['--dataset=char', '--compile=False', '--lr_decay_iters=8']
    args += ['--eval_interval=4']
    straight = c.train('resume_a', args + ['--max_iters=8'])
    c.train('resume_b', args + ['--max_iters=4'])
    out_b = f'{c.work}/out-resume_b'
    log = os.path.join(c.logs, 'resume_b2.log')
    with open(log, 'w') as f, contextlib.redirect_stdout(f):
        resumed = train.main([f'--out_dir={out_b}', '--init_from=resume', '--max_iters=8'])
    a = [h['loss'] for h in straight['train'][4:]]
    b = [h['loss'] for h in resumed['train']]
    diff = max(abs(x - y) for x, y in zip(a, b))
    tol = 1e-2 if c.cuda else 1e-6  # CUDA kernels (embedding backward) are not deterministic
    model, _ = load_model(out_b, 'cpu')
    with contextlib.redirect_stdout(io.StringIO()):
        outs = sample.main([f'--out_dir={out_b}', '--num_samples=1', '--max_new_tokens=8'])
    ok = diff <= tol and len(outs) == 1 and next(model.parameters()).device.type == 'cpu'
    return ('PASS' if ok else 'FAIL'), (
        f"resumed losses within {diff:.1e} of the straight run (tol {tol:g}); the device "
        f"checkpoint loads on the CPU and samples"
    )


def check_torchrun(c):
    n = torch.cuda.device_count() if c.cuda else 0
    if n < 2:
        return 'SKIP', f"needs >= 2 GPUs ({n} here; tests/test_ddp.py runs DDP on the CPU)"
    args = [a for a in c.model_flags() if not a.startswith('--compile')] + ['--compile=False']
    args += ['--dataset=char', '--objective=mlm', '--block_size=64', '--max_iters=3']
    args += ['--eval_interval=3', '--gradient_accumulation_steps=2', f'--out_dir={c.work}/out-ddp']
    launcher = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2']
    cmd = launcher + [os.path.join(ROOT, 'train.py'), *args]
    t = time.time()
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if p.returncode:
        tail = ' | '.join(p.stderr.strip().splitlines()[-3:])
        return 'FAIL', f"torchrun exited {p.returncode}: {tail}"
    return 'PASS', f"2 ranks x 3 steps of mlm in {time.time() - t:.0f} s"


CHECKS = {
    'flex': check_flex,
    'objectives': check_objectives,
    'sampler': check_sampler,
    'flex_sdpa': check_flex_sdpa,
    'throughput': check_throughput,
    'resume': check_resume,
    'torchrun': check_torchrun,
}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument('--device', default='auto', help="'auto' (cuda if available), 'cuda', 'cpu'")
    p.add_argument('--only', default='', help=f"comma-separated checks of {', '.join(CHECKS)}")
    p.add_argument(
        '--work', default='', help='folder for data, runs and logs (default: a temp one)'
    )
    a = p.parse_args(argv)
    names = [n for n in a.only.split(',') if n] or list(CHECKS)
    unknown = [n for n in names if n not in CHECKS]
    if unknown:
        raise SystemExit(f"error: --only: unknown check(s) {unknown}; checks: {', '.join(CHECKS)}")
    device = resolve_device(a.device)
    with contextlib.ExitStack() as stack:
        work = a.work or stack.enter_context(tempfile.TemporaryDirectory())
        c = Check(device, work)
        what = torch.cuda.get_device_name(device) if c.cuda else 'CPU (tiny mode)'
        print(f"nanomask gpu_check on {device}: {what}, torch {torch.__version__}", flush=True)
        t0 = time.time()
        make_data(work, c.tiny)
        results = []
        for name in names:
            t = time.time()
            try:
                status, msg = CHECKS[name](c)
            except Exception as e:  # one line per failed check; the others still run
                where = traceback.extract_tb(e.__traceback__)[-1]
                msg = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''} "
                msg += f"({os.path.basename(where.filename)}:{where.lineno})"
                status = 'FAIL'
            results.append(status)
            print(f"{status} {name} ({time.time() - t:.0f} s): {msg}", flush=True)
        fails = results.count('FAIL')
        print(f"{len(results) - fails}/{len(results)} checks passed or skipped, {fails} failed, "
              f"{time.time() - t0:.0f} s")  # fmt: skip
    return 1 if fails else 0


if __name__ == '__main__':
    run_cli(main)
