"""
Train one GPT on any objective of batches.py (after nanoGPT's train.py).

single process:  python train.py config/train_shakespeare_char.py --device=cpu --compile=False
DDP:             torchrun --standalone --nproc_per_node=2 train.py config/... (gloo on CPU)

The loss of a step is the mean over the supervised tokens of the whole accumulated batch
(all micro-batches, all ranks): the supervised weight is counted before the forward passes
and every micro-batch loss is its weighted CE sum divided by that global count.
"""

import json
import math
import os
import shlex
import shutil
import signal
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, nullcontext

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

import batches
import checkpoint
import pretrained
from configurator import (
    ConfigError,
    check_device_keys,
    exit_if_help,
    flag_keys,
    load_config,
    run_cli,
)
from model import (
    ARCH_KEYS,
    GPT,
    INIT_KEYS,
    LINEAR_INITS,
    POS_EMBS,
    RUN_KEYS,
    GPTConfig,
    supervised_weights,
)
from utils import (
    atomic_write,
    autocast,
    mix_seed,
    pin_memory,
    resolve_device,
    resolve_dtype,
    seeded,
    write_error,
)

DEFAULTS = dict(
    # I/O
    out_dir='out',
    eval_interval=2000,
    log_interval=1,
    eval_iters=200,
    eval_only=False,
    always_save_checkpoint=True,
    init_from='scratch',  # 'scratch' | 'resume' | path to a ckpt | 'gpt2' ... (pretrained.py)
    wandb_log=False,
    wandb_project='nanomask',
    wandb_run_name='run',
    # data: data_root/dataset, read by the batch source of `objective`
    data_root='data',
    dataset='shakespeare_char',
    objective='next_token',
    gradient_accumulation_steps=1,
    batch_size=12,
    block_size=1024,
    # model
    n_layer=12,
    n_head=12,
    n_embd=768,
    dropout=0.0,
    bias=False,
    n_future=1,
    tie_embeddings=True,
    emb_init_std=0.02,
    linear_init='gpt2',  # model.GPTConfig
    pos_emb='learned',
    future_head_weights=None,  # e.g. [1.0, 0.5]: weights of the n_future heads' losses
    # AdamW and a warmup + cosine schedule
    learning_rate=6e-4,
    max_iters=600000,
    weight_decay=1e-1,
    beta1=0.9,
    beta2=0.95,
    grad_clip=1.0,
    decay_lr=True,
    warmup_iters=2000,
    lr_decay_iters=600000,
    min_lr=6e-5,
    cooldown_frac=0.0,
    # system
    backend='nccl',
    device='auto',
    dtype='auto',
    compile=True,
    seed=1337,
    num_threads=0,
    attn_impl='auto',  # 'auto' | 'sdpa' | 'flex': kernel for masked batches (model.select_attention)
    **batches.all_defaults(),
)

