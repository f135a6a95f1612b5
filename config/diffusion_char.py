# Masked-diffusion denoiser on character-level Shakespeare (README "Masked diffusion").
# Remasker: --objective=remasking --remasking_loss_type=all_positions|corrupted_only
#           [--remasking_denoiser=out-diffusion-unmasking/ckpt.pt  (on-policy corruptions)]
out_dir = 'out-diffusion-unmasking'
dataset = 'shakespeare_char'
objective = 'unmasking'
device = 'cpu'
compile = False
eval_interval = 500
eval_iters = 20
log_interval = 100
always_save_checkpoint = True
block_size = 64
batch_size = 32
n_layer = 4
n_head = 4
n_embd = 128
max_iters = 2000
lr_decay_iters = 2000
dropout = 0.0
learning_rate = 2e-3
beta2 = 0.99
warmup_iters = 100
min_lr = 2e-4
num_threads = 1
