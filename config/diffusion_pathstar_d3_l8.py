# Masked diffusion (unmasking) on the harder path-star G(3,8,N=50): three arms of 8 nodes, so an
# answer of 8 tokens (s, six middle nodes, g) and budgets of 8 / 4 / 2 passes (issue 23 asks
# for a path-star where one confidence pass is not already perfect). The G(2,5) recipe
# (config/diffusion_pathstar_d2_l5.py); rows of 74 tokens cost ~2.5x a G(2,5) step.
# Table: python bench/tasks_eval.py --denoiser=out-diffusion-pathstar-d3-l8/ckpt.pt --nfe=L,L/2,L/4
# Data: python pathstar.py --mode=incontext --d=3 --l=8 --N=50
exec(open('config/diffusion_pathstar_d2_l5.py').read())
out_dir = 'out-diffusion-pathstar-d3-l8'
dataset = 'incontext_pathstar_d3_l8_n50'
block_size = 74  # whole rows
