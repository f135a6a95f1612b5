# Masked-diffusion denoiser (objective unmasking, bidirectional, README "Masked diffusion") of
# GPT-2 124M, initialised from pretrained GPT-2 (--init_from=gpt2) and made bidirectional: a
# character-level denoiser from scratch sits near the unigram plateau, from a next-token model it
# does not (config/diffusion_char_arinit.py). Each row masked at t ~ U(1e-3, 1); the loss is the
# mean CE over the masked positions (--unmasking_loss=inv_t: MDLM's 1/t weighting).
#   12 x 768 (GPT-2's, with biases and tanh GELU), block 1024, 491,520 tokens per step,
#   20,000 steps = 9.8B tokens, a lower peak learning rate than from scratch
# Cost (python bench/recipe_cost.py): 6N per token: 7.3e18 FLOPs, ~38 min on 8 H100s at 40% MFU.
#   torchrun --standalone --nproc_per_node=8 train.py config/gpt2_124m_unmasking.py
exec(open('config/gpt2_124m_common.py').read())  # no architecture: GPT-2's
out_dir = 'out-gpt2-124m-unmasking'
init_from = 'gpt2'
objective = 'unmasking'
unmasking_loss = 'mean'
learning_rate = 3e-4
min_lr = 3e-5
