"""
Masked diffusion: the corruption used for training (batches.py: `unmasking`, `remasking`) and
the sampler (`python sample.py --mode=diffusion`).

Vocabulary = base + 2: `mask_token_id = base`, `wrong_token_id = base + 1` (in the source's
meta, hence in every checkpoint). The denoiser predicts the original token at [MASK] positions;
the remasker (same architecture) predicts, at every position of a fully filled sequence, either
the token itself or WRONG. The sampler starts from a canvas of [MASK] (a prompt stays fixed) and
commits a scheduled number of tokens per denoiser pass until none is masked; committed tokens
may go back to [MASK] (random or learned remasking). Categorical draws are Gumbel-max in float64.
"""

import math

import torch
from torch.nn import functional as F

import checkpoint
from configurator import ConfigError
from utils import device_generator

SAMPLE_DEFAULTS = dict(  # sample.py keys for --mode=diffusion
    steps=64,
    length=0,  # length 0 = the model's block_size
    order='confidence',
    score_temperature=0.0,
    block_len=0,
    remask='none',
    remask_ratio=0.25,
    remask_schedule='ratio',
    remask_threshold=0.5,
    remasker_ckpt='',
)
SAMPLE_HELP = dict(  # sample.py --help, one line per key of SAMPLE_DEFAULTS
    steps='denoiser passes per sample (forward passes, NFE)',
    length='canvas length, prompt included (0: the model block_size)',
    order="which masked positions are committed first: 'confidence', 'margin' or 'random'",
    score_temperature='0: commit the top scores; > 0: sample the order at this temperature',
    block_len='semi-autoregressive blocks of this many positions, left to right (0: one block)',
    remask="committed tokens sent back to [MASK]: 'none', 'random', 'learned' or 'self'",
    remask_ratio="'ratio': remasked per step, as a share of the tokens the step commits; "
    "'cap': ReMDM's eta, the cap on each committed token's remasking probability",
    remask_schedule="how many go back per step: 'ratio' (remask_ratio x tokens committed) or "
    "'cap' (ReMDM-cap: each committed token w.p. min(eta, (1 - alpha_s) / alpha_t))",
    remask_threshold="remask only positions scored WRONG above this ('learned', 'self')",
    remasker_ckpt="remasking checkpoint scoring the drafts (--remask=learned)",
)
ORDERS = ('random', 'confidence', 'margin')
REMASKS = ('none', 'random', 'learned', 'self')
REMASK_SCHEDULES = ('ratio', 'cap')


def vocab_ids(meta):
    """(base_vocab, mask_id, wrong_id) from a masked-diffusion meta."""
    return meta['base_vocab_size'], meta['mask_token_id'], meta['wrong_token_id']


def draw_t(batch_size, eps, stratified, gen):
    """Masking ratios t (B,) in [eps, 1): stratified = one uniform offset shared by B evenly
    spaced strata (lower-variance loss, as MDLM), otherwise i.i.d. uniform."""
    if stratified:
        u = (torch.rand((), generator=gen) + torch.arange(batch_size)) / batch_size
    else:
        u = torch.rand(batch_size, generator=gen)
    return eps + (1 - eps) * u


def draw_mask(maskable, t, gen, min_one=False):
    """maskable (B, T) bool, t (B,) -> masked (B, T) bool: each maskable position with prob t.
    min_one: a row with maskable positions but none drawn gets one (uniform among them), so
    no row is wasted on an empty loss (short answers at small t)."""
    u = torch.rand(maskable.shape, generator=gen)
    masked = (u < t[:, None]) & maskable
    if min_one:
        empty = ~masked.any(1) & maskable.any(1)  # (B,)
        pick = torch.where(maskable, u, torch.full_like(u, 2.0)).argmin(1)  # a uniform maskable one
        masked[empty, pick[empty]] = True
    return masked


