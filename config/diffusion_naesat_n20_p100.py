# Masked diffusion on L&O-NAE-SAT (N, P) = (20, 100): twice the latents of (10, 110) in rows of
# the same 120 tokens (so the same cost per step), 5 observations per latent as in the paper's
# (50, 250) row (its vanilla -> margin 67.94 -> 90.01). The (10, 110) recipe, unchanged.
# docs/RESULTS.md "Checkable tasks".
# Data: python tasks.py --task=naesat --N=20 --P=100
exec(open('config/diffusion_naesat_n10_p110.py').read())
out_dir = 'out-naesat-n20-p100'
dataset = 'naesat_n20_p100'
