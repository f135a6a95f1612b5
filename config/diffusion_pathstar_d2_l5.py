# Masked diffusion (unmasking) on path-star G(2,5,N=50): only the answer is masked, the graph and
# query stay visible; decoded with confidence order it solves the task (docs/RESULTS.md, "Masked
# diffusion on path-star": the sweep, the ablation and the seed tables). What makes it leave the
# plateau: PyTorch's initialisation (N(0,1) embeddings, Kaiming-uniform Linears) with an untied
# head, and plain AdamW (no weight decay, constant lr, no clipping, beta2 0.999). Width 128
# (issue 22): solved within 3,000 steps for 3 of 5 seeds, the default among them (width 64:
# 5,000-14,000 steps at lr 1e-3, 2 of 4 within 3,000 at lr 3e-3); it costs ~3x per step.
# Data: python pathstar.py --mode=incontext --d=2 --l=5 --N=50
out_dir = 'out-diffusion-pathstar-d2-l5'
dataset = 'incontext_pathstar_d2_l5_n50'
objective = 'unmasking'
device = 'cpu'
compile = False
num_threads = 1
block_size = 32  # whole rows
n_layer = 3
n_head = 4
n_embd = 128  # the residual stream: 64 sits on the plateau 2-5x longer
dropout = 0.0
tie_embeddings = False
emb_init_std = 1.0
linear_init = 'pytorch'
batch_size = 128
learning_rate = 1e-3  # at width 128, 2e-3 and 3e-3 were still on the plateau at 1,500 (seed 3)
weight_decay = 0.0
decay_lr = False
warmup_iters = 0
grad_clip = 0.0
beta2 = 0.999
max_iters = 3000
lr_decay_iters = 3000
eval_interval = 500
eval_iters = 10
log_interval = 200
always_save_checkpoint = True
diffusion_eval_rows = 500
