"""Reference predictions that are not policies; they bracket every policy's scores.

- persistence: repeat the last context frame (ground-truth pixels); a model that does not beat
  it has learned nothing about motion.
- tokenizer ceiling: decode(encode(ground truth)); no rollout can be better than what the
  tokenizer can represent.
"""

from __future__ import annotations

import torch

REFERENCES = ("persistence", "tokenizer_ceiling")


def persistence(context_pixels: torch.Tensor, n_predict: int) -> torch.Tensor:
    """(n_predict, 3, H, W): the last context frame, repeated."""
    return context_pixels[-1:].expand(n_predict, *context_pixels.shape[1:]).clone()


@torch.no_grad()
def tokenizer_ceiling(host, target_pixels: torch.Tensor) -> torch.Tensor:
    """(T, 3, H, W): the target frames through the host's encoder and decoder."""
    return host.decode(host.encode(target_pixels)).to(target_pixels.device)
