# The earlier denoiser recipe (GPT-2 initialisation, tied head, weight decay 0.1, cosine lr, clip 1):
# on its plateau in every run; the ablation (bench/diffusion_ablation.py) starts from it.
# Masked diffusion (unmasking) on path-star G(2,5,N=50): only answer positions are masked, the
# graph and query stay visible. The reported scratch trial: 3 layers x 64, 4 heads, batch 128,
# lr 1e-3, 50k graphs, one thread. Data: python pathstar.py --mode=incontext --d=2 --l=5 --N=50
out_dir = 'out-diffusion-pathstar-d2-l5-gpt2init'
dataset = 'incontext_pathstar_d2_l5_n50'
objective = 'unmasking'
device = 'cpu'
compile = False
num_threads = 1
block_size = 32  # whole rows
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
max_iters = 15000
lr_decay_iters = 15000
eval_interval = 1000
eval_iters = 10
log_interval = 200
always_save_checkpoint = True
diffusion_eval_rows = 500
