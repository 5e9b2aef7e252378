"""Running the benchmark: every rollout of workload x budget x policy x mode x clip x seed, scored per frame.

A (seed, clip) pair's noise is shared by every policy, budget and mode, so scores are paired; budgets run
largest first and reuse unchanged rollouts, and under no budget every policy that then keeps every frame
shares one rollout; neither rollouts nor scores depend on the batch size or the
process count (docs/statistics.md#what-a-number-depends-on).
"""

from __future__ import annotations

import copy
import itertools
import math
import time
from dataclasses import dataclass, field, replace
from typing import Callable, Iterable

import numpy as np
import torch
from tqdm import tqdm

from pipeline.benchmark.clips import Clip
from pipeline.benchmark.references import (
    REFERENCES,
    CopyOracle,
    memory_candidates,
    memory_reference_names,
    persistence,
    tokenizer_ceiling,
)
from pipeline.benchmark.revisits import RETURN_GAP, earlier_generated
from pipeline.benchmark.validate import load_policies
from pipeline.metrics import psnr
from pipeline.rollout.loop import run_rollouts
from pipeline.rollout.policies import FullHistory
from pipeline.rollout.retention import BudgetPolicy

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
    reused: bool = False  # identical to another policy's or budget's rollout (keeps_everything, unchanged_under)
    order: tuple = ()  # where one process running the whole benchmark lists it (see merge_runs)


@dataclass
class BenchmarkRun:
    records: list[RolloutRecord] = field(default_factory=list)
    references: dict[str, dict[str, dict[str, list[list[float]]]]] = field(default_factory=dict)
    # workload -> reference -> metric -> per clip, per frame
    reference_pixels: dict[str, dict[str, list[torch.Tensor]]] = field(default_factory=dict)
    clips: dict[str, list[Clip]] = field(default_factory=dict)
    budgets: dict[str, int | None] = field(default_factory=dict)  # name -> max_frames, in the params' order
    seconds: float = 0.0
    clip_references: dict[tuple[int, int], tuple[str, dict, dict]] = field(default_factory=dict)
    # (workload index, clip) -> (workload, reference -> metric -> per frame, reference -> pixels)
    return_gaps: dict[str, int] = field(default_factory=dict)  # workload -> frames since seen that make a return

    def share(self) -> dict:
        """What another process needs to merge this run (not the clips, which every process has)."""
        return {"records": self.records, "clip_references": self.clip_references, "seconds": self.seconds}

    def assemble(self) -> "BenchmarkRun":
        """Records and references in the order one process running everything would give them."""
        self.records.sort(key=lambda r: r.order)
        self.references, self.reference_pixels = {}, {}
        for key in sorted(self.clip_references):
            workload, values, pixels = self.clip_references[key]
            refs = self.references.setdefault(workload, {r: {m: [] for m in METRIC_NAMES} for r in values})
            kept = self.reference_pixels.setdefault(workload, {r: [] for r in values})
            for name, metrics in values.items():
                for metric, v in metrics.items():
                    refs[name][metric].append(v)
                if name in pixels:
                    kept[name].append(pixels[name])
        return self

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


SCORE_CHUNK = 64  # frames per decoder and LPIPS call of FrameScorer (video_metrics' slice)


