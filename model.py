"""
One GPT for every objective in nanomask (after nanoGPT's model.py).

What the model is trained to predict is decided by the batch, never by the model:
  targets       (B, T) long, -1 = not supervised
  loss_mask     (B, T) bool/float, per-token weight of the cross-entropy (optional)
  attention_mask(B, T) bool, True = real token; False keys are never attended to, and a
                target is supervised only where its position is real (optional):
                  bidirectional (MLM, diffusion): y_t is the token at t -> attention_mask[t];
                  causal: y_t is the token at t+1 -> attention_mask[t] and attention_mask[t+1]
                  (an HF-style right-padded batch whose labels hold pad ids: the pad after a
                  row's last real token is never a target). The last column's target lies
                  outside the window: it counts iff attention_mask[T-1] (a row that fills the
                  window goes on past it, as in a token stream; so an all-True mask equals no
                  mask). A batch that knows its last target is padding sets y[:, -1] = -1.
With `n_future = k > 1`, extra heads predict t+2 ... t+k; their targets and masks are the
head-1 ones shifted left (see `future_targets`), so no head is supervised beyond its row.
"""

import functools
import math
from dataclasses import dataclass

import torch
import torch.nn as nn
from torch.nn import functional as F

try:  # FlexAttention: the CUDA fast path for key-masked batches (no backward on CPU here)
    from torch.nn.attention.flex_attention import BlockMask, create_block_mask, flex_attention
except ImportError:  # pragma: no cover - older torch
    BlockMask = create_block_mask = flex_attention = None


@dataclass
class GPTConfig:
    block_size: int = 1024
    vocab_size: int = 50304
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    dropout: float = 0.0
    bias: bool = True  # bias in Linears and LayerNorms, like GPT-2
    causal: bool = True  # False = bidirectional (MLM, diffusion)
    n_future: int = 1  # number of output heads: head i predicts token t+i
    tie_embeddings: bool = True  # lm_head shares the token embedding (GPT-2); False = own matrix
    gelu_approximate: str = 'none'  # 'tanh': GPT-2's own gelu_new (pretrained.py loads GPT-2 so)
    # positions: 'learned' (GPT-2's wpe table) or 'rope' (rotary, as LLaMA/LLaDA and MDLM's DiT:
    # attention scores depend on relative positions only; no wpe)
    pos_emb: str = 'learned'
    # initialisation (training-time only, but saved so a run can be repeated):
    emb_init_std: float = 0.02  # std of token/position embeddings; 1.0 = PyTorch's nn.Embedding
    linear_init: str = 'gpt2'  # 'gpt2': N(0, 0.02), residual projections / sqrt(2 n_layer);
    # 'pytorch': nn.Linear's own Kaiming-uniform (+ uniform bias)
    # training-time settings (a later phase may change them):
    future_head_weights: tuple = None  # weights of the n_future heads' losses; None = uniform
    attn_impl: str = 'auto'  # kernel for key-masked batches, see select_attention


# Keys that define the weights' shapes / meaning; everything else is a training parameter.
ARCH_KEYS = (
    'n_layer',
    'n_head',
    'n_embd',
    'block_size',
    'bias',
    'vocab_size',
    'n_future',
    'tie_embeddings',
    'pos_emb',
)
# Keys that only decide the initial weights (taken from the config for a new model) and
# training-time keys (taken from the config also when training on from a checkpoint).
INIT_KEYS = ('emb_init_std', 'linear_init')
RUN_KEYS = ('dropout', 'future_head_weights', 'attn_impl')
LINEAR_INITS = ('gpt2', 'pytorch')
POS_EMBS = ('learned', 'rope')


def rotary(T, head_dim, device, base=10000.0):
    """(cos, sin), each (T, head_dim / 2) float32, of rotary position embeddings (Su et al. 2021):
    pair (i, i + head_dim/2) of a query or key at position t is rotated by t * base^(-2i/head_dim),
    so a query-key dot product depends on the positions only through their difference."""
    inv_freq = base ** -(torch.arange(0, head_dim, 2, device=device, dtype=torch.float) / head_dim)
    angles = torch.outer(torch.arange(T, device=device, dtype=torch.float), inv_freq)
    return angles.cos(), angles.sin()


def apply_rotary(x, cos, sin):
    """x (B, H, T, D) rotated by (cos, sin) (T, D/2) of rotary(); same dtype as x."""
    x1, x2 = x.float().chunk(2, dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).type_as(x)


