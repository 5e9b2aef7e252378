"""Running the benchmark: every rollout of every cell, scored per frame.

For every workload (context -> predict) x budget x policy x mode x clip x seed, the
policy-managed loop (``pipeline.rollout.loop``) generates latents, the host decodes them and
PSNR / SSIM / LPIPS are measured per frame against the ground truth. The sampling noise of a
(seed, clip) pair is the same for every policy, budget and mode, so their scores are paired
comparisons. Budgets run largest first: a rollout whose history never reached a smaller budget
is that budget's rollout too, and is reused (see :func:`unchanged_under`).
"""

from __future__ import annotations

import itertools
import math
import time
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Callable, Iterable, Iterator

import numpy as np
import torch
from tqdm import tqdm

from pipeline.benchmark.clips import Clip
from pipeline.benchmark.references import (
    REFERENCES,
    copy_oracle,
    memory_candidates,
    memory_reference_names,
    persistence,
    tokenizer_ceiling,
)
from pipeline.benchmark.validate import load_policies
from pipeline.rollout.loop import run_rollout

METRIC_NAMES = ("psnr", "ssim", "lpips")


@dataclass
class Cell:
    """One rollout configuration: the key of a metrics entry."""

    workload: str
    budget: str
    policy: str
    mode: str


@dataclass
class RolloutRecord:
    cell: Cell
    clip: int
    seed: int
    per_frame: dict[str, list[float]]  # metric -> value per predicted frame
    n_predict: int
    seconds: float
    policy_seconds: float
    peak_retained_bytes: int
    kept_per_step: list[int]
    pixels: torch.Tensor | None = None  # decoded prediction, kept for the media clips
    reused: bool = False  # identical to the rollout under a larger budget (see unchanged_under)


@dataclass
class BenchmarkRun:
    records: list[RolloutRecord] = field(default_factory=list)
    references: dict[str, dict[str, dict[str, list[list[float]]]]] = field(default_factory=dict)
    # workload -> reference -> metric -> per clip, per frame
    reference_pixels: dict[str, dict[str, list[torch.Tensor]]] = field(default_factory=dict)
    clips: dict[str, list[Clip]] = field(default_factory=dict)
    budgets: dict[str, int | None] = field(default_factory=dict)  # name -> max_frames, in the params' order
    seconds: float = 0.0

    @property
    def budget_order(self) -> list[str]:  # as in params (runs go largest first)
        return list(self.budgets)


class Scorer:
    """PSNR / SSIM / LPIPS per frame of a prediction vs its ground truth (pixels in [0, 1])."""

    def __init__(self, device: torch.device | str = "cpu"):
        from pipeline.metrics import LPIPS

        self.lpips = LPIPS().to(device)

    @torch.no_grad()
    def __call__(self, pred: torch.Tensor, target: torch.Tensor) -> dict[str, list[float]]:
        from pipeline.metrics import video_metrics

        values = video_metrics(pred[None].cpu(), target[None].cpu(), self.lpips)
        return {k: [float(x) for x in values[k][0]] for k in METRIC_NAMES}


def sampling_generator(seed: int, sample_seed: int, clip: int) -> torch.Generator:
    """The noise of one (seed, clip) pair, identical for every policy, budget and mode."""
    state = np.random.SeedSequence([seed, sample_seed, clip]).generate_state(1)[0]
    return torch.Generator().manual_seed(int(state))


def unchanged_under(policy, larger: RolloutRecord, max_frames: int | None) -> bool:
    """A rollout whose history never exceeded ``max_frames`` is, under that budget, the same
    rollout exactly (same plans, nothing cut, same noise) -- if the policy's decisions do not
    read the budget. Baselines declare ``uses_budget_state = False``; other policies are assumed
    to read it and are always rerun."""
    if getattr(policy, "uses_budget_state", True):
        return False
    return max_frames is None or max(larger.kept_per_step) <= max_frames


def largest_first(budgets: dict[str, int | None]) -> list[tuple[str, int | None]]:
    """(name, max_frames) from unlimited down, so a smaller budget can reuse a larger one's rollout."""
    return sorted(budgets.items(), key=lambda kv: -math.inf if kv[1] is None else -kv[1])


def budget_rollouts(policy, cell: Cell, budgets: dict[str, int | None],
                    rollout: Callable[[Cell, int | None], RolloutRecord]) -> Iterator[RolloutRecord]:
    """The records of one (workload, policy, mode, clip, seed) under every budget, largest first:
    ``rollout(cell, max_frames)`` runs one, unless the last one is also this budget's rollout."""
    previous: RolloutRecord | None = None
    for budget, max_frames in largest_first(budgets):
        budget_cell = replace(cell, budget=budget)
        if previous is not None and unchanged_under(policy, previous, max_frames):
            record = replace(previous, cell=budget_cell, reused=True)
        else:
            record = rollout(budget_cell, max_frames)
        yield record
        previous = record


