# The training shape shared by the gpt2_124m_* recipes (each one execs this file): nanoGPT's
# train_gpt2.py batch, optimiser and schedule, on the web text shards of data/webtext/prepare.py.
# No architecture keys here: a recipe from scratch sets them (gpt2_124m_webtext.py), a recipe
# from GPT-2 weights (--init_from=gpt2) takes GPT-2's (setting them would contradict it).
#   12 sequences x 1024 tokens x 40 micro-batches = 491,520 tokens per step
#   20,000 steps = 9.8B tokens (about one pass over FineWeb sample-10BT); nanoGPT's OpenWebText
#   run is 600,000 steps (295B tokens, 30x this)
dataset = 'webtext'
block_size = 1024
dropout = 0.0
batch_size = 12
gradient_accumulation_steps = 5 * 8  # all ranks together: 5 per GPU on 8 GPUs
learning_rate = 6e-4
min_lr = 6e-5
weight_decay = 1e-1
beta1 = 0.9
beta2 = 0.95
grad_clip = 1.0
warmup_iters = 700
max_iters = 20000
lr_decay_iters = 20000
eval_interval = 1000
eval_iters = 200
log_interval = 10
