# Denoiser initialised from a short next-token run (out-diffusion-arinit, seed 7: NOT the judge),
# made bidirectional: it starts with useful embeddings and attention instead of a long plateau at
# the unigram loss (README "Masked diffusion").
exec(open('config/diffusion_char.py').read())
out_dir = 'out-diffusion-unmasking-arinit'
init_from = 'out-diffusion-arinit/ckpt.pt'
max_iters = 1500
lr_decay_iters = 1500
learning_rate = 1e-3
min_lr = 1e-4
warmup_iters = 50
