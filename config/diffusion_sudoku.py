# Masked diffusion on Sudoku (tasks.py): rows = puzzle (81 cells, '.' blank) then solution
# (81 cells); only the solution is masked. Puzzles of 36 givens that naked singles solve.
# Small model (3 x 96, as the NAE-SAT recipe), the path-star recipe (PyTorch init, untied head,
# plain AdamW). 3,000 steps: ~0.45 s/step on a free thread, 0.73 with both cores busy (~37 min);
# the loss leaves ln 9 at ~400 steps, margin order solves 13 / 62 / 86 % of 100 val puzzles at
# 1,000 / 2,000 / 3,000 steps (seed 1337).
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
max_iters = 3000
lr_decay_iters = 3000
eval_interval = 1000
eval_iters = 5
log_interval = 100
always_save_checkpoint = True
diffusion_eval_rows = 100