class FrameScorer:
    """Decodes and scores rollouts' frames in chunks of exactly ``chunk`` frames across rollouts (the last
    padded), so a frame's numbers never depend on its chunk-mates: conv kernels are picked by batch size.
    ``put(latents, target, done)`` queues a rollout; ``done(pixels, scores)`` runs once it is scored."""

    def __init__(self, host, scorer: Scorer, chunk: int = SCORE_CHUNK):
        self.host, self.scorer, self.chunk = host, scorer, chunk
        self.queue: list[tuple[dict, int]] = []  # (rollout entry, frame index), in order

    def put(self, latents: torch.Tensor, target: torch.Tensor,
            done: Callable[[torch.Tensor, dict[str, list[float]]], None]) -> None:
        n = len(latents)
        entry = {"latents": latents, "target": target, "done": done, "left": n, "pixels": [None] * n,
                 "scores": {m: [0.0] * n for m in METRIC_NAMES}}
        self.queue.extend((entry, i) for i in range(n))
        while len(self.queue) >= self.chunk:
            self._run(self.queue[: self.chunk])
            self.queue = self.queue[self.chunk :]

    def flush(self) -> None:
        if self.queue:
            self._run(self.queue + [self.queue[-1]] * (self.chunk - len(self.queue)), real=len(self.queue))
            self.queue = []

    @torch.no_grad()
    def _run(self, frames: list[tuple[dict, int]], real: int | None = None) -> None:
        latents = torch.stack([e["latents"][i] for e, i in frames])
        target = torch.stack([e["target"][i] for e, i in frames])
        pixels = self.host.decode(latents).cpu()
        scores = self.scorer(pixels, target)
        for j, (entry, i) in enumerate(frames[:real]):
            entry["pixels"][i] = pixels[j]
            for m in METRIC_NAMES:
                entry["scores"][m][i] = scores[m][j]
            entry["left"] -= 1
            if entry["left"] == 0:
                entry["done"](torch.stack(entry["pixels"]), entry["scores"])


def sampling_generator(seed: int, sample_seed: int, clip: int) -> torch.Generator:
    """The noise of one (seed, clip) pair, identical for every policy, budget and mode."""
    state = np.random.SeedSequence([seed, sample_seed, clip]).generate_state(1)[0]
    return torch.Generator().manual_seed(int(state))


def unchanged_under(policy, larger: RolloutRecord, max_frames: int | None) -> bool:
    """Whether ``larger``'s rollout is this budget's too: its history never exceeded ``max_frames`` and the
    policy does not read the budget (``uses_budget_state = False``; others are always rerun)."""
    if getattr(policy, "uses_budget_state", True):
        return False
    return max_frames is None or max(larger.kept_per_step) <= max_frames


def keeps_everything(policy, max_frames: int | None) -> bool:
    """Whether ``policy`` keeps every frame under this budget by construction, so that its rollout is
    ``full_history``'s: under no budget, full_history's rule and :class:`BudgetPolicy`'s (keep all that
    fit) do. A subclass that replaces that rule is not assumed to, and runs its own rollouts."""
    rule = type(policy).build_temporal_cache_plan
    return max_frames is None and rule in (FullHistory.build_temporal_cache_plan, BudgetPolicy.build_temporal_cache_plan)


def largest_first(budgets: dict[str, int | None]) -> list[tuple[str, int | None]]:
    """(name, max_frames) from unlimited down, so a smaller budget can reuse a larger one's rollout."""
    return sorted(budgets.items(), key=lambda kv: -math.inf if kv[1] is None else -kv[1])


def batches(items: list, size: int) -> list[list]:
    """``items`` in consecutive groups of at most ``size``."""
    return [items[i : i + size] for i in range(0, len(items), size)]