# --help: one line per key of DEFAULTS, grouped (tests/test_help.py: exactly the keys of DEFAULTS)
HELP = {
    'trainer / I-O': dict(
        out_dir='folder of ckpt.pt (the resume file) and metrics.jsonl',
        eval_interval='evaluate (and save ckpt.pt) every this many iterations, and after the last',
        log_interval='print a log line (and a metrics.jsonl row) every this many iterations',
        eval_iters='batches per split at each evaluation (always the same batches)',
        eval_only='evaluate once (at the loaded iteration with --init_from=resume), save nothing',
        always_save_checkpoint='save at every evaluation; False: only when val loss improves',
        init_from="'scratch', 'resume' (out_dir/ckpt.pt), a ckpt/folder, gpt2[-medium|-large|-xl]",
        wandb_log='log train/eval metrics to Weights & Biases (WANDB_MODE=offline: no account)',
        wandb_project='wandb project name',
        wandb_run_name="wandb run name (a source's run_tag is appended)",
    ),
    'data': dict(
        data_root='folder holding the dataset folders',
        dataset='dataset folder under data_root (train.bin, val.bin, meta.pkl)',
        objective='what is trained: ' + ', '.join(batches.OBJECTIVES) + ' (keys below)',
        gradient_accumulation_steps='micro-batches per optimisation step (all ranks together)',
        batch_size='sequences per micro-batch',
        block_size='tokens per sequence (context length)',
    ),
    'model': dict(
        n_layer='transformer blocks',
        n_head='attention heads',
        n_embd='embedding width',
        dropout='dropout probability (training only)',
        bias='bias in Linear and LayerNorm layers',
        n_future='output heads: head i predicts token t+i (multi-token prediction)',
        tie_embeddings='lm_head shares the token embedding matrix',
        emb_init_std='std of the token/position embedding init (1.0 = nn.Embedding)',
        linear_init="'gpt2' (N(0, 0.02), scaled residual projections) or 'pytorch'",
        pos_emb="positions: 'learned' (GPT-2's table) or 'rope' (rotary: relative positions)",
        future_head_weights='weights of the n_future heads in the loss, e.g. [1.0, 0.5]; None: equal',
    ),
    'optimizer (AdamW, linear warmup then cosine decay)': dict(
        learning_rate='peak learning rate',
        max_iters='optimisation steps in total',
        weight_decay='AdamW weight decay (2-D weights only)',
        beta1='AdamW beta1',
        beta2='AdamW beta2',
        grad_clip='clip the gradient norm to this (0.0: no clipping; the norm is still logged)',
        decay_lr='warmup + cosine schedule; False: constant learning_rate',
        warmup_iters='linear warmup steps',
        lr_decay_iters='step at which the cosine reaches min_lr',
        min_lr='learning rate after lr_decay_iters',
        cooldown_frac='with decay_lr=False: constant learning_rate, then linear to min_lr over the '
        'last cooldown_frac of lr_decay_iters (warmup-stable-decay without warmup); 0: constant',
    ),
    'system': dict(
        backend="DDP backend on GPUs ('nccl'; CPU runs use gloo)",
        device="'auto' (cuda if available), 'cpu', 'cuda', 'cuda:1', ...",
        dtype="'auto' (bfloat16 on CUDA when supported), 'float32', 'bfloat16', 'float16'",
        compile='torch.compile the model',
        seed='seed of the initial weights, of every batch and of dropout',
        num_threads='torch CPU threads (0: torch default)',
        attn_impl="attention kernel for masked batches: 'auto', 'sdpa' or 'flex'",
    ),
}
# each objective's keys (batches.py sources' `defaults`); grouped by the objectives reading them
OBJECTIVE_HELP = dict(
    pathstar_loss_on="'answer': only the path tokens are targets; 'all': the whole row",
    pathstar_teacherless="answer inputs become '$' (teacherless, one parallel pass)",
    pathstar_eval_rows='rows of each split decoded for path accuracy at evaluation',
    pathstar_online='a fresh graph for every training example (in-context datasets)',
    mlm_packing="'sep': whole lines ending in [SEP], key-masked; 'window': fixed windows",
    mlm_probability="share of tokens selected for prediction (mlm_ratio='fixed')",
    mlm_ratio="'fixed' (mlm_probability) or 'uniform' (drawn per sample in [eps, 1])",
    mlm_ratio_eps="lower end of the ratio with mlm_ratio='uniform'",
    mlm_mask_frac='share of selected tokens replaced by [MASK] (BERT: 0.8)',
    mlm_random_frac='share of selected tokens replaced by a random token (BERT: 0.1)',
    mlm_eval_ratio='selection ratio of the val_mlm evaluation (all [MASK])',
    use_loss_mask="train only on the assistant's tokens (False: on every token)",
    mask_eps='masking ratio t ~ U(mask_eps, 1) per row',
    mask_stratified='stratify t over the batch (lower-variance loss) instead of i.i.d.',
    mask_t_min='floor of the masking ratio t',
    mask_t_power='t = U(mask_eps, 1) ** this before the floor: > 1 draws more low-t rows',
    mask_min_one='at least one masked position per row',
    diffusion_eval_rows='path-star or task (tasks.py) rows decoded by the denoiser at evaluation',
    unmasking_loss="'mean': plain mean CE over masked tokens; 'inv_t': sum CE/t over the maskable count (MDLM)",
    remasking_loss_type="'all_positions' (every real position) or 'corrupted_only'",
    remasking_denoiser="frozen denoiser checkpoint drafting the corruptions ('': uniform)",
    remasking_temperature="sampling temperature of remasking_denoiser's drafts",
    hybrid_wrong_frac='share of the chosen positions given a wrong token instead of [MASK]',
    hybrid_wrong_source="'uniform', 'context' (tokens of the row's prompt) or 'self' (hybrid_denoiser drafts)",
    hybrid_denoiser='frozen checkpoint drafting the wrong tokens (hybrid_wrong_source=self)',
    hybrid_temperature="sampling temperature of hybrid_denoiser's drafts",
)
USAGE = """usage: python train.py [config.py ...] [--key=value ...]   (torchrun ... train.py for DDP)

Config files (plain assignments) and --key=value flags, in order, override the defaults below."""


def objective_readers():
    """{objective key: [the objectives that read it]} (batch sources' `defaults`)."""
    readers = {}
    for name, cls in batches.OBJECTIVES.items():
        for klass in reversed(cls.__mro__):
            for k in getattr(klass, 'defaults', {}):
                if name not in readers.setdefault(k, []):
                    readers[k].append(name)
    return readers


def help_groups():
    """HELP's groups, then OBJECTIVE_HELP's keys grouped by the objectives that read them."""
    groups = {}
    for k, names in objective_readers().items():
        title = ('objective ' if len(names) == 1 else 'objectives ') + ', '.join(names)
        groups.setdefault(title, {})[k] = OBJECTIVE_HELP.get(k, '')
    return list(HELP.items()) + list(groups.items())


def get_lr(it, cfg):
    if not cfg['decay_lr']:
        # a constant lr keeps the path-star denoiser oscillating around its solution at the end
        # (0.978 <-> 0.996 between evaluations): a linear cooldown settles it
        start = cfg['lr_decay_iters'] * (1.0 - cfg['cooldown_frac'])
        if cfg['cooldown_frac'] <= 0 or it < start:
            return cfg['learning_rate']
        ratio = min(1.0, (it - start) / max(1.0, cfg['lr_decay_iters'] - start))
        return cfg['learning_rate'] + ratio * (cfg['min_lr'] - cfg['learning_rate'])
    if it < cfg['warmup_iters']:
        return cfg['learning_rate'] * (it + 1) / (cfg['warmup_iters'] + 1)
    if it > cfg['lr_decay_iters']:
        return cfg['min_lr']
    ratio = (it - cfg['warmup_iters']) / max(1, cfg['lr_decay_iters'] - cfg['warmup_iters'])
    coeff = 0.5 * (1.0 + math.cos(math.pi * ratio))
    return cfg['min_lr'] + coeff * (cfg['learning_rate'] - cfg['min_lr'])


def forward_kwargs(b):
    """The batch's masks, as GPT.forward / loss_terms take them."""
    return {k: b.get(k) for k in ('attention_mask', 'loss_mask', 'norm_mask')}


