# GPT-2 124M shape as a SEP-varlen masked LM (bidirectional, objective mlm, README "SEP-varlen
# masked LM") on the web text shards, from scratch: samples start at a line start and pack whole
# lines, ending in [SEP] (on a split of several shards: see batches.MaskedLM, line starts are
# found in each drawn window instead of indexed up front). BERT's 15% / 80-10-10 corruption.
#   12 x 768, block 1024, 491,520 tokens per step (15% of them supervised), 20,000 steps
# Cost (python bench/recipe_cost.py): the forward/backward is over every position, so 6N per
# token as next-token: 7.3e18 FLOPs, ~38 min on 8 H100s at 40% MFU.
#   torchrun --standalone --nproc_per_node=8 train.py config/gpt2_124m_mlm.py
exec(open('config/gpt2_124m_webtext.py').read())
out_dir = 'out-gpt2-124m-mlm'
objective = 'mlm'
mlm_packing = 'sep'
mlm_probability = 0.15
learning_rate = 6e-4
min_lr = 6e-5
