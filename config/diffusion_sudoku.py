# Masked diffusion on Sudoku (tasks.py): rows = puzzle (81 cells, '.' blank) then solution
# (81 cells); only the solution is masked. Puzzles of 36 givens that naked singles solve.
# Small model (3 x 96, as the NAE-SAT recipe: ~0.3 s/step on one thread, 5,000 steps in the
# 30-minute budget), the path-star recipe (PyTorch init, untied head, plain AdamW).
# Eval: puzzles solved, random vs margin order, 50 passes (tasks.task_report).
# Data: python tasks.py --task=sudoku --givens=36 --tier=naked --num_train=100000
out_dir = 'out-sudoku'
dataset = 'sudoku_g36_naked'
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
max_iters = 5000
lr_decay_iters = 5000
eval_interval = 1000
eval_iters = 5
log_interval = 100
always_save_checkpoint = True
diffusion_eval_rows = 100