@torch.no_grad()
def estimate_loss(model, source, cfg, ctx, device):
    """Loss per split = CE sum / supervised weight over eval_iters batches (fixed seed, so
    every evaluation sees the same batches). Per-head losses when n_future > 1, then the
    objective's own metrics (source.evaluate)."""
    model.eval()
    out = {}
    for split in ('train', 'val'):
        gen = seeded(cfg['seed'], 'eval', split)
        sums = weights = 0.0
        for _ in range(cfg['eval_iters']):
            b = source.batch_on(device, split, cfg['batch_size'], gen)
            with ctx:
                s, w, _ = model.loss_terms(b['x'], b['y'], **forward_kwargs(b))
            sums, weights = sums + s.float(), weights + w
        head_losses = sums / weights.clamp(min=1e-8)
        out[split] = (head_losses * model.loss_head_weights).sum().item()  # as trained
        head = head_losses.tolist()
        if len(head) > 1:
            out.update({f'{split}_head{i + 1}': v for i, v in enumerate(head)})
    if hasattr(source, 'evaluate'):  # objective metrics (path accuracy, ...), in eval mode
        with ctx:  # bf16 on CUDA, as the losses
            out.update(source.evaluate(model, device))
    model.train()
    return out


# ------------------------------------------------------------------------ model and data
# Keys --init_from=resume does NOT take from the checkpoint: the run-control keys of this command
# (where the run is, that it resumes, eval_only) and the keys that describe the machine rather
# than the run: device and dtype are saved resolved from 'auto' (cuda:0, bfloat16), which the
# machine a run resumes on (another GPU type, a CPU for a look) may not have; backend and
# num_threads are per machine; attn_impl picks a kernel (same maths; 'flex' has no CPU backward).
# `compile` IS restored: it is the run's choice (e.g. off for a model that does not compile) and
# works on any device. So a run moved to another machine resumes; exact only on the same kind.
NOT_RESUMED = (
    'init_from',
    'out_dir',
    'eval_only',
    'device',
    'dtype',
    'backend',
    'num_threads',
    'attn_impl',
)


def resume_config(cfg, explicit, ckpt):
    """--init_from=resume: every key of the checkpoint's saved config that this command does not
    set (explicit) and that is not in NOT_RESUMED goes into cfg; keys today's DEFAULTS does not
    know are ignored. Returns the [(key, saved, default)] that changed cfg."""
    changed = []
    for k, v in (ckpt.get('config') or {}).items():
        if k in DEFAULTS and k not in explicit and k not in NOT_RESUMED and cfg[k] != v:
            changed.append((k, v, cfg[k]))
            cfg[k] = v
    return changed


def read_init_checkpoint(cfg, explicit):
    """The checkpoint of init_from (None for scratch): 'resume' = out_dir/ckpt.pt, or a
    checkpoint file or folder. Architecture keys not set explicitly are taken from it into cfg,
    before the batch source reads cfg (e.g. block_size), so a second-phase config need not
    repeat the base's architecture. 'resume' takes every saved training key (resume_config);
    ckpt['resumed'] lists what that changed."""
    if cfg['init_from'] == 'scratch':
        return None
    if cfg['init_from'] == 'resume':
        ckpt = checkpoint.load(cfg['out_dir'], flag='--init_from')
    else:  # a checkpoint, or GPT-2 weights (a name in the HF cache, a HF folder)
        ckpt = pretrained.load_any(cfg['init_from'], flag='--init_from')
    if cfg['init_from'] == 'resume':
        ckpt['resumed'] = resume_config(cfg, explicit, ckpt)
    for k in ARCH_KEYS:
        if k in cfg and k not in explicit and k != 'vocab_size' and k in ckpt['model_args']:
            cfg[k] = ckpt['model_args'][k]
    return ckpt


def build_model(cfg, explicit, source, ckpt=None):
    """The model to train: new (init_from=scratch) or the checkpoint's weights and architecture
    with this run's training-time keys (RUN_KEYS); see README 'init_from' for the rules."""
    run = {k: cfg[k] for k in RUN_KEYS}
    if cfg['init_from'] == 'scratch':
        arch = {k: cfg[k] for k in ARCH_KEYS + INIT_KEYS if k in cfg}
        config = GPTConfig(**arch, **run, vocab_size=source.vocab_size, causal=source.causal)
        with torch.device('cpu'):  # drawn on the host: a seed gives the same weights anywhere
            return GPT(config)
    if ckpt is None:
        ckpt = read_init_checkpoint(cfg, explicit)
    path, saved = ckpt['path'], ckpt['model_args']
    for k in ARCH_KEYS:
        if k in explicit and k in saved and cfg[k] != saved[k] and k != 'block_size':
            raise ConfigError(
                f"--{k}={cfg[k]} conflicts with {path} ({k}={saved[k]}): the "
                f"architecture comes from the checkpoint; drop the flag"
            )
    resume = cfg['init_from'] == 'resume'
    checkpoint.check_init(ckpt, cfg['objective'], resume)  # what it is: checkpoint.py
    checkpoint.check_vocab(
        ckpt,
        source.meta,
        f"dataset '{cfg['dataset']}'",
        source.vocab_size,
        exact=resume,
        fix="use the matching dataset, or prepare it with the base model's tokenizer",
        flag='--init_from',
    )
    model = checkpoint.build(ckpt, **run, causal=source.causal)
    model.resize_vocab(source.vocab_size)  # SFT: new special tokens get fresh rows
    if cfg['block_size'] < model.config.block_size:
        model.crop_block_size(cfg['block_size'])
    elif cfg['block_size'] > model.config.block_size:
        raise ConfigError(
            f"--block_size={cfg['block_size']} exceeds {path}'s block_size "
            f"{model.config.block_size}"
        )
    return model


