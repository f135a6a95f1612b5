# Hybrid denoiser (objective hybrid: drafts [MASK] positions and flags its own wrong tokens in
# one pass; sample.py --mode=diffusion --remask=self) of GPT-2 124M from pretrained GPT-2.
# hybrid_wrong_frac 0.2 of the chosen positions get a uniform wrong token (batches.Hybrid).
#   12 x 768, block 1024, 491,520 tokens per step, 20,000 steps
# Cost (python bench/recipe_cost.py): 6N per token: 7.3e18 FLOPs, ~38 min on 8 H100s at 40% MFU.
#   torchrun --standalone --nproc_per_node=8 train.py config/gpt2_124m_hybrid.py
exec(open('config/gpt2_124m_common.py').read())  # no architecture: GPT-2's
out_dir = 'out-gpt2-124m-hybrid'
init_from = 'gpt2'
objective = 'hybrid'
hybrid_wrong_frac = 0.2
hybrid_wrong_source = 'uniform'
learning_rate = 3e-4
min_lr = 3e-5
