# Masked diffusion on L&O-NAE-SAT (N, P) = (10, 110) (Kim, Shah et al. 2025, Sec. 3.3): the
# recipe of ../shared/reference/mdm_naesat_ref.py with the repo's model and trainer: 3 x 96,
# PyTorch init, untied head, plain AdamW 1e-3 (no weight decay, constant lr, no clipping),
# batch 64, t ~ U(eps, 1) i.i.d. per row, mean CE over masked tokens; unconditional generation
# (the whole row is maskable). Eval: observation accuracy of 100 samples, random vs margin
# order, 50 passes (tasks.task_report). docs/RESULTS.md "Checkable tasks".
# Data: python tasks.py --task=naesat --N=10 --P=110
out_dir = 'out-naesat-n10-p110'
dataset = 'naesat_n10_p110'
objective = 'unmasking'
device = 'cpu'
compile = False
num_threads = 1
n_layer = 3
n_head = 4
n_embd = 96
dropout = 0.0
tie_embeddings = False
emb_init_std = 1.0
linear_init = 'pytorch'
batch_size = 64
learning_rate = 1e-3
weight_decay = 0.0
decay_lr = False
warmup_iters = 0
grad_clip = 0.0
beta2 = 0.999
mask_stratified = False
max_iters = 3000
lr_decay_iters = 3000
eval_interval = 1000
eval_iters = 5
log_interval = 100
always_save_checkpoint = True
diffusion_eval_rows = 100
