# Hybrid denoiser on L&O-NAE-SAT (10, 110): the recipe of config/diffusion_naesat_n10_p110.py
# with objective hybrid (drafts [MASK] positions and flags wrong tokens in the same pass):
#   python bench/tasks_eval.py --hybrid=out-hybrid-naesat-n10-p110/ckpt.pt
exec(open('config/diffusion_naesat_n10_p110.py').read())
out_dir = 'out-hybrid-naesat-n10-p110'
objective = 'hybrid'
hybrid_wrong_frac = 0.2
hybrid_wrong_source = 'uniform'