class CausalSelfAttention(nn.Module):
    """Multi-head attention; causal or bidirectional, with an optional boolean key mask."""

    def __init__(self, config):
        super().__init__()
        assert config.n_embd % config.n_head == 0, "n_embd must be divisible by n_head"
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)
        self.n_head, self.n_embd, self.dropout = config.n_head, config.n_embd, config.dropout
        self.causal = config.causal

    def forward(self, x, attn_mask=None, rope=None):
        # x: (B, T, C); attn_mask: None or bool (B, 1, T, T), True = may attend, or a BlockMask;
        # rope: None or (cos, sin) of rotary() for pos_emb='rope'
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        if rope is not None:
            q, k = apply_rotary(q, *rope), apply_rotary(k, *rope)
        dropout_p = self.dropout if self.training else 0.0
        if BlockMask is not None and isinstance(attn_mask, BlockMask):
            y = _flex(q, k, v, attn_mask)
        elif attn_mask is None:
            # no mask tensor: CUDA may pick the flash kernel
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=self.causal)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.gelu = nn.GELU(approximate=config.gelu_approximate)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x):
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Block(nn.Module):
    """Pre-LayerNorm transformer block."""

    def __init__(self, config):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x, attn_mask=None, rope=None):
        x = x + self.attn(self.ln_1(x), attn_mask, rope)
        return x + self.mlp(self.ln_2(x))


def build_attn_mask(attention_mask, causal):
    """(B, T) bool key mask -> (B, 1, T, T) bool SDPA mask (True = attend), or None.

    Every query may also attend to itself: a padded query whose keys are all masked would
    otherwise softmax over nothing and produce NaN. Real queries never see padded keys, so
    this changes nothing at real positions (tests/test_model.py checks it)."""
    if attention_mask is None:
        return None
    B, T = attention_mask.shape
    eye = torch.eye(T, dtype=torch.bool, device=attention_mask.device)
    mask = attention_mask[:, None, None, :] | eye  # (B, 1, T, T): key j visible to query i
    if causal:
        mask = mask & torch.ones(T, T, dtype=torch.bool, device=mask.device).tril()
    return mask


def select_attention(attn_impl, device_type, has_mask, dropout_active):
    """Which attention kernel a forward uses: 'sdpa' (no mask tensor: flash on CUDA),
    'sdpa_mask' (bool key mask; the CPU path) or 'flex' (FlexAttention block mask).
    attn_impl: 'auto' picks flex only on CUDA for masked batches without dropout (flex has no
    dropout); 'sdpa' never uses flex; 'flex' forces it (tests use it to check the masks)."""
    if not has_mask:
        return 'sdpa'
    if attn_impl == 'flex' or (
        attn_impl == 'auto'
        and device_type == 'cuda'
        and not dropout_active
        and flex_attention is not None
    ):
        return 'flex'
    return 'sdpa_mask'


def build_block_mask(attention_mask, causal):
    """FlexAttention twin of build_attn_mask: same rule (key real, or self; causal)."""
    B, T = attention_mask.shape

    def mask_mod(b, h, q_idx, kv_idx):
        keep = attention_mask[b, kv_idx] | (q_idx == kv_idx)
        return keep & (kv_idx <= q_idx) if causal else keep

    # compiled mask building (no (B, T, T) tensor), unless this is traced by an outer compile
    fast = attention_mask.device.type == 'cuda' and not torch.compiler.is_compiling()
    return create_block_mask(mask_mod, B, None, T, T, device=attention_mask.device, _compile=fast)


@functools.cache
def compiled_flex():
    """flex_attention compiled once, for models that are not themselves compiled. Flex is fast
    only compiled (eager flex materialises the B*H*T*T scores). dynamic=None: the first new batch
    size or length recompiles with dynamic shapes, so evaluation batches of other sizes do not
    each recompile up to the recompile limit (then falling back to eager)."""
    return torch.compile(flex_attention)


def _flex(q, k, v, block_mask):
    if q.device.type != 'cuda':  # eager flex: correct but slow, used by CPU tests only
        return flex_attention(q, k, v, block_mask=block_mask)
    if torch.compiler.is_compiling():  # inside the model's torch.compile: fused with the rest
        return flex_attention(q, k, v, block_mask=block_mask)
    # a torch.compile made while the model is being compiled would be ignored: so compile only
    # here, outside any compiled region
    return compiled_flex()(q, k, v, block_mask=block_mask)