def host_batches(source, cfg, iter_num, first, n, pin=False):
    """[(host batch, stats)] of micro-batches first .. first+n-1 of step iter_num. Micro-batch g
    is drawn from a generator seeded by (seed, iter, g), g global over ranks: a resumed run, or a
    DDP run with the same global batch, draws exactly the same data. pin: page-locked (CUDA), so
    the copies to the device do not block the host."""
    out = []
    for g in range(first, first + n):
        b, stats = source.draw('train', cfg['batch_size'], seeded(cfg['seed'], iter_num, g))
        out.append(({k: pin_memory(v) for k, v in b.items()} if pin else b, stats))
    return out


def device_batches(source, host, device):
    """The micro-batches of host_batches on device (the source's device stage, e.g. the drafts
    of a frozen denoiser), their stats observed as training batches."""
    micro = []
    for b, stats in host:
        b, more = source.device_batch(b, device)
        source.observe({**stats, **more})
        micro.append(b)
    return micro


def draw_batches(source, cfg, iter_num, first, n, device):
    """The micro-batches of step iter_num on device, built now (bench/throughput.py); train.py
    builds them a step ahead (Prefetcher)."""
    return device_batches(source, host_batches(source, cfg, iter_num, first, n), device)


class Prefetcher:
    """Builds the host batches of step n+1 in a background thread while the device runs step n
    (batch building then never waits on, nor delays, the GPU). A step's batches depend only on
    (seed, iter, micro-batch index) (host_batches) and host_batch changes no state, so they are
    bit for bit those of draw_batches, and resume stays exact (tests/test_prefetch.py)."""

    def __init__(self, source, cfg, first, n, pin):
        self.args = (source, cfg)
        self.first, self.n, self.pin, self.max_iters = first, n, pin, cfg['max_iters']
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix='batches')
        self.ahead = {}  # iter -> Future of its host batches

    def host(self, iter_num):
        """[(host batch, stats)] of step iter_num; starts building step iter_num + 1."""
        fut = self.ahead.pop(iter_num, None) or self.submit(iter_num)
        for other in self.ahead.values():  # built for another step (the loop only goes on by 1)
            other.cancel()
        self.ahead.clear()
        if iter_num + 1 < self.max_iters:
            self.ahead[iter_num + 1] = self.submit(iter_num + 1)
        return fut.result()  # an error while building (bad data) is raised here

    def submit(self, iter_num):
        return self.pool.submit(host_batches, *self.args, iter_num, self.first, self.n, self.pin)

    def close(self):
        self.pool.shutdown(wait=True, cancel_futures=True)


# ------------------------------------------------------------------------ one optimisation step
def train_step(model, optimizer, scaler, micro, cfg, ctx, dropout_seeds, ddp=False, world=1):
    """Forward/backward over the micro-batches of one step, then clip and step.

    The loss is normalised by the supervised weight of the whole step (all micro-batches, all
    ranks), counted before the forward passes. Returns (mean loss over the step's supervised
    tokens, this rank's share when ddp; gradient norm before clipping)."""
    raw = model.module if ddp else model
    raw = getattr(raw, '_orig_mod', raw)  # under torch.compile
    k, causal = raw.config.n_future, raw.config.causal
    norm = sum(
        supervised_weights(
            b['y'], b.get('loss_mask'), b.get('attention_mask'), k, causal, b.get('norm_mask')
        )
        for b in micro
    )
    if ddp:
        dist.all_reduce(norm)
        norm = norm / world  # DDP averages gradients over ranks
    loss_acc = torch.zeros((), device=norm.device)
    for m, b in enumerate(micro):
        torch.manual_seed(dropout_seeds[m])
        sync = (not ddp) or m == len(micro) - 1
        with nullcontext() if sync else model.no_sync(), ctx:
            _, loss = model(b['x'], b['y'], loss_norm=norm, **forward_kwargs(b))
        scaler.scale(loss).backward()
        loss_acc += loss.detach()
    scaler.unscale_(optimizer)
    max_norm = cfg['grad_clip'] if cfg['grad_clip'] != 0.0 else float('inf')  # inf: measure only
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    return loss_acc, grad_norm


# ------------------------------------------------------------------------ the run
def setup_distributed(cfg):
    """(ddp, rank, world, local_rank); sets cfg['device'] ('auto' -> cuda if available)."""
    cfg['device'] = resolve_device(cfg['device'])
    if int(os.environ.get('RANK', -1)) == -1:
        return False, 0, 1, 0
    rank, local_rank, world = (int(os.environ[k]) for k in ('RANK', 'LOCAL_RANK', 'WORLD_SIZE'))
    dist.init_process_group(backend='gloo' if cfg['device'] == 'cpu' else cfg['backend'])
    if cfg['device'].startswith('cuda'):
        cfg['device'] = f'cuda:{local_rank}'
        torch.cuda.set_device(cfg['device'])
    if cfg['gradient_accumulation_steps'] % world:
        raise ConfigError(
            f"--gradient_accumulation_steps={cfg['gradient_accumulation_steps']} "
            f"must be divisible by the number of processes ({world})"
        )
    return True, rank, world, local_rank


def autocast_context(cfg, device_type):
    """The forward's autocast context; resolves dtype 'auto' (bf16 on CUDA when supported)."""
    cfg['dtype'] = resolve_dtype(cfg['dtype'], device_type)
    return autocast(device_type, cfg['dtype'])


