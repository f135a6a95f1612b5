"""
Train one GPT on any objective of batches.py (after nanoGPT's train.py).

single process:  python train.py config/train_shakespeare_char.py --device=cpu --compile=False
DDP:             torchrun --standalone --nproc_per_node=2 train.py config/... (gloo on CPU)

The loss of a step is the mean over the supervised tokens of the whole accumulated batch
(all micro-batches, all ranks): the supervised weight is counted before the forward passes
and every micro-batch loss is its weighted CE sum divided by that global count.
"""
import hashlib
import math
import os
import shutil
import sys
import time
from contextlib import nullcontext

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

import batches
from configurator import ConfigError, load_config
from model import ARCH_KEYS, GPT, INIT_KEYS, GPTConfig, supervised_weights
from utils import DataError, atomic_write, run_cli, vocab_compatible

DEFAULTS = dict(
    # I/O
    out_dir='out', eval_interval=2000, log_interval=1, eval_iters=200, eval_only=False,
    always_save_checkpoint=True, init_from='scratch',  # 'scratch' | 'resume' | path to a ckpt
    wandb_log=False, wandb_project='nanomask', wandb_run_name='run',
    # data: data_root/dataset, read by the batch source of `objective`
    data_root='data', dataset='shakespeare_char', objective='next_token',
    gradient_accumulation_steps=1, batch_size=12, block_size=1024,
    # model
    n_layer=12, n_head=12, n_embd=768, dropout=0.0, bias=False, n_future=1,
    tie_embeddings=True, emb_init_std=0.02, linear_init='gpt2',  # model.GPTConfig
    future_head_weights=None,  # e.g. [1.0, 0.5]: weights of the n_future heads' losses
    # AdamW and a warmup + cosine schedule
    learning_rate=6e-4, max_iters=600000, weight_decay=1e-1, beta1=0.9, beta2=0.95,
    grad_clip=1.0, decay_lr=True, warmup_iters=2000, lr_decay_iters=600000, min_lr=6e-5,
    # system
    backend='nccl', device='auto', dtype='auto', compile=True, seed=1337, num_threads=0,
    attn_impl='auto',  # 'auto' | 'sdpa' | 'flex': kernel for masked batches (model.select_attention)
    **batches.all_defaults(),
)


def mix_seed(*parts):
    """A 63-bit seed from ints and strings, the same in every process (Python's hash() of a
    str is randomised per process, which would break resume after a restart)."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, 'little') >> 1


def get_lr(it, cfg):
    if not cfg['decay_lr']:
        return cfg['learning_rate']
    if it < cfg['warmup_iters']:
        return cfg['learning_rate'] * (it + 1) / (cfg['warmup_iters'] + 1)
    if it > cfg['lr_decay_iters']:
        return cfg['min_lr']
    ratio = (it - cfg['warmup_iters']) / max(1, cfg['lr_decay_iters'] - cfg['warmup_iters'])
    coeff = 0.5 * (1.0 + math.cos(math.pi * ratio))
    return cfg['min_lr'] + coeff * (cfg['learning_rate'] - cfg['min_lr'])


def forward_kwargs(b):
    return dict(attention_mask=b.get('attention_mask'), loss_mask=b.get('loss_mask'))


@torch.no_grad()
def estimate_loss(model, source, cfg, ctx, device):
    """Loss per split = CE sum / supervised weight over eval_iters batches (fixed seed, so
    every evaluation sees the same batches). Per-head losses when n_future > 1, then the
    objective's own metrics (source.evaluate)."""
    model.eval()
    out = {}
    for split in ('train', 'val'):
        gen = torch.Generator().manual_seed(mix_seed(cfg['seed'], 'eval', split))
        sums = weights = 0.0
        for _ in range(cfg['eval_iters']):
            b = batches.to_device(source.get_batch(split, cfg['batch_size'], gen=gen), device)
            with ctx:
                s, w, _ = model.loss_terms(b['x'], b['y'], **forward_kwargs(b))
            sums, weights = sums + s.float(), weights + w
        head_losses = sums / weights.clamp(min=1e-8)
        out[split] = (head_losses * model.head_weights(head_losses)).sum().item()  # as trained
        head = head_losses.tolist()
        if len(head) > 1:
            out.update({f'{split}_head{i + 1}': v for i, v in enumerate(head)})
    if hasattr(source, 'evaluate'):  # objective metrics (path accuracy, ...), in eval mode
        out.update(source.evaluate(model, cfg, device))
    model.train()
    return out


