# L&O-NAE-SAT at the paper's (N, P) = (25, 275): the (10, 110) recipe, rows of 300 tokens.
# Data: python tasks.py --task=naesat --N=25 --P=275
exec(open('config/diffusion_naesat_n10_p110.py').read())
out_dir = 'out-naesat-n25-p275'
dataset = 'naesat_n25_p275'
max_iters = 4500
lr_decay_iters = 4500
eval_interval = 1500
