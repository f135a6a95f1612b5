# SFT from pretrained GPT-2 124M (--init_from=gpt2: Hugging Face weights from the local cache,
# pretrained.py) on GSM8K chats in GPT-2 BPE with the loss on the assistant's tokens:
#   python data/chat/prepare.py --gsm8k=../shared/data/gsm8k --tokenizer=gpt2 \
#       --bpe_dir=../shared/data/gpt2_bpe --out_dir=data/chat_gsm8k_gpt2
# The architecture comes from GPT-2 (12 x 768, block 1024, biases, tanh GELU); the vocabulary
# grows from 50257 by the 4 role tags.
#   8 sequences x 8 micro-batches x 1024 = 65,536 tokens per step; 60 steps = 3.9M tokens
#   (about 3 passes over GSM8K's 7,473 training chats, ~1.3M tokens)
# Cost (python bench/recipe_cost.py): 6N FLOPs per token -> 2.9e15 FLOPs: ~7 s of one H100 at
# 40% MFU; evaluation and start-up dominate: one GPU, a few minutes.
#   python train.py config/gpt2_124m_sft_gsm8k.py
exec(open('config/gpt2_124m_common.py').read())  # no architecture: GPT-2's
out_dir = 'out-gpt2-124m-sft-gsm8k'
init_from = 'gpt2'
dataset = 'chat_gsm8k_gpt2'
objective = 'sft'
use_loss_mask = True
dropout = 0.1
batch_size = 8
gradient_accumulation_steps = 8
learning_rate = 3e-5
min_lr = 3e-6
weight_decay = 0.0
warmup_iters = 6
max_iters = 60
lr_decay_iters = 60
eval_interval = 20
eval_iters = 20
log_interval = 1
always_save_checkpoint = False