def run_benchmark(host, bench, clips: dict[str, list[Clip]], *, seed: int, policies: Iterable[str] | None = None,
                  budgets: dict[str, int | None] | None = None, modes: Iterable[str] | None = None,
                  media_clips: int = 0, scorer: Scorer | None = None, progress: bool = True,
                  batch_size: int | None = None, shard: tuple[int, int] = (0, 1)) -> BenchmarkRun:
    """All rollouts of ``bench`` on ``clips`` (workload -> clips); policies, budgets, modes and batch size
    default to ``bench``'s. The first ``media_clips`` clips keep their pixels; ``shard`` (rank, world)
    runs the clips ``clip % world == rank`` (:func:`merge_runs`)."""
    specs = list(policies if policies is not None else bench.policies)
    loaded = load_policies(specs)
    budgets = dict(budgets if budgets is not None else bench.budgets)
    modes = list(modes if modes is not None else bench.modes)
    batch_size = batch_size or getattr(bench, "batch_size", 1)
    scorer = scorer or Scorer()
    rank, world = shard
    run = BenchmarkRun(clips=clips, budgets=budgets, return_gaps=return_gaps(bench, clips))
    frames = FrameScorer(host, scorer)
    reuses: list[tuple[RolloutRecord, RolloutRecord]] = []
    start = time.perf_counter()
    mine = {w: [ci for ci in range(len(c)) if ci % world == rank] for w, c in clips.items()}
    # a workload's own policy subset applies to the params' policies; policies passed in run everywhere
    runs_on = {w: [p for spec, p in zip(specs, loaded)
                   if policies is not None or bench.workloads[w].policies is None or spec in bench.workloads[w].policies]
               for w in clips}
    total = sum(len(mine[w]) * len(runs_on[w]) for w in clips) * len(bench.seeds) * len(budgets) * len(modes)
    order = {name: i for i, (name, _) in enumerate(largest_first(budgets))}
    with tqdm(total=total, desc="benchmark rollouts", unit="rollout", disable=not progress) as bar:  # closed on errors too
        for wi, (workload, wclips) in enumerate(clips.items()):
            n_ctx, n_pred = bench.workloads[workload].context, bench.workloads[workload].predict
            contexts, oracles = {}, {}
            for ci in mine[workload]:
                clip = wclips[ci]
                oracles[ci] = CopyOracle(clip.pixels, n_ctx)
                _score_references(run, host, scorer, wi, workload, clip, ci, n_ctx, oracles[ci],
                                  keep_pixels=ci < media_clips, memory=memory_reference_names(budgets))
                context = clip.context_latents if clip.context_latents is not None else host.encode(clip.pixels[:n_ctx])
                contexts[ci] = context.to(getattr(host, "device", "cpu"))
            for group in batches(mine[workload], batch_size):
                keeping_all: dict[tuple[int, int, int], RolloutRecord] = {}  # (seed, mode, clip) -> the shared rollout
                for (si, sample_seed), (pi, policy), (mi, mode) in itertools.product(
                        enumerate(bench.seeds), enumerate(runs_on[workload]), enumerate(modes)):
                    previous: dict[int, RolloutRecord] = {}
                    for budget, max_frames in largest_first(budgets):
                        cell = Cell(workload, budget, policy.name, mode)
                        shared = keeps_everything(policy, max_frames)
                        if shared:  # under no budget: the rollout every policy that keeps everything shares
                            reusable = {ci: keeping_all[si, mi, ci] for ci in group if (si, mi, ci) in keeping_all}
                        else:  # this policy's rollout under a larger budget, where it is this budget's too
                            reusable = {ci: r for ci, r in previous.items() if unchanged_under(policy, r, max_frames)}
                        rerun = [ci for ci in group if ci not in reusable]
                        media = {ci for ci in rerun if ci < media_clips and si == 0}
                        fresh = _rollouts(host, policy, frames, wclips, rerun, seed, sample_seed, contexts, oracles,
                                          n_pred, cell, max_frames, media, protocol=bench.protocol)
                        for ci in group:
                            if ci in fresh:
                                record = fresh[ci]
                            else:
                                record = replace(reusable[ci], cell=cell, reused=True)
                                reuses.append((record, reusable[ci]))
                            record.order = (wi, ci, si, pi, mi, order[budget])
                            run.records.append(record)
                            previous[ci] = record
                            if shared:
                                keeping_all.setdefault((si, mi, ci), record)
                            bar.update()
    frames.flush()
    for record, source in reuses:  # the source's pixels came with its scores
        record.pixels = source.pixels
    run.seconds = time.perf_counter() - start
    return run.assemble()


def return_gaps(bench, clips) -> dict[str, int]:
    """Per workload: how long ago a predicted frame's view must have been seen for it to count as a return."""
    return {w: bench.workloads[w].revisit_gap or RETURN_GAP for w in clips}


def merge_runs(shares: list[dict], clips: dict[str, list[Clip]], budgets: dict[str, int | None],
               bench=None) -> BenchmarkRun:
    """Several processes' shares (:meth:`BenchmarkRun.share`) as one run, in one process's order; seconds
    are the slowest share's."""
    run = BenchmarkRun(clips=clips, budgets=dict(budgets), seconds=max(s["seconds"] for s in shares),
                       return_gaps={} if bench is None else return_gaps(bench, clips))
    for share in shares:
        run.records.extend(share["records"])
        run.clip_references.update(share["clip_references"])
    return run.assemble()


