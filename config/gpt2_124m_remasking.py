# Remasker (objective remasking, bidirectional): GPT-2 124M from pretrained GPT-2, trained to
# predict WRONG at corrupted positions and the original token elsewhere (all_positions), on
# uniform corruptions; on-policy corruptions need a frozen denoiser:
#   --remasking_denoiser=out-gpt2-124m-unmasking/ckpt.pt   (one more forward per micro-batch)
#   12 x 768, block 1024, 491,520 tokens per step, 20,000 steps
# Cost (python bench/recipe_cost.py): 6N per token: 7.3e18 FLOPs, ~38 min on 8 H100s at 40% MFU
# (uniform corruptions; a frozen 124M denoiser adds 2N per token, one third more).
#   torchrun --standalone --nproc_per_node=8 train.py config/gpt2_124m_remasking.py
exec(open('config/gpt2_124m_common.py').read())  # no architecture: GPT-2's
out_dir = 'out-gpt2-124m-remasking'
init_from = 'gpt2'
objective = 'remasking'
remasking_loss_type = 'all_positions'
learning_rate = 3e-4
min_lr = 3e-5
