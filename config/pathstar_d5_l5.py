# Path-star G(d=5, l=5, N=50), teacher forcing: Clever-Hans, 1/5
# (README "Path-star"). Data: python pathstar.py --mode=incontext --d=5 --l=5 --N=50
# 3000 iterations, warmup 200: with 1500-2500 iterations (warmup 100) the model never learned
# to follow edges (0.000); here it leaves its plateau by iteration 1500 (seed 1337; the escape
# is seed-dependent, README "The Clever-Hans demo").
out_dir = 'out-pathstar-d5-l5'
dataset = 'incontext_pathstar_d5_l5_n50'
objective = 'pathstar'
device = 'cpu'
compile = False
num_threads = 1
block_size = 67  # row length 68 - 1
n_layer = 3
n_head = 4
n_embd = 64
dropout = 0.0
batch_size = 128
learning_rate = 1e-3
min_lr = 1e-4
beta2 = 0.99
weight_decay = 0.1
warmup_iters = 200
max_iters = 3000
lr_decay_iters = 3000
eval_interval = 500
eval_iters = 10
log_interval = 100
always_save_checkpoint = True
pathstar_eval_rows = 500