def future_targets(targets, weights, n_future):
    """Head-1 targets/weights (B, T) -> per-head (k, B, T), head i shifted left by i-1.

    Head i at position t predicts the token head 1 predicts at t+i-1, so it inherits that
    position's target *and* its mask; positions past the row end get -1 / weight 0."""
    B, T = targets.shape
    tgt = targets.new_full((n_future, B, T), -1)
    w = weights.new_zeros((n_future, B, T))
    for i in range(n_future):
        tgt[i, :, : T - i] = targets[:, i:]
        w[i, :, : T - i] = weights[:, i:]
    return tgt, w


def supervised_weights(
    targets, loss_mask=None, attention_mask=None, n_future=1, causal=None, norm_mask=None
):
    """Per-head normaliser (k,) of a batch: what the loss is divided by (the supervised
    weight, or the sum of the batch's norm_mask when it brings one).

    train.py sums this over all micro-batches (and ranks) of a step before the forward
    passes, so the loss is a mean over the supervised tokens of the whole batch.
    causal: the model's config.causal; needed with an attention_mask (the rule for which
    targets are real differs, see the module docstring)."""
    if attention_mask is not None and causal is None:
        raise ValueError("supervised_weights with an attention_mask needs causal= (config.causal)")
    return _token_weights(targets, loss_mask, attention_mask, n_future, causal, norm_mask)[2].sum(
        dim=(1, 2)
    )


def _token_weights(targets, loss_mask, attention_mask, n_future, causal=True, norm_mask=None):
    """(k, B, T) targets, weights and normaliser weights of every head: the one place that
    decides what is supervised (loss_terms and supervised_weights both come here).

    The normaliser weights are the weights themselves (loss = weighted mean), unless the batch
    brings norm_mask (B, T): what each position counts in the denominator, e.g. MDLM's 1/t
    loss = sum_masked CE/t over the number of maskable positions (batches.Unmasking)."""
    w = (targets != -1).float()
    if loss_mask is not None:
        w = w * loss_mask.float()
    real = None
    if attention_mask is not None:
        real = attention_mask.bool()
        if causal:  # y_t is the token at t+1 (the last column: real iff attention_mask[T-1])
            w = w * (real & torch.cat([real[:, 1:], real[:, -1:]], 1)).float()
        else:  # y_t is the token at t
            w = w * real.float()
    targets = torch.where(w > 0, targets, torch.full_like(targets, -1))
    tgt, w = future_targets(targets, w, n_future)
    n = w if norm_mask is None else future_targets(targets, norm_mask.float(), n_future)[1]
    if real is not None and n_future > 1:  # head i at t reads input t: it must be real too
        w = w * real.float()
        n = w if norm_mask is None else n * real.float()
        tgt = torch.where(w > 0, tgt, torch.full_like(tgt, -1))
    return tgt, w, n


