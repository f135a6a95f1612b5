# Remasker for L&O-NAE-SAT (10, 110), initialised from the denoiser of
# config/diffusion_naesat_n10_p110.py (uniform wrong tokens). On-policy (that frozen
# denoiser's own drafts):
#   --remasking_denoiser=out-naesat-n10-p110/ckpt.pt --out_dir=out-remask-naesat-onpolicy
#   python bench/tasks_eval.py --denoiser=out-naesat-n10-p110/ckpt.pt \
#     --remaskers=uniform:out-remask-naesat-uniform/ckpt.pt,onpolicy:out-remask-naesat-onpolicy/ckpt.pt
exec(open('config/diffusion_naesat_n10_p110.py').read())
out_dir = 'out-remask-naesat-uniform'
objective = 'remasking'
remasking_loss_type = 'all_positions'
init_from = 'out-naesat-n10-p110/ckpt.pt'
max_iters = 1000
lr_decay_iters = 1000
eval_interval = 500