def run_benchmark(host, bench, clips: dict[str, list[Clip]], *, seed: int, policies: Iterable[str] | None = None,
                  budgets: dict[str, int | None] | None = None, modes: Iterable[str] | None = None,
                  media_clips: int = 0, scorer: Scorer | None = None, progress: bool = True) -> BenchmarkRun:
    """All rollouts of ``bench`` (BenchmarkParams) on ``clips`` (workload -> clips).

    ``policies``/``budgets``/``modes`` default to those of ``bench``; ``media_clips`` first
    clips keep their decoded pixels for the report videos.
    """
    loaded = load_policies(list(policies if policies is not None else bench.policies))
    budgets = dict(budgets if budgets is not None else bench.budgets)
    modes = list(modes if modes is not None else bench.modes)
    scorer = scorer or Scorer()
    run = BenchmarkRun(clips=clips, budgets=budgets)
    start = time.perf_counter()
    total = sum(len(c) for c in clips.values()) * len(bench.seeds) * len(budgets) * len(loaded) * len(modes)
    with tqdm(total=total, desc="benchmark rollouts", unit="rollout", disable=not progress) as bar:  # closed on errors too
        for workload, wclips in clips.items():
            n_ctx, n_pred = bench.workloads[workload].context, bench.workloads[workload].predict
            for ci, clip in enumerate(wclips):
                _score_references(run, host, scorer, workload, clip, n_ctx, keep_pixels=ci < media_clips,
                                  memory=memory_reference_names(budgets))
                context = clip.context_latents if clip.context_latents is not None else host.encode(clip.pixels[:n_ctx])
                context = context.to(getattr(host, "device", "cpu"))
                for sample_seed, policy, mode in itertools.product(bench.seeds, loaded, modes):
                    rollout = partial(_rollout, host, policy, scorer, clip, ci, seed, sample_seed, context, n_pred,
                                      keep_pixels=ci < media_clips and sample_seed == bench.seeds[0],
                                      protocol=bench.protocol)
                    for record in budget_rollouts(policy, Cell(workload, "", policy.name, mode), budgets, rollout):
                        run.records.append(record)
                        bar.update()
    run.seconds = time.perf_counter() - start
    return run


def _rollout(host, policy, scorer: Scorer, clip: Clip, ci: int, seed: int, sample_seed: int, context: torch.Tensor,
             n_pred: int, cell: Cell, max_frames: int | None, keep_pixels: bool, protocol: str) -> RolloutRecord:
    """One rollout of ``policy`` on clip ``ci``, decoded and scored against the clip's ground truth."""
    result = run_rollout(host, policy, context, n_pred, max_frames=max_frames, mode=cell.mode,
                         generator=sampling_generator(seed, sample_seed, ci), actions=clip.actions,
                         poses=clip.poses, protocol=protocol)
    pred = host.decode(result.generated).cpu()
    per_frame = scorer(pred, clip.pixels[len(context):])
    per_frame["memory_oracle_psnr"] = copy_oracle(clip.pixels, len(context), result.history_per_step)[1]
    return RolloutRecord(
        cell=cell, clip=ci, seed=sample_seed, per_frame=per_frame,
        n_predict=n_pred, seconds=result.seconds, policy_seconds=result.policy_seconds,
        peak_retained_bytes=result.peak_retained_bytes, kept_per_step=result.kept_per_step,
        pixels=pred if keep_pixels else None,
    )


def _score_references(run: BenchmarkRun, host, scorer: Scorer, workload: str, clip: Clip, n_ctx: int,
                      keep_pixels: bool, memory: list[str]) -> None:
    """Persistence, the tokenizer ceiling and the copy oracles of one clip (their PSNR capped,
    see pipeline.benchmark.references)."""
    target = clip.pixels[n_ctx:]
    names = [*REFERENCES, *memory]
    refs = run.references.setdefault(workload, {r: {m: [] for m in METRIC_NAMES} for r in names})
    pixels = run.reference_pixels.setdefault(workload, {r: [] for r in names})
    predictions = {"persistence": (persistence(clip.pixels[:n_ctx], len(target)), None),
                   "tokenizer_ceiling": (tokenizer_ceiling(host, target).cpu(), None)}
    for name in memory:
        predictions[name] = copy_oracle(clip.pixels, n_ctx, memory_candidates(name, n_ctx, len(target)))
    for name, (pred, capped_psnr) in predictions.items():
        for metric, values in scorer(pred, target).items():
            refs[name][metric].append(capped_psnr if metric == "psnr" and capped_psnr is not None else values)
        if keep_pixels:
            pixels[name].append(pred)