class GPT(nn.Module):
    def __init__(self, config):
        super().__init__()
        assert config.vocab_size is not None and config.block_size is not None
        self.config = config
        if config.pos_emb not in POS_EMBS:
            raise ValueError(f"pos_emb={config.pos_emb!r}: choose one of {POS_EMBS}")
        # wpe is made (and so initialised) right after wte, as before rope existed: the order of
        # construction is the order of random draws, and every recorded result used this one
        # (made after the blocks, the reverse path-star run went from 1.000 to 0.004)
        modules = dict(wte=nn.Embedding(config.vocab_size, config.n_embd))
        if config.pos_emb == 'learned':
            modules['wpe'] = nn.Embedding(config.block_size, config.n_embd)
        modules.update(
            drop=nn.Dropout(config.dropout),
            h=nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
            ln_f=nn.LayerNorm(config.n_embd, bias=config.bias),
        )
        self.transformer = nn.ModuleDict(modules)
        # extra heads (multi-token prediction): one block each on the shared trunk,
        # sharing ln_f and the (tied) unembedding, as in Gloeckle et al. 2024
        self.future_heads = nn.ModuleList([Block(config) for _ in range(config.n_future - 1)])
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        if config.tie_embeddings:
            self.transformer.wte.weight = self.lm_head.weight
        if config.linear_init not in LINEAR_INITS:
            raise ValueError(f"linear_init={config.linear_init!r}: choose one of {LINEAR_INITS}")
        # the heads' loss weights as a buffer: on the model's device, not copied there per forward
        hw = config.future_head_weights
        hw = torch.ones(config.n_future) if hw is None else torch.as_tensor(hw, dtype=torch.float)
        assert hw.numel() == config.n_future, f"future_head_weights needs {config.n_future} values"
        self.register_buffer('loss_head_weights', hw / hw.sum(), persistent=False)
        self.apply(self._init_weights)
        if config.linear_init == 'gpt2':  # GPT-2 scaled init of residual projections
            for pn, p in self.named_parameters():
                if pn.endswith('c_proj.weight'):
                    torch.nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    def get_num_params(self, non_embedding=True):
        n_params = sum(p.numel() for p in self.parameters())
        if non_embedding and 'wpe' in self.transformer:
            n_params -= self.transformer.wpe.weight.numel()
        return n_params

    def _init_weights(self, module):
        # Why the embedding scale is a knob: the masked-diffusion path-star denoiser leaves its
        # plateau only with large embeddings and an untied head (docs/RESULTS.md, ablation).
        cfg = self.config
        if module is self.lm_head and cfg.tie_embeddings:
            # the shared matrix, visited last by apply(): initialised at the embedding's scale
            # (same draws as GPT-2 code, which initialises it twice, at the default 0.02)
            torch.nn.init.normal_(module.weight, mean=0.0, std=cfg.emb_init_std)
        elif isinstance(module, nn.Linear):
            if cfg.linear_init == 'gpt2':  # 'pytorch': keep nn.Linear's own init
                torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)
                if module.bias is not None:
                    torch.nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            torch.nn.init.normal_(module.weight, mean=0.0, std=cfg.emb_init_std)

    def trunk(self, idx, attention_mask=None):
        """idx (B, T) -> (final hidden states (B, T, C) before ln_f, attn: what the blocks
        were given to attend with, (mask, rope), which the extra heads' blocks take too)."""
        B, T = idx.size()
        cfg = self.config
        assert T <= cfg.block_size, f"sequence length {T} > block_size {cfg.block_size}"
        x = self.transformer.wte(idx)
        rope = None
        if cfg.pos_emb == 'learned':
            x = x + self.transformer.wpe(torch.arange(0, T, dtype=torch.long, device=idx.device))
        else:
            rope = rotary(T, cfg.n_embd // cfg.n_head, idx.device)
        x = self.transformer.drop(x)
        impl = select_attention(
            self.config.attn_impl,
            idx.device.type,
            attention_mask is not None,
            self.training and self.config.dropout > 0,
        )
        attn_mask = (
            build_block_mask(attention_mask, self.config.causal)
            if impl == 'flex'
            else build_attn_mask(attention_mask, self.config.causal)
        )
        for block in self.transformer.h:
            x = block(x, attn_mask, rope)
        return x, (attn_mask, rope)

    def head_logits(self, h, attn=(None, None)):
        """Trunk states (B, T, C) -> logits of every head (k, B, T, V); attn: trunk()'s."""
        if not self.future_heads:  # one head: a view, not a stacked copy of (B, T, V)
            return self.lm_head(self.transformer.ln_f(h)).unsqueeze(0)
        outs = [h] + [head(h, *attn) for head in self.future_heads]
        return torch.stack([self.lm_head(self.transformer.ln_f(o)) for o in outs])

    def loss_terms(self, idx, targets, attention_mask=None, loss_mask=None, norm_mask=None):
        """Per-head weighted CE sums (k,) and normalisers (k,), for exact averaging over many
        batches (evaluation). Also returns head-1 logits (B, T, V)."""
        h, attn = self.trunk(idx, attention_mask)
        logits = self.head_logits(h, attn)  # (k, B, T, V)
        tgt, w, n = _token_weights(
            targets, loss_mask, attention_mask, logits.size(0), self.config.causal, norm_mask
        )
        ce = F.cross_entropy(
            logits.float().flatten(0, 2), tgt.flatten(), ignore_index=-1, reduction='none'
        ).view_as(w)
        return (ce * w).sum(dim=(1, 2)), n.sum(dim=(1, 2)), logits[0]

    def forward(
        self,
        idx,
        targets=None,
        attention_mask=None,
        loss_mask=None,
        loss_norm=None,
        last_only=False,
        norm_mask=None,
    ):
        """Returns (logits (B, T, V) of head 1, loss or None).

        loss = sum over heads of head_weight_i * (weighted CE sum of head i) / loss_norm_i.
        loss_norm (k,) defaults to this batch's own normaliser (its supervised weight, or the
        sum of norm_mask); train.py passes the whole accumulated batch's. A head with nothing
        to supervise gives 0, not NaN.
        attention_mask: False positions are never attended to nor supervised; a causal model's
        target y_t (the token at t+1) counts only if t and t+1 are real (the last column: if
        T-1 is), in every head; a bidirectional model's y_t counts if t is real.
        last_only: logits of the last position only (generation shortcut, as in nanoGPT)."""
        if targets is None:
            h, _ = self.trunk(idx, attention_mask)
            if last_only:
                h = h[:, [-1], :]
            return self.lm_head(self.transformer.ln_f(h)), None
        head_sums, weights, logits = self.loss_terms(
            idx, targets, attention_mask, loss_mask, norm_mask
        )
        if loss_norm is None:
            loss_norm = weights.detach()
        # with zero supervised weight head_sums is exactly 0 (and so is its gradient)
        head_losses = head_sums / loss_norm.clamp(min=1e-8)
        return logits, (head_losses * self.loss_head_weights).sum()

    def crop_block_size(self, block_size):
        assert block_size <= self.config.block_size
        self.config.block_size = block_size
        if 'wpe' in self.transformer:  # rotary positions have no table
            self.transformer.wpe.weight = nn.Parameter(self.transformer.wpe.weight[:block_size])

    def resize_vocab(self, vocab_size):
        """Grow the embedding (and the head, tied or not) for new special tokens: old rows
        kept, new rows freshly initialised (mean of the old rows + N(0, 0.02))."""
        if vocab_size == self.config.vocab_size:
            return
        assert vocab_size > self.config.vocab_size, "the vocabulary can only grow"

        def grown(old):
            new = old.new_empty(vocab_size, old.size(1))
            new[: old.size(0)] = old
            new[old.size(0) :] = old.mean(0) + 0.02 * torch.randn_like(new[old.size(0) :])
            return nn.Parameter(new)

        self.lm_head.weight = grown(self.lm_head.weight.data)
        if self.config.tie_embeddings:
            self.transformer.wte.weight = self.lm_head.weight
        else:
            self.transformer.wte.weight = grown(self.transformer.wte.weight.data)
        self.lm_head.out_features = self.transformer.wte.num_embeddings = vocab_size
        self.config.vocab_size = vocab_size

    def configure_optimizers(self, weight_decay, learning_rate, betas, device_type):
        # weight decay on 2-D tensors (matmuls, embeddings) only; biases and norms not
        params = [p for p in self.parameters() if p.requires_grad]
        decay = [p for p in params if p.dim() >= 2]
        no_decay = [p for p in params if p.dim() < 2]
        groups = [
            {'params': decay, 'weight_decay': weight_decay},
            {'params': no_decay, 'weight_decay': 0.0},
        ]
        extra = dict(fused=True) if device_type == 'cuda' else dict()
        return torch.optim.AdamW(groups, lr=learning_rate, betas=betas, **extra)

    def flops_per_token(self, T=None):
        """Training FLOPs per token (forward + backward) at sequence length T (default
        block_size): 6N for the weights plus attention's 12 L H Q T (PaLM appendix B)."""
        N, cfg = self.get_num_params(), self.config
        L, H, Q = cfg.n_layer, cfg.n_head, cfg.n_embd // cfg.n_head
        return 6 * N + 12 * L * H * Q * (T or cfg.block_size)

    def estimate_mfu(self, tokens_per_device, dt, peak_flops=989e12):
        """Model FLOPs utilisation of ONE device: tokens_per_device = the tokens this device
        processed in dt seconds (a DDP step's tokens divided by the world size). Default peak =
        H100 bf16 dense (A100: 312e12)."""
        return self.flops_per_token() * tokens_per_device / dt / peak_flops

    @torch.no_grad()
    def generate(self, idx, max_new_tokens, temperature=1.0, top_k=None, stop_token=None):
        """Autoregressive sampling with head 1 (causal models only)."""
        assert self.config.causal, "generate() needs a causal model; use sample.py --mode=diffusion"
        for _ in range(max_new_tokens):
            idx_cond = (
                idx if idx.size(1) <= self.config.block_size else idx[:, -self.config.block_size :]
            )
            logits, _ = self(idx_cond, last_only=True)
            logits = logits[:, -1, :]
            if temperature == 0:  # greedy
                idx_next = logits.argmax(dim=-1, keepdim=True)
            else:
                logits = logits / temperature
                if top_k is not None:
                    v, _ = torch.topk(logits, min(top_k, logits.size(-1)))
                    logits[logits < v[:, [-1]]] = -float('Inf')
                idx_next = torch.multinomial(F.softmax(logits.double(), dim=-1), num_samples=1)
            idx = torch.cat((idx, idx_next), dim=1)
            if stop_token is not None and bool((idx_next == stop_token).all()):
                break
        return idx
