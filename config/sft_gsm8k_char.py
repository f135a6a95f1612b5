# SFT demo, phase 2: GSM8K question -> answer chats on top of out-sft-base (README, "SFT").
# Architecture (n_layer, n_embd, block_size...) comes from the base checkpoint; the vocabulary
# grows by the characters Shakespeare lacks + 4 role tokens (data/chat/prepare.py --base_meta).
# Without the mask, for comparison: --use_loss_mask=False --out_dir=out-sft-nomask
init_from = 'out-sft-base/ckpt.pt'
out_dir = 'out-sft-mask'
dataset = 'chat_gsm8k_char'
objective = 'sft'
use_loss_mask = True
device = 'cpu'
compile = False
num_threads = 1
eval_interval = 200
eval_iters = 20
log_interval = 50
always_save_checkpoint = False
batch_size = 16
dropout = 0.0
max_iters = 800
lr_decay_iters = 800
learning_rate = 1e-3
beta2 = 0.99
warmup_iters = 50
min_lr = 1e-4