def load_init_checkpoint(cfg, explicit):
    """The checkpoint of init_from (None for scratch). Architecture keys not set explicitly
    are taken from it into cfg, before the batch source reads cfg (e.g. block_size), so a
    second-phase config need not repeat the base's architecture."""
    if cfg['init_from'] == 'scratch':
        return None
    path = (os.path.join(cfg['out_dir'], 'ckpt.pt') if cfg['init_from'] == 'resume'
            else cfg['init_from'])
    if not os.path.isfile(path):
        raise DataError(f"--init_from={cfg['init_from']}: checkpoint {path} not found")
    ckpt = torch.load(path, map_location='cpu', weights_only=False)
    ckpt['path'] = path
    for k in ARCH_KEYS:
        if k in cfg and k not in explicit and k != 'vocab_size' and k in ckpt['model_args']:
            cfg[k] = ckpt['model_args'][k]
    return ckpt


def build_model(cfg, explicit, source, device, ckpt=None):
    """Returns (model, checkpoint or None). See README 'init_from' for the rules."""
    arch = {k: cfg[k] for k in ARCH_KEYS + INIT_KEYS if k in cfg}
    arch.update(vocab_size=source.vocab_size, dropout=cfg['dropout'], causal=source.causal)
    if cfg['init_from'] == 'scratch':
        return GPT(GPTConfig(**arch)), None
    if ckpt is None:
        ckpt = load_init_checkpoint(cfg, explicit)
    path, saved = ckpt['path'], ckpt['model_args']
    for k in ARCH_KEYS:
        if k in explicit and k in saved and cfg[k] != saved[k] and k != 'block_size':
            raise ConfigError(f"--{k}={cfg[k]} conflicts with {path} ({k}={saved[k]}): the "
                              f"architecture comes from the checkpoint; drop the flag")
    if not vocab_compatible(ckpt.get('meta'), source.meta):
        raise DataError(f"{path} was trained on a different vocabulary than dataset "
                        f"'{cfg['dataset']}': prepare the data with the base model's tokenizer")
    if saved['vocab_size'] > source.vocab_size or (cfg['init_from'] == 'resume'
                                                   and saved['vocab_size'] != source.vocab_size):
        raise DataError(f"{path} has vocab_size {saved['vocab_size']} but dataset "
                        f"'{cfg['dataset']}' has {source.vocab_size}: use the matching dataset")
    model_cfg = GPTConfig(**{**saved, 'dropout': cfg['dropout'], 'causal': source.causal})
    model = GPT(model_cfg)
    state = {k.removeprefix('_orig_mod.'): v for k, v in ckpt['model'].items()}
    model.load_state_dict(state)
    model.resize_vocab(source.vocab_size)  # SFT: new special tokens get fresh rows
    if cfg['block_size'] < model.config.block_size:
        model.crop_block_size(cfg['block_size'])
    elif cfg['block_size'] > model.config.block_size:
        raise ConfigError(f"--block_size={cfg['block_size']} exceeds {path}'s block_size "
                          f"{model.config.block_size}")
    return model, ckpt


def save_checkpoint(path, raw_model, optimizer, cfg, source, iter_num, best_val_loss):
    ckpt = {'model': raw_model.state_dict(), 'optimizer': optimizer.state_dict(),
            'model_args': vars(raw_model.config).copy(), 'config': cfg, 'iter_num': iter_num,
            'best_val_loss': best_val_loss, 'meta': source.meta,
            'objective': cfg['objective'], 'torch_rng': torch.get_rng_state()}
    atomic_write(path, lambda tmp: torch.save(ckpt, tmp))


