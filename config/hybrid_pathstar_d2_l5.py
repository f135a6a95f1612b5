# Hybrid denoiser on path-star G(2,5) (batches.Hybrid): the recipe of
# config/diffusion_pathstar_d2_l5.py, trained to draft [MASK] answer positions and flag wrong
# ones (target WRONG) in the same pass; for the revision test:
#   python bench/pathstar_revision.py --hybrid=out-hybrid-pathstar-d2-l5/ckpt.pt
# Data: python pathstar.py --mode=incontext --d=2 --l=5 --N=50
exec(open('config/diffusion_pathstar_d2_l5.py').read())
out_dir = 'out-hybrid-pathstar-d2-l5'
objective = 'hybrid'
hybrid_wrong_frac = 0.2
hybrid_wrong_source = 'uniform'
# 4,500 steps: at 3,000 this run was just leaving the plateau (exact match 0.258, masked CE 0.71),
# at 4,500 it solves G(2,5) (0.974; docs/RESULTS.md "Path-star: forcing a wrong first decision")
max_iters = 4500
lr_decay_iters = 4500
