# GPT-2 124M, next-token, on web text shards (data/webtext/prepare.py: FineWeb / OpenWebText
# style) from scratch: nanoGPT's train_gpt2.py shapes (batch and schedule: gpt2_124m_common.py).
#   12 x 768, block 1024, no biases; 491,520 tokens per step, 20,000 steps = 9.8B tokens
# Cost (python bench/recipe_cost.py): 6N FLOPs per token, N = 123.6M -> 7.3e18 FLOPs; at 40% MFU
# of an H100 (989 TFLOP/s bf16 dense) that is ~38 min on 8 H100s (one node), ~5.1 h on one.
#   torchrun --standalone --nproc_per_node=8 train.py config/gpt2_124m_webtext.py
exec(open('config/gpt2_124m_common.py').read())
out_dir = 'out-gpt2-124m-webtext'
objective = 'next_token'
n_layer = 12
n_head = 12
n_embd = 768
bias = False