def save_checkpoint(path, raw_model, optimizer, source, cfg, iter_num, state):
    """checkpoint.save with the run's state: best val loss and the float16 GradScaler."""
    best, scaler = state['best_val_loss'], state.get('scaler')
    checkpoint.save(path, raw_model, optimizer, cfg, source.meta, iter_num, best, scaler)


def evaluate_and_save(raw_model, optimizer, source, cfg, ctx, device, iter_num, it_start, state):
    """Evaluate, log, and save out_dir/ckpt.pt (not at the step a run starts from)."""
    losses = estimate_loss(raw_model, source, cfg, ctx, device)
    ckpt_path = os.path.join(cfg['out_dir'], 'ckpt.pt')
    if not all(math.isfinite(v) for v in losses.values() if isinstance(v, float)):
        sys.exit(
            f"step {iter_num}: evaluation loss is not finite ({losses}); training "
            f"stopped, the last good checkpoint is {ckpt_path}. Lower learning_rate?"
        )
    print(
        f"step {iter_num}: "
        + ", ".join(
            f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in losses.items()
        )
    )
    if cfg['wandb_log']:
        state['wandb'].log({'iter': iter_num, **{f'eval/{k}': v for k, v in losses.items()}})
    if state.get('metrics'):
        state['metrics'].write({'kind': 'eval', 'iter': iter_num, **losses})
    if losses['val'] < state['best_val_loss'] or cfg['always_save_checkpoint']:
        state['best_val_loss'] = min(state['best_val_loss'], losses['val'])
    if iter_num > it_start and (
        losses['val'] <= state['best_val_loss'] or cfg['always_save_checkpoint']
    ):
        save_checkpoint(ckpt_path, raw_model, optimizer, source, cfg, iter_num, state)
        print(f"saved checkpoint to {ckpt_path}")
        tag = getattr(source, 'run_tag', '')
        if tag:  # a named copy per evaluation; ckpt.pt stays the one to resume from
            named = os.path.join(cfg['out_dir'], f'ckpt_{tag}_{iter_num}.pt')
            atomic_write(named, lambda tmp: shutil.copy(ckpt_path, tmp))  # content and 0644
    return losses


def check_config(cfg):
    """The trainer's keys, checked once before anything is built: a value or a combination that
    cannot mean anything is a ConfigError naming the flag and the fix (objective-specific keys
    are checked by their batch source)."""

    def bad(key, why):
        raise ConfigError(f"--{key}={cfg[key]}: {why}")

    def at_least(low, *keys):
        for key in keys:
            if cfg[key] < low:
                bad(key, f"must be >= {low}")

    at_least(1, 'eval_interval', 'log_interval', 'eval_iters', 'batch_size', 'block_size')
    at_least(1, 'gradient_accumulation_steps', 'n_head', 'n_embd', 'n_future')
    at_least(0, 'max_iters', 'n_layer', 'warmup_iters', 'lr_decay_iters', 'num_threads')
    at_least(0, 'learning_rate', 'min_lr', 'weight_decay')
    if cfg['n_embd'] % cfg['n_head']:
        bad('n_embd', f"must be divisible by --n_head={cfg['n_head']} (heads split n_embd)")
    if not 0.0 <= cfg['dropout'] < 1.0:
        bad('dropout', "must be in [0, 1)")
    for key in ('beta1', 'beta2'):
        if not 0.0 <= cfg[key] < 1.0:
            bad(key, "AdamW's betas must be in [0, 1)")
    if cfg['grad_clip'] < 0:
        bad('grad_clip', "must be >= 0 (0 = no clipping, only the norm is measured)")
    if cfg['linear_init'] not in LINEAR_INITS:
        bad('linear_init', f"choose one of {', '.join(LINEAR_INITS)}")
    if cfg['pos_emb'] not in POS_EMBS:
        bad('pos_emb', f"choose one of {', '.join(POS_EMBS)}")
    if cfg['attn_impl'] not in ('auto', 'sdpa', 'flex'):
        bad('attn_impl', "choose auto, sdpa or flex")
    check_device_keys(cfg)
    hw = cfg['future_head_weights']
    if hw is not None and (
        not isinstance(hw, (list, tuple))
        or len(hw) != cfg['n_future']
        or not all(isinstance(w, (int, float)) and w >= 0 for w in hw)
        or sum(hw) <= 0
    ):
        bad(
            'future_head_weights',
            f"needs {cfg['n_future']} weights >= 0 (one per head, --n_future="
            f"{cfg['n_future']}) with a positive sum, e.g. [1.0, 0.5]",
        )
    # combinations that cannot mean anything
    source = batches.OBJECTIVES.get(cfg['objective'])  # an unknown one: batches.make_source
    if cfg['n_future'] > 1 and source is not None and not source.causal:
        bad(
            'n_future',
            f"extra heads predict the tokens after t, which --objective={cfg['objective']} "
            f"(bidirectional) already sees; use --n_future=1",
        )
    if cfg['pathstar_teacherless'] and cfg['objective'] != 'pathstar':
        bad(
            'pathstar_teacherless',
            f"only --objective=pathstar reads it (--objective={cfg['objective']} would ignore "
            f"it); drop the flag",
        )
    if not 0.0 <= cfg['cooldown_frac'] <= 1.0:
        bad('cooldown_frac', 'is a fraction of lr_decay_iters: use 0 <= cooldown_frac <= 1')
    if cfg['decay_lr'] and cfg['cooldown_frac'] > 0:  # the cosine would silently win
        bad(
            'cooldown_frac',
            'is the schedule of --decay_lr=False (the cosine decays already): '
            'set --decay_lr=False or drop it',
        )
    if (cfg['decay_lr'] or cfg['cooldown_frac'] > 0) and cfg['min_lr'] > cfg['learning_rate']:
        bad(
            'min_lr',
            f"above --learning_rate={cfg['learning_rate']!r}: the decay would raise the "
            f"learning rate; use min_lr <= learning_rate",
        )
    if (
        cfg['decay_lr']
        and cfg['lr_decay_iters'] < cfg['warmup_iters'] < cfg['max_iters']
        and cfg['min_lr'] != cfg['learning_rate']
    ):
        bad(
            'lr_decay_iters',
            f"below --warmup_iters={cfg['warmup_iters']}: the learning rate would jump from "
            f"learning_rate to min_lr when warmup ends; use lr_decay_iters >= warmup_iters "
            f"(e.g. = max_iters)",
        )