def main(argv=None):
    cfg, explicit = load_config(DEFAULTS, sys.argv[1:] if argv is None else argv)
    ddp = int(os.environ.get('RANK', -1)) != -1
    if cfg['device'] == 'auto':
        cfg['device'] = 'cuda' if torch.cuda.is_available() else 'cpu'
    if ddp:
        rank, local_rank, world = (int(os.environ[k]) for k in ('RANK', 'LOCAL_RANK', 'WORLD_SIZE'))
        backend = 'gloo' if cfg['device'] == 'cpu' else cfg['backend']
        dist.init_process_group(backend=backend)
        if cfg['device'].startswith('cuda'):
            cfg['device'] = f'cuda:{local_rank}'
            torch.cuda.set_device(cfg['device'])
        if cfg['gradient_accumulation_steps'] % world:
            raise ConfigError(f"--gradient_accumulation_steps={cfg['gradient_accumulation_steps']} "
                              f"must be divisible by the number of processes ({world})")
    else:
        rank, world = 0, 1
    master = rank == 0
    accum = cfg['gradient_accumulation_steps'] // world
    device = cfg['device']
    device_type = 'cuda' if 'cuda' in device else 'cpu'
    if cfg['num_threads'] > 0:
        torch.set_num_threads(cfg['num_threads'])
    if cfg['dtype'] == 'auto':
        cfg['dtype'] = ('bfloat16' if device_type == 'cuda' and torch.cuda.is_bf16_supported()
                        else 'float32')
    ptdtype = {'float32': torch.float32, 'bfloat16': torch.bfloat16, 'float16': torch.float16}[cfg['dtype']]
    ctx = nullcontext() if device_type == 'cpu' else torch.autocast(device_type, dtype=ptdtype)
    if device_type == 'cuda':
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    ckpt = load_init_checkpoint(cfg, explicit)  # may set architecture keys of cfg
    tokens_per_iter = cfg['gradient_accumulation_steps'] * cfg['batch_size'] * cfg['block_size']
    if master:
        os.makedirs(cfg['out_dir'], exist_ok=True)
        print(f"tokens per iteration: {tokens_per_iter:,} | objective {cfg['objective']} | "
              f"dataset {cfg['dataset']} | device {device} {cfg['dtype']}")

    source = batches.make_source(cfg, seed=cfg['seed'])
    torch.manual_seed(cfg['seed'])  # same init on every rank
    model, ckpt = build_model(cfg, explicit, source, device, ckpt)
    model.future_head_weights = cfg['future_head_weights']
    model.attn_impl = cfg['attn_impl']
    model.to(device)
    iter_num, best_val_loss = 0, 1e9
    scaler = torch.amp.GradScaler(device_type, enabled=(cfg['dtype'] == 'float16'))
    optimizer = model.configure_optimizers(cfg['weight_decay'], cfg['learning_rate'],
                                           (cfg['beta1'], cfg['beta2']), device_type)
    if ckpt is not None and cfg['init_from'] == 'resume':
        optimizer.load_state_dict(ckpt['optimizer'])
        iter_num, best_val_loss = ckpt['iter_num'], ckpt['best_val_loss']
        torch.set_rng_state(ckpt['torch_rng'])
    ckpt = None
    raw_model = model
    if cfg['compile']:
        model = torch.compile(model)
    if ddp:
        model = DDP(model, device_ids=[local_rank] if device_type == 'cuda' else None)
    tag = getattr(source, 'run_tag', '')  # e.g. 'remasking_all_positions': names ckpts and wandb runs
    if cfg['wandb_log'] and master:
        try:
            import wandb
        except ImportError:
            raise ConfigError("--wandb_log=True needs wandb: `pip install wandb` (WANDB_MODE=offline "
                              "logs without an account)") from None
        wandb.init(project=cfg['wandb_project'], config=cfg,
                   name=cfg['wandb_run_name'] + (f'_{tag}' if tag else ''))
    k = raw_model.config.n_future
    ckpt_path = os.path.join(cfg['out_dir'], 'ckpt.pt')
    history = {'train': [], 'eval': []}
    t_start, it_start = time.time(), iter_num
    t0 = time.time()
    while True:
        lr = get_lr(iter_num, cfg)
        for group in optimizer.param_groups:
            group['lr'] = lr
        last = iter_num >= cfg['max_iters']
        if (iter_num % cfg['eval_interval'] == 0 or last) and master:
            losses = estimate_loss(raw_model, source, cfg, ctx, device)
            if not all(math.isfinite(v) for v in losses.values() if isinstance(v, float)):
                sys.exit(f"step {iter_num}: evaluation loss is not finite ({losses}); training "
                         f"stopped, the last good checkpoint is {ckpt_path}. Lower learning_rate?")
            print(f"step {iter_num}: " + ", ".join(f"{k_}={v:.4f}" if isinstance(v, float)
                                                   else f"{k_}={v}" for k_, v in losses.items()))
            history['eval'].append({'iter': iter_num, **losses})
            if cfg['wandb_log']:
                wandb.log({'iter': iter_num, 'lr': lr, **{f'eval/{k_}': v for k_, v in losses.items()}})
            if losses['val'] < best_val_loss or cfg['always_save_checkpoint']:
                best_val_loss = min(best_val_loss, losses['val'])
                if iter_num > it_start:  # not at 0, nor again right after a resume
                    save_checkpoint(ckpt_path, raw_model, optimizer, cfg, source, iter_num, best_val_loss)
                    print(f"saved checkpoint to {ckpt_path}")
                    if tag:  # a named copy per evaluation; ckpt.pt stays the one to resume from
                        named = os.path.join(cfg['out_dir'], f'ckpt_{tag}_{iter_num}.pt')
                        atomic_write(named, lambda tmp: shutil.copyfile(ckpt_path, tmp))
        if last or cfg['eval_only']:
            break  # exactly max_iters optimisation steps, evaluated (and saved) after the last

        # one optimisation step: draw all micro-batches first, so the loss can be normalised
        # by the supervised weight of the whole step (all micro-batches and ranks).
        # Micro-batch g of the step is seeded by (seed, iter, g), g global over ranks: a
        # resumed run, or a DDP run with the same global batch, draws the same data.
        micro = []
        for m in range(accum):
            g = rank * accum + m
            source.gen.manual_seed(mix_seed(cfg['seed'], iter_num, g))
            micro.append(batches.to_device(source.get_batch('train', cfg['batch_size']), device))
        norm = sum(supervised_weights(b['y'], b.get('loss_mask'), b.get('attention_mask'), k)
                   for b in micro)
        if ddp:
            dist.all_reduce(norm)
            norm = norm / world  # DDP averages gradients over ranks
        loss_acc = torch.zeros((), device=device)
        for m, b in enumerate(micro):
            torch.manual_seed(mix_seed(cfg['seed'], iter_num, rank * accum + m, 'dropout'))
            sync = (not ddp) or m == accum - 1
            with (nullcontext() if sync else model.no_sync()), ctx:
                _, loss = model(b['x'], b['y'], loss_norm=norm, **forward_kwargs(b))
            scaler.scale(loss).backward()
            loss_acc += loss.detach()
        if cfg['grad_clip'] != 0.0:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg['grad_clip'])
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)

        t1 = time.time()
        dt, t0 = t1 - t0, t1
        if iter_num % cfg['log_interval'] == 0:
            if ddp:  # the true step loss: every rank's share of the global mean
                dist.all_reduce(loss_acc)
                loss_acc /= world
            lossf = loss_acc.item()
            if not math.isfinite(lossf):
                sys.exit(f"step {iter_num}: training loss is {lossf}; stopped without saving, the "
                         f"last good checkpoint is {ckpt_path}. Lower learning_rate or check the data.")
            done = iter_num + 1 - it_start
            rate = done / max(time.time() - t_start, 1e-9)
            eta = (cfg['max_iters'] - iter_num - 1) / max(rate, 1e-9)
            msg = (f"iter {iter_num}/{cfg['max_iters']}: loss {lossf:.4f}, lr {lr:.2e}, "
                   f"{dt * 1000:.1f}ms/it, {rate:.2f} it/s, ETA {eta / 60:.1f} min")
            if device_type == 'cuda':
                msg += f", mfu {100 * raw_model.estimate_mfu(tokens_per_iter, dt):.1f}%"
            diag = source.diagnostics()
            if master:
                print(msg + ''.join(f", {k_} {v:.4g}" for k_, v in diag.items()))
                if cfg['wandb_log']:
                    wandb.log({'iter': iter_num, 'train/loss': lossf, 'lr': lr,
                               **{f'diag/{k_}': v for k_, v in diag.items()}})
            history['train'].append({'iter': iter_num, 'loss': lossf})
        iter_num += 1
    if ddp:  # wait for rank 0's final eval/checkpoint: tearing gloo down under a busy peer aborts
        dist.barrier()
        dist.destroy_process_group()
    return history


if __name__ == '__main__':
    run_cli(main)
