# Path-star G(d=2, l=5, N=50), teacher forcing, forward targets: the Clever-Hans failure
# (README "Path-star"). Data: python pathstar.py --mode=incontext --d=2 --l=5 --N=50
out_dir = 'out-pathstar-d2-l5'
dataset = 'incontext_pathstar_d2_l5_n50'
objective = 'pathstar'
device = 'cpu'
compile = False
num_threads = 1
block_size = 31  # row length 32 - 1
n_layer = 3
n_head = 4
n_embd = 64
dropout = 0.0
batch_size = 128
learning_rate = 1e-3
min_lr = 1e-4
beta2 = 0.99
weight_decay = 0.1
warmup_iters = 100
max_iters = 1500
lr_decay_iters = 1500
eval_interval = 500
eval_iters = 10
log_interval = 100
always_save_checkpoint = True
pathstar_eval_rows = 500
