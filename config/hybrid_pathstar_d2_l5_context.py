# The hybrid of config/hybrid_pathstar_d2_l5.py with plausible wrong tokens: each drawn from the
# row's prompt (another node of the graph; among them the other arm's node at the same depth, the
# one wrong decision a planner makes) instead of uniform over the vocabulary (mostly nodes the
# graph does not have, which the uniform-trained model flags but the planner's error it does not:
# docs/RESULTS.md "Path-star: forcing a wrong first decision"). For the revision test:
#   python bench/pathstar_revision.py --hybrid=out-hybrid-pathstar-d2-l5-context/ckpt.pt
# Data: python pathstar.py --mode=incontext --d=2 --l=5 --N=50
exec(open('config/hybrid_pathstar_d2_l5.py').read())
out_dir = 'out-hybrid-pathstar-d2-l5-context'
hybrid_wrong_source = 'context'