def check_objective_flags(cfg, flags):
    """A command-line flag (`flags`: its keys) of an objective key that this run's objective
    does not read would be silently ignored: a ConfigError naming the objectives that read it.
    Config files are not checked: a file may set keys of several objectives (a shared base)."""
    readers = objective_readers()
    for key in sorted(flags & set(readers) - batches.OBJECTIVES[cfg['objective']].keys()):
        names = readers[key]
        who = names[0] if len(names) == 1 else ', '.join(names[:-1]) + ' or ' + names[-1]
        raise ConfigError(
            f"--{key}={cfg[key]}: only --objective={who} reads it (--objective="
            f"{cfg['objective']} would ignore it); drop the flag"
        )


class Metrics:
    """out_dir/metrics.jsonl: one JSON object per log line (kind 'train') and per evaluation
    (kind 'eval'), each appended and flushed at once: a killed run keeps every row written. A
    resumed run appends: iterations run again after the last checkpoint appear twice, and
    readers (bench/plot_run.py) keep the last row of an iteration."""

    def __init__(self, out_dir):
        self.path = os.path.join(out_dir, 'metrics.jsonl')
        try:
            self.f = open(self.path, 'a', encoding='utf-8')
            if self.f.tell():  # a row cut by a kill must not swallow the next one
                with open(self.path, 'rb') as f:
                    f.seek(-1, os.SEEK_END)
                    if f.read(1) != b'\n':
                        self.f.write('\n')
        except OSError as e:
            raise write_error(self.path, e, 'its earlier rows are unchanged') from None

    def write(self, row):
        try:
            self.f.write(json.dumps({**row, 'time': round(time.time(), 3)}) + '\n')
            self.f.flush()
        except OSError as e:  # a full disk: the rows before this one are whole
            raise write_error(self.path, e, 'its earlier rows are unchanged') from None

    def close(self):
        try:
            self.f.close()
        except OSError:  # what a failed write left buffered: already reported
            pass


class RunGuard:
    """What main() ends however the run ends: the SIGTERM/SIGINT handlers, metrics.jsonl, the
    wandb run. A first SIGTERM (what clusters send before preemption) or Ctrl-C only records the
    signal; the loop finishes its step and calls save_and_exit. A second one exits at once,
    without saving (status 128 + signal; an interrupted checkpoint write leaves the previous
    ckpt.pt, see utils.atomic_write)."""

    def __init__(self):
        self.signum, self.previous, self.metrics, self.wandb = 0, {}, None, None
        self.lock = None  # out_dir's lock file (checkpoint.lock_out_dir), released last
        self.verbose, self.control, self.prefetcher = True, None, None

    def catch_signals(self, verbose):
        if threading.current_thread() is not threading.main_thread():
            return  # handlers can only be set from the main thread: default behaviour
        self.verbose = verbose
        for s in (signal.SIGTERM, signal.SIGINT):
            self.previous[s] = signal.signal(s, self.handle)

    def handle(self, signum, frame):
        if self.signum:
            raise SystemExit(128 + signum)
        self.signum = signum
        if self.verbose:  # os.write: print() here could re-enter a print the signal interrupted
            os.write(
                2,
                f"\n{signal.Signals(signum).name}: finishing this step, then saving a checkpoint "
                f"(send it again to stop at once, without saving)\n".encode(),
            )

    def stop_signal(self, ddp):
        """The signal to stop on (0: go on). Under DDP every rank must stop after the same
        step (the next step's collectives would hang): the ranks agree on the largest, over a
        CPU (gloo) group, so asking costs a host round trip but never waits for the GPU."""
        if not ddp:
            return self.signum
        if self.control is None:  # made once, by every rank (a collective call)
            gloo = dist.get_backend() == 'gloo'
            self.control = dist.group.WORLD if gloo else dist.new_group(backend='gloo')
        t = torch.tensor(self.signum, device='cpu')
        dist.all_reduce(t, op=dist.ReduceOp.MAX, group=self.control)
        return int(t)

    def close(self, exit_code):
        if self.prefetcher is not None:
            self.prefetcher.close()
        for s, handler in self.previous.items():
            signal.signal(s, handler)
        self.previous = {}
        if self.metrics is not None:
            self.metrics.close()
        if self.wandb is not None:
            self.wandb.finish(exit_code=exit_code)
        if self.lock is not None:
            self.lock.close()  # releases the flock
            self.lock = None