def gumbel_argmax(logits, temperature, gen, chunk=1 << 24):
    """Categorical sample along the last dim (temperature 0 = argmax), Gumbel-max in float64:
    float32 Gumbel noise is coarse enough to bias low-probability tokens. gen must live on
    logits.device (utils.device_generator). Rows are done `chunk` float64 elements at a time,
    so a (B, T, V) draw at GPT-2's vocabulary never holds a (B, T, V) float64 copy (12 x 1024 x
    50304 would be 4.9 GB)."""
    if temperature == 0:
        return logits.argmax(-1)
    flat = logits.reshape(-1, logits.size(-1))  # (rows, V)
    out = torch.empty(flat.size(0), dtype=torch.long, device=logits.device)
    step = max(1, chunk // flat.size(1))
    for i in range(0, flat.size(0), step):
        logp = F.log_softmax(flat[i : i + step].double() / temperature, dim=-1)
        out[i : i + step] = (logp + _gumbel(logp.shape, gen, logp.device)).argmax(-1)
    return out.view(logits.shape[:-1])


def random_other_tokens(tok, vocab, gen):
    """A uniform token of [0, vocab) that differs from tok (B, T): a corruption is always wrong."""
    r = torch.randint(0, vocab - 1, tok.shape, generator=gen, device=tok.device)
    return r + (r >= tok).long()


def context_other_tokens(tok, context, vocab, gen):
    """At every position of tok (B, T), a token drawn from the same row's context positions
    (context (B, T) bool: visible positions that are never corrupted, e.g. the prompt) that
    differs from tok; where the draw equals the original, is not a base-vocabulary token, or the
    row has no context, a uniform other token (random_other_tokens). Plausible wrong tokens: on
    path-star they are the graph's other nodes, among them the other arm's node at the same
    depth, the error a planner makes; a uniform token is mostly a node the graph does not have."""
    weights = torch.where(context.any(1, keepdim=True), context.float(), 1.0)  # (B, T)
    idx = torch.multinomial(weights, tok.size(1), replacement=True, generator=gen)  # (B, T)
    pick = tok.gather(1, idx)
    usable = context.gather(1, idx) & (pick != tok) & (pick < vocab)
    return torch.where(usable, pick, random_other_tokens(tok, vocab, gen))


@torch.no_grad()
def denoiser_samples(denoiser, x, masked, base_vocab, temperature, gen, attention_mask=None):
    """One denoiser pass on x (B, T) (masked positions hold [MASK]): a base-vocabulary sample at
    every masked position, x elsewhere. The on-policy corruptions of remasking / hybrid; x and
    gen on the denoiser's device."""
    logits, _ = denoiser(x, attention_mask=attention_mask)
    s = gumbel_argmax(logits[..., :base_vocab], temperature, gen)
    return torch.where(masked, s, x)


def _topk_mask(key, k):
    """key (B, L) float (-inf = not allowed), k (B,) long -> bool (B, L): each row's k largest."""
    order = key.argsort(dim=1, descending=True)
    ranks = torch.arange(key.size(1), device=key.device).expand_as(order).contiguous()
    rank = torch.empty_like(order).scatter_(1, order, ranks)
    return (rank < k[:, None]) & torch.isfinite(key)


def _gumbel(shape, gen, device):
    u = torch.rand(shape, dtype=torch.float64, generator=gen, device=device)
    return -torch.log(-torch.log(u.clamp(1e-300, 1.0 - 1e-16)))


def p_wrong(logits, wrong_id):
    """P(WRONG) (B, L) float32 from full logits (B, L, V), without a float64 (B, L, V) copy."""
    logits = logits.float()
    return (logits[..., wrong_id] - logits.logsumexp(-1)).exp()


def step_plan(steps, n_blocks):
    """[(block, local step j, steps of that block)] for every global step: steps are shared out
    evenly over the semi-autoregressive blocks (earlier blocks get the remainder)."""
    if steps < n_blocks:
        raise ValueError(
            f"steps={steps} < {n_blocks} blocks: every block needs a step; raise "
            f"--steps or --block_len"
        )
    plan = []
    for b in range(n_blocks):
        sb = steps // n_blocks + (b < steps % n_blocks)
        plan += [(b, j, sb) for j in range(sb)]
    return plan


@torch.no_grad()
def diffusion_sample(
    model,
    canvas,
    steps,
    mask_id,
    base_vocab,
    order='confidence',
    temperature=1.0,
    score_temperature=0.0,
    block_len=0,
    remask='none',
    remask_ratio=0.25,
    remasker=None,
    wrong_id=None,
    remask_threshold=0.5,
    attention_mask=None,
    gen=None,
    remask_schedule='ratio',
    free=None,
):
    """Fill every [MASK] of canvas (B, L) in `steps` denoiser passes.

    free (B, L) bool: the positions to generate (default: canvas == mask_id; the rest is the
    fixed prompt); a free position that holds a token starts out committed (it can be remasked).
    Step s (block b, local step j of S_b): one denoiser pass samples x0 at every masked position;
    the masked positions of blocks <= b with the highest order keys are committed so that block b
    keeps N_b - floor(N_b (j+1) / S_b) masked (earlier blocks none). Then, except after the last
    step, up to remask_ratio * (tokens the schedule adds this step; fractions carried) committed
    non-prompt positions go back to [MASK] (remask_schedule 'cap' instead: each committed token
    with probability sigma = min(remask_ratio, (1 - alpha_s) / alpha_t), ReMDM's max-capped
    schedule, alpha = the block's committed share after this step / after the next one, so none
    go back before the last step): `random` uniformly; `learned` those the remasker
    scores most likely WRONG (above remask_threshold) on the draft = canvas with the remaining
    masks filled by x0 (a fully filled sequence, like its training inputs); `self` (a `hybrid`
    model) those that this step's own denoiser pass scores most likely WRONG (above
    remask_threshold) among the positions committed in its input: no extra pass.
    Returns (canvas, info): info['nfe'] = forward passes per
    sample of every model, info['committed'] / info['remasked'] = per-step (B,) counts,
    info['commit_step'] (B, L) = the step at which each position was last committed (-1: prompt)."""
    if order not in ORDERS or remask not in REMASKS or remask_schedule not in REMASK_SCHEDULES:
        raise ValueError(
            f"order must be one of {ORDERS}, remask one of {REMASKS}, remask_schedule one "
            f"of {REMASK_SCHEDULES}"
        )
    if remask == 'learned' and (remasker is None or wrong_id is None):
        raise ValueError("remask='learned' needs a remasker model and wrong_id")
    if remask == 'self' and wrong_id is None:
        raise ValueError("remask='self' needs wrong_id (a hybrid denoiser's WRONG id)")
    # every draw on the canvas's device: a CPU generator seeds one there (CPU runs keep theirs)
    gen = device_generator(gen or torch.Generator().manual_seed(0), canvas.device)
    x = canvas.clone()
    B, L = x.shape
    free = x == mask_id if free is None else free  # (B, L): to generate; the rest is the prompt
    free_rank = free.long().cumsum(1) - 1
    blen = block_len if block_len > 0 else L
    block_id = torch.where(free, free_rank // blen, torch.full_like(free_rank, -1))
    n_blocks = max(1, math.ceil(int(free.sum(1).max()) / blen))
    nfe, committed, remasked = 0, [], []
    commit_step = torch.full_like(x, -1)  # (B, L): the step at which a position was last committed
    plan = step_plan(steps, n_blocks)
    for s, (b, j, sb) in enumerate(plan):
        eligible = free & (block_id <= b)
        masked = x == mask_id
        full = model(x, attention_mask=attention_mask)[0]  # (B, L, V): remask='self' reads WRONG
        logits = full[..., :base_vocab].float()  # float32: (B, L, V) at float64 is 2x the memory
        nfe += 1
        x0 = gumbel_argmax(logits, temperature, gen)  # (B, L); float64 noise, chunked
        if order == 'random':
            score = torch.rand((B, L), dtype=torch.float64, generator=gen, device=x.device)
        else:
            top2 = F.softmax(logits / (temperature or 1.0), dim=-1).topk(2, dim=-1).values
            score = (
                top2[..., 0] if order == 'confidence' else top2[..., 0] - top2[..., 1]
            ).double()
            if score_temperature > 0:  # sample the order instead of taking the top keys
                score = score.clamp_min(1e-300).log() / score_temperature + _gumbel(
                    (B, L), gen, x.device
                )
        n_b = (free & (block_id == b)).sum(1)
        target = n_b - (n_b * (j + 1)) // sb  # masked left in block b after this step
        k = (masked & eligible).sum(1) - target
        key = torch.where(masked & eligible, score, torch.full_like(score, -math.inf))
        commit = _topk_mask(key, k)
        x = torch.where(commit, x0, x)
        commit_step = torch.where(commit, s, commit_step)
        committed.append(commit.sum(1))
        if remask == 'none' or s == len(plan) - 1:
            continue
        cand = eligible & (x != mask_id)
        # budget: remask_ratio of the tokens the schedule has added so far, spread without
        # rounding loss (ratio 0.25 at one token per step = one remask every 4th step)
        done, before = (n_b * (j + 1)) // sb, (n_b * j) // sb
        if remask_schedule == 'cap':  # sigma (B,): 0 when the next step fills the block
            sigma = ((n_b - (n_b * (j + 2)) // sb) / done.clamp(min=1)).clamp(max=remask_ratio)
            r = torch.binomial(cand.sum(1).double(), sigma.double(), generator=gen).long()
        else:
            r = (remask_ratio * done.double()).floor().long() - (
                remask_ratio * before.double()
            ).floor().long()
        if remask == 'random':
            key = torch.rand((B, L), dtype=torch.float64, generator=gen, device=x.device)
        elif remask == 'self':  # this step's pass, scored on what was committed in its input
            key = self_remask_scores(full, ~masked, wrong_id, remask_threshold)
        else:
            draft = torch.where(x == mask_id, x0, x)
            pw = p_wrong(remasker(draft, attention_mask=attention_mask)[0], wrong_id).double()
            nfe += 1
            key = torch.where(pw > remask_threshold, pw, torch.full_like(pw, -math.inf))
        back = _topk_mask(torch.where(cand, key, torch.full_like(key, -math.inf)), r)
        x = torch.where(back, torch.full_like(x, mask_id), x)
        remasked.append(back.sum(1))
    assert not (x == mask_id).any(), "sampler left a [MASK]"  # the schedule ends at 0 masked
    return x, {'nfe': nfe, 'committed': committed, 'remasked': remasked, 'commit_step': commit_step}


@torch.no_grad()
def path_accuracy(model, rows, meta, order='confidence', steps=0, device='cpu', batch_size=500):
    """A denoiser decoding path-star answers: each row (n, row_len) with its answer positions
    [answer_start, +answer_len) set to [MASK] (graph and query visible, PAD not attended to),
    `steps` greedy passes (0: one token per pass; 1: one parallel pass). Returns exact_match,
    per_position accuracy and order: the mean step at which each answer position was committed
    (e.g. [4, 3, 2, 1, 0] = goal first, then backwards)."""
    base, mask_id, _ = vocab_ids(meta)
    a, L = meta['answer_start'], meta['answer_len']
    pad = (meta.get('special_tokens') or {}).get('PAD')  # path-star rows: never attended to
    gen = torch.Generator().manual_seed(0)
    rows = torch.as_tensor(rows, dtype=torch.long, device='cpu')  # host rows, decoded in chunks
    preds, when = [], []
    for chunk in rows.split(batch_size):
        canvas = chunk.clone()
        canvas[:, a : a + L] = mask_id
        attn = (chunk != pad).to(device) if pad is not None else None
        x, info = diffusion_sample(
            model,
            canvas.to(device),
            steps or L,
            mask_id,
            base,
            order=order,
            temperature=0,
            attention_mask=attn,
            gen=gen,
        )
        preds.append(x[:, a : a + L].cpu())
        when.append(info['commit_step'][:, a : a + L].cpu())
    correct = torch.cat(preds) == rows[:, a : a + L]
    return dict(
        exact_match=correct.all(1).float().mean().item(),
        per_position=correct.float().mean(0).tolist(),
        order=torch.cat(when).double().mean(0).tolist(),
    )


@torch.no_grad()
def single_position_accuracy(model, rows, meta, device='cpu'):
    """Accuracy at answer position j when only j is [MASK] (every other token visible), for each
    j: one edge lookup from a visible neighbour. Tells 'has not learned the lookup' apart from
    'decodes in a bad order'."""
    base, mask_id, _ = vocab_ids(meta)
    a, L = meta['answer_start'], meta['answer_len']
    pad = (meta.get('special_tokens') or {}).get('PAD')  # path-star rows: never attended to
    rows = torch.as_tensor(rows, dtype=torch.long, device=device)
    attn = (rows != pad) if pad is not None else None
    acc = []
    for j in range(L):
        x = rows.clone()
        x[:, a + j] = mask_id
        logits, _ = model(x, attention_mask=attn)
        acc.append((logits[:, a + j, :base].argmax(-1) == rows[:, a + j]).float().mean().item())
    return acc


def load_remasker(path, meta, device='cpu'):
    """A remasking checkpoint with the denoiser's vocabulary (meta: the denoiser's)."""
    return checkpoint.load_checked(
        path, '--remasker_ckpt', ('remasking',), meta, 'the denoiser', device
    )[0]


# ---- hybrid objective: one model that drafts and flags its own wrong tokens (batches.Hybrid) ----


def hybrid_corrupt(tok, maskable, chosen, to_wrong, proposals, mask_id, wrong_id):
    """The hybrid corruption of clean tokens tok (B, T). chosen (B, T) bool (within maskable):
    the positions drawn with ratio t as for the denoiser; to_wrong (within chosen): those that
    get proposals (B, T) (base-vocabulary tokens) instead of [MASK]. A proposal equal to the
    original is no corruption: that position is clean. Returns (x, y, masked, wrong): x the input,
    masked = [MASK] positions, wrong = positions holding a token that differs from the original;
    y = WRONG at wrong positions, the original at every other maskable position ([MASK] and
    clean), -1 at positions that are not maskable (prompt, PAD)."""
    masked = chosen & ~to_wrong
    wrong = to_wrong & (proposals != tok)
    x = torch.where(masked, mask_id, torch.where(wrong, proposals, tok))
    y = torch.where(maskable, torch.where(wrong, wrong_id, tok), -1)
    return x, y, masked, wrong


def self_remask_scores(logits, visible, wrong_id, threshold):
    """remask='self': P(WRONG) (B, L) float64 from a hybrid denoiser's full logits (B, L, V) of
    the pass that also drafted this step, at the positions `visible` (B, L) bool (not [MASK] in
    that pass's input: committed earlier); -inf elsewhere and where P(WRONG) <= threshold.
    Positions committed in this very step held [MASK] in the input, so they have no score (a
    hybrid model is never asked whether a [MASK] is wrong) and are not sent back in this step."""
    if logits.size(-1) <= wrong_id:
        raise ValueError(
            f"remask='self' needs a model with a WRONG output (id {wrong_id}); this "
            f"one has {logits.size(-1)} outputs: use a hybrid checkpoint"
        )
    pw = p_wrong(logits, wrong_id).double()
    return torch.where(visible & (pw > threshold), pw, torch.full_like(pw, -math.inf))


def check_self_remask(ckpt, path):
    """sample.py --remask=self: only a checkpoint trained with objective 'hybrid' has learned
    P(WRONG) at committed positions (an unmasking model's WRONG output is untrained)."""
    if ckpt.get('objective') != 'hybrid':
        raise ConfigError(
            f"--remask=self needs a checkpoint trained with --objective=hybrid; "
            f"{path} has objective {ckpt.get('objective')!r} (use --remask=learned "
            f"with a remasker, or none/random)"
        )


# ------------------------------------------------------------------ metrics (evaluation time)
@torch.no_grad()
def denoiser_metrics(source, model, device):
    """Masked CE (nats) and the bound E_t[(1/t) sum_masked CE] / #maskable in bits/token, over
    eval_iters val batches of `source` (an unmasking batch source) drawn with a fixed seed."""
    c = source.cfg
    gen = source.eval_gen('denoiser')
    ce_sum = n_masked = bound = rows = 0.0
    for _ in range(c['eval_iters']):
        b = source.batch_on(device, 'val', c['batch_size'], gen)
        logits, _ = model(b['x'], attention_mask=b.get('attention_mask'))
        ce = F.cross_entropy(
            logits.float().transpose(1, 2), b['y'], ignore_index=-1, reduction='none'
        )  # (B, T), 0 where y == -1
        ce_sum, n_masked = ce_sum + float(ce.sum()), n_masked + float((b['y'] != -1).sum())
        per_row = ce.sum(1) / b['t'] / b['maskable'].sum(1).clamp(min=1)
        bound, rows = bound + float(per_row.sum()), rows + len(per_row)
    return {'val_masked_ce': ce_sum / max(n_masked, 1), 'val_bound_bpt': bound / rows / math.log(2)}


@torch.no_grad()
def remasker_metrics(source, model, device):
    """Detection rates on val: clean_as_wrong = share of clean (maskable, uncorrupted)
    positions predicted WRONG (the corrupted_only collapse), wrong_recall = share of
    corrupted positions predicted WRONG, wrong_precision."""
    c, wrong_id = source.cfg, source.wrong_id
    gen = source.eval_gen('remasker')
    fp = tp = n_clean = n_wrong = n_pred = 0.0
    for _ in range(c['eval_iters']):
        b = source.batch_on(device, 'val', c['batch_size'], gen)
        logits, _ = model(b['x'], attention_mask=b.get('attention_mask'))
        pred = logits.argmax(-1) == wrong_id
        clean = b['maskable'] & ~b['wrong']
        fp, tp = fp + float((pred & clean).sum()), tp + float((pred & b['wrong']).sum())
        n_clean, n_wrong = n_clean + float(clean.sum()), n_wrong + float(b['wrong'].sum())
        n_pred += float((pred & b['maskable']).sum())
    return {
        'clean_as_wrong': fp / max(n_clean, 1),
        'wrong_recall': tp / max(n_wrong, 1),
        'wrong_precision': tp / max(n_pred, 1),
    }


@torch.no_grad()
def hybrid_metrics(source, model, device):
    """val_masked_ce: CE (nats) at [MASK] positions, as denoiser_metrics; detection as
    remasker_metrics, over the visible maskable positions (a [MASK] is never judged):
    clean_as_wrong = share of clean positions predicted WRONG (argmax), wrong_recall = share of
    wrong positions predicted WRONG, wrong_precision."""
    c, wrong_id = source.cfg, source.wrong_id
    gen = source.eval_gen('hybrid')
    ce_sum = n_masked = fp = tp = n_clean = n_wrong = n_pred = 0.0
    for _ in range(c['eval_iters']):
        b = source.batch_on(device, 'val', c['batch_size'], gen)
        logits, _ = model(b['x'], attention_mask=b.get('attention_mask'))
        y_masked = torch.where(b['masked'], b['y'], -1)  # [MASK] positions only
        ce = F.cross_entropy(
            logits.float().transpose(1, 2), y_masked, ignore_index=-1, reduction='none'
        )
        ce_sum, n_masked = ce_sum + float(ce.sum()), n_masked + float(b['masked'].sum())
        visible = b['maskable'] & ~b['masked']
        pred = (logits.argmax(-1) == wrong_id) & visible
        clean = visible & ~b['wrong']
        fp, tp = fp + float((pred & clean).sum()), tp + float((pred & b['wrong']).sum())
        n_clean, n_wrong = n_clean + float(clean.sum()), n_wrong + float(b['wrong'].sum())
        n_pred += float(pred.sum())
    return {
        'val_masked_ce': ce_sum / max(n_masked, 1),
        'clean_as_wrong': fp / max(n_clean, 1),
        'wrong_recall': tp / max(n_wrong, 1),
        'wrong_precision': tp / max(n_pred, 1),
    }
