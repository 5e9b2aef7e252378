"""Reference predictions that are not policies; they bracket every policy's scores.

- persistence: repeat the last context frame (ground-truth pixels); a model that does not beat
  it has learned nothing about motion.
- tokenizer ceiling: decode(encode(ground truth)); no rollout can be better than what the
  tokenizer can represent.
- memory headroom, model-free (copy oracles): for each predicted frame, the earlier
  ground-truth frame that resembles it most (highest PSNR), chosen among all past frames
  (``memory_all_past``) or among the last k frames only (``memory_last_<k>``, one per finite
  budget k). All past minus last k is how much remembering older frames could be worth on this
  data, before any model is trained: a data set where it is near 0 cannot rank retention
  policies. The same oracle over the frames a policy actually kept, step by step, scores that
  policy's choices independently of the model (``memory_oracle_psnr`` of each cell).

Copy-oracle PSNRs are capped at COPY_PSNR_CAP dB: an identical frame (a bit-exact revisit)
would otherwise count as 100 dB and swamp the mean.
"""

from __future__ import annotations

from typing import Sequence

import torch

from pipeline.metrics import psnr

REFERENCES = ("persistence", "tokenizer_ceiling")
COPY_PSNR_CAP = 60.0


def persistence(context_pixels: torch.Tensor, n_predict: int) -> torch.Tensor:
    """(n_predict, 3, H, W): the last context frame, repeated."""
    return context_pixels[-1:].expand(n_predict, *context_pixels.shape[1:]).clone()


@torch.no_grad()
def tokenizer_ceiling(host, target_pixels: torch.Tensor) -> torch.Tensor:
    """(T, 3, H, W): the target frames through the host's encoder and decoder."""
    return host.decode(host.encode(target_pixels)).to(target_pixels.device)


def memory_reference_names(budgets: dict[str, int | None]) -> list[str]:
    """``memory_all_past`` and ``memory_last_<k>`` for each finite budget k, largest first."""
    sizes = sorted({k for k in budgets.values() if k is not None}, reverse=True)
    return ["memory_all_past", *(f"memory_last_{k}" for k in sizes)]


class CopyOracle:
    """The copy oracle of one clip (pixels (T, 3, H, W), the first ``n_ctx`` context): the PSNR of
    every predicted frame against every earlier frame, computed once, so that the memory
    references and every rollout's ``memory_oracle_psnr`` only look values up."""

    def __init__(self, pixels: torch.Tensor, n_ctx: int):
        self.pixels = pixels
        # per predicted frame t = n_ctx + i: (t,) PSNRs against frames 0..t-1
        self.table = [psnr(pixels[:t], pixels[t].expand(t, *pixels.shape[1:])) for t in range(n_ctx, len(pixels))]

    def best(self, candidates: Sequence[Sequence[int]]) -> tuple[list[int], list[float]]:
        """For each predicted frame i, the frame among ``candidates[i]`` (clip times before it)
        that matches it best: (their times, their capped PSNRs)."""
        times, scores = [], []
        for row, allowed in zip(self.table, candidates, strict=True):
            values = row[list(allowed)]
            best = int(values.argmax())
            times.append(allowed[best])
            scores.append(min(float(values[best]), COPY_PSNR_CAP))
        return times, scores


def copy_oracle(pixels: torch.Tensor, n_ctx: int, candidates: Sequence[Sequence[int]]) -> tuple[torch.Tensor, list[float]]:
    """For each predicted frame t = n_ctx + i of a clip (pixels (T, 3, H, W)), the frame among
    ``candidates[i]`` (clip times before t) that matches it best: (its pixels (n_predict, 3, H, W),
    their capped PSNRs). One clip's several queries: :class:`CopyOracle`."""
    times, scores = CopyOracle(pixels, n_ctx).best(candidates)
    return pixels[times], scores


def memory_candidates(name: str, n_ctx: int, n_predict: int) -> list[list[int]]:
    """The frames a memory reference may copy from, per predicted frame."""
    if name == "memory_all_past":
        return [list(range(n_ctx + i)) for i in range(n_predict)]
    k = int(name.removeprefix("memory_last_"))
    return [list(range(max(0, n_ctx + i - k), n_ctx + i)) for i in range(n_predict)]
