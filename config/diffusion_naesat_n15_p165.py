# Masked diffusion on L&O-NAE-SAT (N, P) = (15, 165): between (10, 110), where all 2^10 latent
# strings are in the 100k training rows, and (20, 100), where almost none repeat; 11 observations
# per latent as in the paper's (25, 275). Rows of 180 tokens (1.5x the cost per step of
# (10, 110)). The (10, 110) recipe, run twice as long: at 3,000 steps both orders are still
# below the 75 % floor; at 6,000 (~50 min of a thread) margin order is well above it.
# docs/RESULTS.md "Checkable tasks".
# Data: python tasks.py --task=naesat --N=15 --P=165
exec(open('config/diffusion_naesat_n10_p110.py').read())
out_dir = 'out-naesat-n15-p165'
dataset = 'naesat_n15_p165'
max_iters = 6000
lr_decay_iters = 6000  # unused (constant lr); kept equal so a resume or --decay_lr=True agrees
eval_interval = 500
