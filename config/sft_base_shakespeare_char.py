# SFT demo, phase 1: a small character-level base model on tiny Shakespeare (README, "SFT").
# Its block_size (256) bounds the SFT context; phase 2 takes the architecture from its checkpoint.
out_dir = 'out-sft-base'
dataset = 'shakespeare_char'
objective = 'next_token'
device = 'cpu'
compile = False
num_threads = 1
eval_interval = 300
eval_iters = 20
log_interval = 50
always_save_checkpoint = False
block_size = 256
batch_size = 16
n_layer = 4
n_head = 4
n_embd = 128
dropout = 0.0
max_iters = 600  # the cosine schedule is laid out for 1200; stopped at 600 for the CPU budget
lr_decay_iters = 1200
learning_rate = 1e-3
beta2 = 0.99
warmup_iters = 100
min_lr = 1e-4
