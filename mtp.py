"""
Self-speculative greedy decoding with multi-token heads (blockwise parallel decoding, Stern
et al. 2018; Gloeckle et al. 2024). Each forward pass both *verifies* the drafts of the previous
pass (head 1 must agree) and *drafts* the next k-1 tokens with heads 2..k, so the output equals
plain greedy decoding with head 1 while using fewer forward passes when drafts are accepted.
"""

import torch


@torch.no_grad()
def speculative_generate(model, idx, max_new_tokens):
    """idx (1, T0) -> (tokens (1, T0 + max_new_tokens), stats dict). Greedy only."""
    assert idx.size(0) == 1, "speculative decoding here works on one sequence at a time"
    k, T0 = model.config.n_future, idx.size(1)
    seq, drafts = idx, []
    proposed = accepted = nfe = 0
    while seq.size(1) - T0 < max_new_tokens:
        inp = torch.cat([seq, seq.new_tensor(drafts)[None]], 1) if drafts else seq
        off = max(0, inp.size(1) - model.config.block_size)  # crop to the context window
        h, attn = model.trunk(inp[:, off:])
        logits = model.head_logits(h, attn)[:, 0]  # (k, T, V)
        nfe += 1
        n0 = seq.size(1) - off
        greedy = logits[0, n0 - 1 :].argmax(-1).tolist()  # head 1's token for n0, n0+1, ...
        n_ok = 0
        while n_ok < len(drafts) and drafts[n_ok] == greedy[n_ok]:
            n_ok += 1
        proposed, accepted = proposed + len(drafts), accepted + n_ok
        new = drafts[:n_ok] + [greedy[n_ok]]
        pos = n0 - 1 + n_ok  # head i at pos predicts pos + i; head 1 gave greedy[n_ok]
        drafts = [int(logits[i, pos].argmax()) for i in range(1, k)]
        seq = torch.cat([seq, seq.new_tensor(new)[None]], 1)
    stats = {
        'nfe': nfe,
        'proposed': proposed,
        'accepted': accepted,
        'acceptance_rate': accepted / max(proposed, 1),
        'tokens_per_forward': max_new_tokens / max(nfe, 1),
    }
    return seq[:, : T0 + max_new_tokens], stats
