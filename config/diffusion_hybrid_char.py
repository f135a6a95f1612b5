# Hybrid denoiser on character-level Shakespeare (batches.Hybrid): the denoiser of
# config/diffusion_char.py, trained to draft [MASK] positions AND flag wrong tokens (target WRONG)
# in the same pass; sample with its own flags: python sample.py --out_dir=out-diffusion-hybrid
#   --mode=diffusion --remask=self
# On-policy wrong tokens (a frozen denoiser's drafts, e.g. this run's own checkpoint):
#   --hybrid_wrong_source=self --hybrid_denoiser=out-diffusion-hybrid/ckpt.pt
#   --out_dir=out-diffusion-hybrid-onpolicy
exec(open('config/diffusion_char.py').read())
out_dir = 'out-diffusion-hybrid'
objective = 'hybrid'
hybrid_wrong_frac = 0.2
hybrid_wrong_source = 'uniform'