def save_and_exit(raw_model, optimizer, source, cfg, iter_num, state, signum, master, ddp, world):
    """After SIGTERM/SIGINT: rank 0 saves out_dir/ckpt.pt as the periodic checkpoint would be
    saved before step iter_num (the next step to run; same contents, RNG state included), prints
    the command that resumes it, and every rank exits with status 128 + signum (the shell's
    convention for "ended by a signal": 143 for SIGTERM, 130 for Ctrl-C).

    DDP: torchrun passes SIGTERM (and a terminal's Ctrl-C) to every rank; the ranks agree to stop
    after the same step (RunGuard.stop_signal), only rank 0 writes. torchrun itself then exits
    non-zero with its own SignalException traceback."""
    name = signal.Signals(signum).name
    launcher = f'torchrun --standalone --nproc_per_node={world}' if ddp else 'python'
    if master:
        ckpt_path = os.path.join(cfg['out_dir'], 'ckpt.pt')
        save_checkpoint(ckpt_path, raw_model, optimizer, source, cfg, iter_num, state)
        print(
            f"{name}: stopped before iter {iter_num}, saved checkpoint to {ckpt_path}; "
            f"resume with:\n{launcher} train.py --init_from=resume "
            f"--out_dir={shlex.quote(cfg['out_dir'])}",
            flush=True,
        )
    if ddp:
        dist.barrier()
        dist.destroy_process_group()
    raise SystemExit(128 + signum)


def main(argv=None):
    """Train (see run); whatever way it ends, the signal handlers are restored, metrics.jsonl
    closed and a wandb run finished."""
    guard, code = RunGuard(), 1
    try:
        history = run(sys.argv[1:] if argv is None else argv, guard)
        code = 0
        return history
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
        raise
    finally:
        guard.close(code)


def run(argv, guard):
    """The run of train.py's arguments `argv`: {'train': [{iter, loss, grad_norm}], 'eval':
    [{iter, train, val, ...}]}. `guard` (RunGuard) holds what main() closes."""
    exit_if_help(argv, USAGE, DEFAULTS, help_groups())
    cfg, explicit = load_config(DEFAULTS, argv)
    ckpt = read_init_checkpoint(cfg, explicit)  # may set keys of cfg: before anything reads them
    settled = set(explicit)  # what the dataset may not decide: flags, and what the ckpt fixed
    if ckpt is not None:
        settled |= {k for k in ARCH_KEYS if k in ckpt['model_args']}
        if cfg['init_from'] == 'resume':
            settled |= set(ckpt.get('config') or {})
    for line in batches.resolve_data(cfg, settled):  # objective, block_size: from the dataset
        if int(os.environ.get('RANK', 0)) == 0:
            print(line)
    check_config(cfg)
    check_objective_flags(cfg, flag_keys(argv))
    ddp, rank, world, local_rank = setup_distributed(cfg)
    master, accum, device = rank == 0, cfg['gradient_accumulation_steps'] // world, cfg['device']
    device_type = 'cuda' if 'cuda' in device else 'cpu'
    if cfg['num_threads'] > 0:
        torch.set_num_threads(cfg['num_threads'])
    ctx = autocast_context(cfg, device_type)
    tokens_per_iter = cfg['gradient_accumulation_steps'] * cfg['batch_size'] * cfg['block_size']
    if master:
        if not cfg['eval_only']:  # one writer per out_dir; eval_only writes nothing
            guard.lock = checkpoint.lock_out_dir(cfg['out_dir'])
        print(
            f"tokens per iteration: {tokens_per_iter:,} | objective {cfg['objective']} | "
            f"dataset {cfg['dataset']} | device {device} {cfg['dtype']}"
        )
        if ckpt is not None and 'resumed' in ckpt:
            used = ', '.join(f"{k}={v!r} (default {d!r})" for k, v, d in ckpt['resumed'])
            print(
                f"resume: from {ckpt['path']} at iter {ckpt['iter_num']}; saved settings used: "
                + (used or 'none differ from the defaults')
            )

    source = batches.make_source(cfg, seed=cfg['seed'])
    torch.manual_seed(cfg['seed'])  # same init on every rank
    raw_model = build_model(cfg, explicit, source, ckpt).to(device)
    scaler = torch.amp.GradScaler(device_type, enabled=(cfg['dtype'] == 'float16'))
    optimizer = raw_model.configure_optimizers(
        cfg['weight_decay'], cfg['learning_rate'], (cfg['beta1'], cfg['beta2']), device_type
    )
    iter_num, state = 0, {'best_val_loss': 1e9, 'scaler': scaler}
    if ckpt is not None and cfg['init_from'] == 'resume':
        optimizer.load_state_dict(ckpt['optimizer'])
        if ckpt.get('scaler'):  # float16: the loss scale goes on (ignored by a disabled scaler)
            scaler.load_state_dict(ckpt['scaler'])
        iter_num, state['best_val_loss'] = ckpt['iter_num'], ckpt['best_val_loss']
        torch.set_rng_state(ckpt['torch_rng'])
    ckpt = None  # free it
    model = torch.compile(raw_model) if cfg['compile'] else raw_model
    if ddp:
        model = DDP(model, device_ids=[local_rank] if device_type == 'cuda' else None)
    if cfg['wandb_log'] and master:
        state['wandb'] = guard.wandb = start_wandb(cfg, getattr(source, 'run_tag', ''))
    if master and not cfg['eval_only']:  # eval_only writes nothing
        state['metrics'] = guard.metrics = Metrics(cfg['out_dir'])
    if not cfg['eval_only']:  # nothing to save: Ctrl-C stops an evaluation at once
        guard.catch_signals(verbose=master)

    history = {'train': [], 'eval': []}
    first = rank * accum  # this rank's micro-batches of a step: global indices
    prefetch = guard.prefetcher = Prefetcher(source, cfg, first, accum, device_type == 'cuda')
    timer, t_start, it_start = StepTimer(), time.time(), iter_num
    while True:
        lr = get_lr(iter_num, cfg)
        for group in optimizer.param_groups:
            group['lr'] = lr
        last = iter_num >= cfg['max_iters']
        if (iter_num % cfg['eval_interval'] == 0 or last or cfg['eval_only']) and master:
            with timer.paused():  # not a training step's time (ms/it, MFU)
                losses = evaluate_and_save(
                    raw_model, optimizer, source, cfg, ctx, device, iter_num, it_start, state
                )
            history['eval'].append({'iter': iter_num, **losses})
        if last or cfg['eval_only']:
            break  # exactly max_iters optimisation steps, evaluated (and saved) after the last

        # built during the previous step; the device stage (copies, drafts) is queued here
        micro = device_batches(source, prefetch.host(iter_num), device)
        seeds = [mix_seed(cfg['seed'], iter_num, g, 'dropout') for g in range(first, first + accum)]
        loss, grad_norm = train_step(model, optimizer, scaler, micro, cfg, ctx, seeds, ddp, world)
        timer.steps += 1

        if iter_num % cfg['log_interval'] == 0:  # the only host syncs of a step: .item()
            if ddp:  # the true step loss: every rank's share of the global mean
                dist.all_reduce(loss)
                loss /= world
            lossf = loss.item()
            if not math.isfinite(lossf):
                sys.exit(
                    f"step {iter_num}: training loss is {lossf}; stopped without saving, the "
                    f"last good checkpoint is {os.path.join(cfg['out_dir'], 'ckpt.pt')}. "
                    f"Lower learning_rate or check the data."
                )
            done = iter_num + 1 - it_start
            rate = done / max(time.time() - t_start, 1e-9)
            eta = (cfg['max_iters'] - iter_num - 1) / max(rate, 1e-9)
            gnorm = grad_norm.item()
            dt, warm = timer.lap()  # seconds per step since the last log line (synced by .item())
            msg = (
                f"iter {iter_num}/{cfg['max_iters']}: loss {lossf:.4f}, grad_norm {gnorm:.4f}, "
                f"lr {lr:.2e}, "
                f"{dt * 1000:.1f}ms/it, {rate:.2f} it/s, ETA {eta / 60:.1f} min"
            )
            mfu = step_mfu(raw_model, tokens_per_iter / world, dt, device) if warm else None
            if mfu is not None:  # per device; not over the first steps (compilation)
                msg += f", mfu {100 * mfu:.1f}%"
            diag = source.diagnostics()
            if master:
                print(msg + ''.join(f", {k} {v:.4g}" for k, v in diag.items()))
                if cfg['wandb_log']:
                    state['wandb'].log(
                        {
                            'iter': iter_num,
                            'train/loss': lossf,
                            'train/grad_norm': gnorm,
                            'lr': lr,
                            **{f'diag/{k}': v for k, v in diag.items()},
                        }
                    )
                if state.get('metrics'):
                    row = {'kind': 'train', 'iter': iter_num, 'loss': lossf, 'grad_norm': gnorm}
                    row.update(lr=lr, dt_ms=dt * 1000, **({'mfu': mfu} if mfu else {}))
                    state['metrics'].write({**row, **diag})
            history['train'].append({'iter': iter_num, 'loss': lossf, 'grad_norm': gnorm})
        iter_num += 1
        signum = guard.stop_signal(ddp)
        if signum:
            save_and_exit(
                raw_model, optimizer, source, cfg, iter_num, state, signum, master, ddp, world
            )
    if ddp:  # wait for rank 0's final eval/checkpoint: tearing gloo down under a busy peer aborts
        dist.barrier()
        dist.destroy_process_group()
    return history


