"""References that bracket every policy: persistence (repeat the last context frame), the tokenizer ceiling
(decode(encode(truth))) and the copy-oracles of memory headroom: per predicted frame, the earlier
ground-truth frame that matches it best, among all past frames or the last k (docs/benchmark.md#references).
"""

from __future__ import annotations

from typing import Sequence

import torch

from pipeline.benchmark.keys import HINDSIGHT_POLICIES
from pipeline.metrics import psnr
from pipeline.rollout.retention import BudgetPolicy

REFERENCES = ("persistence", "tokenizer_ceiling")
COPY_PSNR_CAP = 60.0  # dB: a bit-exact revisit would score 100 dB and swamp the mean


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
    """One clip's copy oracle (pixels (T, 3, H, W), the first ``n_ctx`` context): every predicted frame's
    PSNR against every earlier frame, computed once, then looked up."""

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
    """Per predicted frame, the best match among ``candidates[i]``: (its pixels (n_predict, 3, H, W), capped
    PSNRs). Several queries on one clip: :class:`CopyOracle`."""
    times, scores = CopyOracle(pixels, n_ctx).best(candidates)
    return pixels[times], scores


def memory_candidates(name: str, n_ctx: int, n_predict: int) -> list[list[int]]:
    """The frames a memory reference may copy from, per predicted frame."""
    if name == "memory_all_past":
        return [list(range(n_ctx + i)) for i in range(n_predict)]
    k = int(name.removeprefix("memory_last_"))
    return [list(range(max(0, n_ctx + i - k), n_ctx + i)) for i in range(n_predict)]


class OracleCopy(BudgetPolicy):
    """``oracle_copy``, a hindsight reference, not a policy: it reads the clip's ground truth. It keeps the
    newest frame and the frames whose ground-truth views best match the frames still to come (greedy: each
    added frame raises the summed best-copy PSNR of the remaining frames most). No causal policy sees
    what it sees; where one beats it, the model used its history otherwise than by copying views."""

    name = "oracle_copy"
    family = "hindsight"

    def __init__(self):
        self.oracle: CopyOracle | None = None

    def see_truth(self, oracle: CopyOracle) -> None:
        self.oracle = oracle

    def select(self, metas, state, budget):
        if self.oracle is None:
            raise RuntimeError("oracle_copy needs the clip's ground truth: the benchmark gives it (see_truth)")
        n = len(metas)
        times = torch.tensor([m.time for m in metas])
        table = self.oracle.table[state.step :]  # per frame still to come: PSNR against every earlier clip frame
        score = torch.stack([row[times] for row in table], dim=1).clamp(max=COPY_PSNR_CAP).tolist()  # (n, upcoming)
        chosen = [n - 1]
        covered = list(score[n - 1])
        while len(chosen) < budget:
            gains = {i: sum(max(0.0, s - c) for s, c in zip(score[i], covered)) for i in range(n) if i not in chosen}
            best = max(gains, key=lambda i: (gains[i], i))
            chosen.append(best)
            covered = [max(c, s) for c, s in zip(covered, score[best])]
        return sorted(chosen), {i: 0.0 for i in chosen}


HINDSIGHT = {cls.name: cls for cls in (OracleCopy,)}  # references that run as policies (with the clip's truth)
assert set(HINDSIGHT) == set(HINDSIGHT_POLICIES)
