# Remasker on character-level Shakespeare, initialised like the denoiser of
# config/diffusion_char_arinit.py from the short next-token run out-diffusion-arinit.
# On-policy corruptions (that frozen denoiser's own samples):
#   --remasking_denoiser=out-diffusion-unmasking-arinit/ckpt.pt --out_dir=out-diffusion-remask-onpolicy
exec(open('config/diffusion_char.py').read())
out_dir = 'out-diffusion-remask-random'
objective = 'remasking'
remasking_loss_type = 'all_positions'
init_from = 'out-diffusion-arinit/ckpt.pt'
max_iters = 500
lr_decay_iters = 500
eval_interval = 250
learning_rate = 1e-3
min_lr = 1e-4
warmup_iters = 50