def _rollouts(host, policy, frames: FrameScorer, clips: list[Clip], rows: list[int], seed: int, sample_seed: int,
              contexts: dict[int, torch.Tensor], oracles: dict[int, CopyOracle], n_pred: int, cell: Cell,
              max_frames: int | None,
              media: set[int], protocol: str) -> dict[int, RolloutRecord]:
    """One batch of ``policy``'s rollouts on the clips ``rows``, each with its own policy copy and noise;
    records filled once ``frames`` has scored them."""
    if not rows:
        return {}
    results = run_rollouts(host, [_own_copy(policy, oracles[ci]) for ci in rows], [contexts[ci] for ci in rows], n_pred,
                           max_frames=max_frames, mode=cell.mode,
                           generators=[sampling_generator(seed, sample_seed, ci) for ci in rows],
                           actions=[clips[ci].actions for ci in rows], poses=[clips[ci].poses for ci in rows],
                           protocol=protocol)
    out = {}
    for ci, result in zip(rows, results):
        clip, n_ctx = clips[ci], len(contexts[ci])
        record = RolloutRecord(
            cell=cell, clip=ci, seed=sample_seed, per_frame={},
            n_predict=n_pred, seconds=result.seconds, policy_seconds=result.policy_seconds,
            peak_retained_bytes=result.peak_retained_bytes, kept_per_step=result.kept_per_step,
        )
        oracle = oracles[ci].best(result.history_per_step)[1]
        drawn_before = None if clip.poses is None else earlier_generated(clip.poses, n_ctx)

        def done(pixels, scores, record=record, oracle=oracle, keep_pixels=ci in media, drawn_before=drawn_before):
            record.per_frame.update(scores)  # in place: a reused record shares the dict
            record.per_frame["memory_oracle_psnr"] = oracle
            record.per_frame["self_psnr"] = self_consistency(pixels, drawn_before)
            record.pixels = pixels if keep_pixels else None

        frames.put(result.generated, clip.pixels[n_ctx:], done)
        out[ci] = record
    return out


def self_consistency(pixels: torch.Tensor, drawn_before) -> list[float]:
    """Per predicted frame: PSNR against the model's own earlier frame of the same view (NaN where none)."""
    if drawn_before is None:
        return [math.nan] * len(pixels)
    return [math.nan if s < 0 else float(psnr(pixels[t : t + 1], pixels[s : s + 1])[0]) for t, s in enumerate(drawn_before)]


def _own_copy(policy, oracle: CopyOracle):
    """A rollout's own copy of a policy (a stateful policy sees only its rollout; shared if it cannot be
    copied); a hindsight reference also gets its clip's ground truth."""
    try:
        own = copy.deepcopy(policy)
    except Exception:
        own = policy
    if hasattr(own, "see_truth"):
        own.see_truth(oracle)
    return own


def _score_references(run: BenchmarkRun, host, scorer: Scorer, wi: int, workload: str, clip: Clip, ci: int,
                      n_ctx: int, oracle: CopyOracle, keep_pixels: bool, memory: list[str]) -> None:
    """Persistence, the tokenizer ceiling and the (capped) copy oracles of one clip."""
    target = clip.pixels[n_ctx:]
    names = [*REFERENCES, *memory]
    values: dict[str, dict[str, list[float]]] = {}
    pixels: dict[str, torch.Tensor] = {}
    predictions = {"persistence": (persistence(clip.pixels[:n_ctx], len(target)), None),
                   "tokenizer_ceiling": (tokenizer_ceiling(host, target).cpu(), None)}
    for name in memory:
        times, capped = oracle.best(memory_candidates(name, n_ctx, len(target)))
        predictions[name] = (clip.pixels[times], capped)
    for name in names:
        pred, capped_psnr = predictions[name]
        values[name] = {metric: (capped_psnr if metric == "psnr" and capped_psnr is not None else v)
                        for metric, v in scorer(pred, target).items()}
        if keep_pixels:
            pixels[name] = pred
    run.clip_references[(wi, ci)] = (workload, values, pixels)