class StepTimer:
    """Seconds per training step between log lines, without evaluation (paused()) and without
    the run's first window (compilation, warm-up: lap() says it is not warm). On CUDA steps run
    asynchronously: the .item() of a log line waits for them, so a window's time is right."""

    def __init__(self):
        self.t0, self.steps, self.skipped, self.laps = time.perf_counter(), 0, 0.0, 0

    @contextmanager
    def paused(self):
        t = time.perf_counter()
        try:
            yield
        finally:
            self.skipped += time.perf_counter() - t

    def lap(self):
        """(seconds per step of the window just ended, warm: not the run's first window)."""
        now = time.perf_counter()
        dt = (now - self.t0 - self.skipped) / max(self.steps, 1)
        self.t0, self.steps, self.skipped, self.laps = now, 0, 0.0, self.laps + 1
        return dt, self.laps > 1


# bf16 dense peak FLOP/s of one device (datasheets), by a substring of its CUDA name
PEAK_FLOPS = {'H200': 989e12, 'H100': 989e12, 'A100': 312e12, 'L40S': 362e12, 'A10G': 125e12}


def step_mfu(model, tokens_per_device, dt, device):
    """Model FLOPs utilisation of this process's device (None: its peak is unknown, e.g. a CPU).
    tokens_per_device: a step's tokens over all ranks divided by the world size (each device
    does its share of the step; all the tokens against one device's peak would read 8x high on
    8 GPUs)."""
    if torch.device(device).type != 'cuda':
        return None
    name = torch.cuda.get_device_name(device)
    peak = next((v for k, v in PEAK_FLOPS.items() if k in name), None)
    return None if peak is None else model.estimate_mfu(tokens_per_device, dt, peak)


def start_wandb(cfg, tag):
    try:
        import wandb  # optional: only with --wandb_log=True
    except ImportError:
        raise ConfigError(
            "--wandb_log=True needs wandb: `pip install wandb` (WANDB_MODE=offline "
            "logs without an account)"
        ) from None
    wandb.init(
        project=cfg['wandb_project'],
        config=cfg,
        name=cfg['wandb_run_name'] + (f'_{tag}' if tag else ''),
    )
    return wandb


if __name__ == '__main__':
    run_cli(main)
