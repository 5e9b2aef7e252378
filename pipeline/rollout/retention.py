"""Budget-aware retention policies: frame-level versions of published KV-cache eviction rules, and
pose retrieval (ours).

Each reads ``budget_state["max_frames"]`` (None: unlimited) and marks at most that many frames
``keep``, the newest included, so the loop's oldest-first cut never overrides its choice. They are
stateless (one instance serves many clips) and fall back when the optional signals (``attention_mass``,
``pose``, ``target_pose``, ``time``) are missing. Mapping, limits and failure cases of each:
docs/benchmark.md (Built-in policies).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch

from pipeline.networks.pose_memory import POSE_BIAS_STEPS, pose_distance, typical_step
from pipeline.rollout.api import ChunkDecision, FrameMeta, RolloutState, TemporalCachePlan

Pose = tuple[float, float, float]

# ----------------------------------------------------------------------------------------------- helpers
def max_frames_of(budget_state: dict | None) -> int | None:
    """The frame budget (None: unlimited)."""
    value = (budget_state or {}).get("max_frames")
    return None if value is None else max(1, int(value))


def keep_plan(metas: Sequence[FrameMeta], keep: set[int] | Sequence[int], family: str,
              priority: dict[int, float] | None = None) -> TemporalCachePlan:
    """Keep the frames at list positions ``keep`` (and the newest), drop the rest."""
    keep = set(keep) | {len(metas) - 1}
    priority = priority or {}
    return TemporalCachePlan(
        chunk_decisions=[ChunkDecision(m.chunk_id, "keep" if i in keep else "drop", priority=float(priority.get(i, 0.0)))
                         for i, m in enumerate(metas)],
        retention_family=family,
    )


def newest(n: int, count: int) -> list[int]:
    """List positions of the ``count`` newest of ``n`` frames (metas come oldest first)."""
    return list(range(max(0, n - count), n))


def top_k(scores: dict[int, float], k: int) -> list[int]:
    """The ``k`` positions with the highest score; ties go to the newer frame (deterministic)."""
    order = sorted(scores, key=lambda i: (-scores[i], -i))
    return order[: max(0, k)]


def context_flags(metas: Sequence[FrameMeta], step: int) -> list[bool]:
    """Per frame: is it ground-truth context rather than generated? All False without ``time``."""
    times = [getattr(m, "time", None) for m in metas]
    if times[-1] is None:
        return [False] * len(metas)
    first_generated = times[-1] + 1 - step
    return [t is not None and t < first_generated for t in times]


# ------------------------------------------------------------------------------------------------ poses
def poses_of(metas: Sequence[FrameMeta]) -> list[Pose | None]:
    out = []
    for m in metas:
        p = getattr(m, "pose", None)
        out.append(None if p is None or any(not math.isfinite(float(v)) for v in p) else tuple(float(v) for v in p))
    return out


def candidates_step(metas: Sequence[FrameMeta], poses: Sequence[Pose | None] | None = None) -> float:
    """The typical step of the candidates' own moves (distance / time gap between neighbours)."""
    poses = poses_of(metas) if poses is None else poses
    moves = []
    for a, b, pa, pb in zip(metas, metas[1:], poses, poses[1:]):
        ta, tb = getattr(a, "time", None), getattr(b, "time", None)
        gap = (tb - ta) if ta is not None and tb is not None else b.chunk_id - a.chunk_id
        if pa is not None and pb is not None and gap > 0:
            moves.append(math.hypot(pb[0] - pa[0], pb[1] - pa[1]) / gap)
    return typical_step(moves)


def pose_distances(poses: Sequence[Pose], targets: Sequence[Pose], step: float) -> list[list[float]]:
    """(len(poses), len(targets)) dynamics-model pose distances, equal rates:
    ``|dxy / (8 step)|^2 + (1 - cos dheading)``; 1 = a quarter turn or 8 typical steps."""
    dist, turn = pose_distance(torch.tensor([poses], dtype=torch.float64), torch.tensor([targets], dtype=torch.float64),
                               POSE_BIAS_STEPS * step)
    return (dist + turn)[0].tolist()


# -------------------------------------------------------------------------------------------- attention
def _softmax(logits: Sequence[float]) -> list[float]:
    top = max(logits)
    e = [math.exp(v - top) for v in logits]
    s = sum(e)
    return [v / s for v in e]


def attention_prior(metas: Sequence[FrameMeta], target: Pose | None, rate: float | None) -> list[float]:
    """Attention shares expected before content is compared: the host model's own pose bias,
    softmax of ``-rate * pose distance`` to ``target`` (``rate``: RolloutState.pose_bias_rate), or
    normalised recentness without poses or a rate."""
    poses = poses_of(metas)
    if target is not None and rate is not None and all(p is not None for p in poses):
        distances = pose_distances(poses, [target], candidates_step(metas, poses))
        return _softmax([-rate * d for (d,) in distances])
    r = [m.recentness for m in metas]
    s = sum(r) or 1.0
    return [v / s for v in r]


def attention_shares(metas: Sequence[FrameMeta], state: RolloutState) -> tuple[list[float], bool]:
    """Per-frame attention shares (``attention_mass``, gaps filled by the rescaled prior), and
    whether any share was measured."""
    measured = [getattr(m, "attention_mass", None) for m in metas]
    known = [i for i, a in enumerate(measured) if a is not None]
    if not known:
        return attention_prior(metas, state.target_pose, state.pose_bias_rate), False
    prior = attention_prior(metas, state.target_pose, state.pose_bias_rate)
    missing = [i for i, a in enumerate(measured) if a is None]
    rest = max(0.0, 1.0 - sum(float(measured[i]) for i in known))
    prior_missing = sum(prior[i] for i in missing) or 1.0
    shares = [float(a) if a is not None else rest * prior[i] / prior_missing for i, a in enumerate(measured)]
    return shares, True


# ------------------------------------------------------------------------------------------- similarity
def similarity_matrix(metas: Sequence[FrameMeta]) -> list[list[float]]:
    """(n, n) pairwise similarity: the product of the ``temporal_similarity`` values between two
    frames (exact for neighbours)."""
    n = len(metas)
    adjacent = [max(0.0, min(1.0, float(m.temporal_similarity))) for m in metas]
    sim = [[1.0] * n for _ in range(n)]
    for i in range(n):
        prod = 1.0
        for j in range(i + 1, n):
            prod *= adjacent[j]
            sim[i][j] = sim[j][i] = prod
    return sim


# ------------------------------------------------------------------------------------------ base class
class BudgetPolicy:
    """A policy that reads the budget and keeps all frames when they fit it."""

    name = "budget_policy"
    uses_budget_state = True
    family = "custom"

    def build_temporal_cache_plan(self, chunk_meta_list: list[FrameMeta], rollout_state: RolloutState,
                                  budget_state: dict) -> TemporalCachePlan:
        metas = list(chunk_meta_list)
        if not metas:
            return TemporalCachePlan(chunk_decisions=[], retention_family=self.family)
        budget = max_frames_of(budget_state)
        if budget is None or len(metas) <= budget:
            return keep_plan(metas, range(len(metas)), self.family)
        keep, priority = self.select(metas, rollout_state, budget)
        return keep_plan(metas, keep, self.family, priority)

    def select(self, metas: list[FrameMeta], state: RolloutState, budget: int) -> tuple[list[int], dict[int, float]]:
        """Positions to keep (at most ``budget``, the newest among them) when over budget."""
        raise NotImplementedError


# ----------------------------------------------------------------------------------------- baselines
class FIFO(BudgetPolicy):
    """FIFO queue (Ca2-VDM, arXiv:2411.16375): keep the newest ``max_frames`` frames."""

    name = "fifo"
    family = "queue"

    def select(self, metas, state, budget):
        keep = newest(len(metas), budget)
        return keep, {i: metas[i].recentness for i in keep}


class SinkRecent(BudgetPolicy):
    """Attention sinks + recent window (StreamingLLM, arXiv:2309.17453): keep the clip's first
    ``n_sink`` frames and the newest ``max_frames - n_sink``."""

    name = "sink_recent"
    family = "sink+recency"
    n_sink = 1

    def select(self, metas, state, budget):
        n_sink = min(self.n_sink, budget - 1)
        order = sorted(range(len(metas) - 1), key=lambda i: (getattr(metas[i], "time", None) is None,
                                                               getattr(metas[i], "time", None) or 0, i))
        sinks = order[:n_sink]
        recent = [i for i in range(len(metas)) if i not in sinks][-(budget - n_sink):]
        keep = sorted(set(sinks) | set(recent))
        return keep, {i: (1.0 if i in sinks else metas[i].recentness) for i in keep}


class H2O(BudgetPolicy):
    """Heavy hitters + recent window (H2O, arXiv:2306.14048): keep the newest ``ceil(B/2)`` frames
    and the ``floor(B/2)`` others with the most accumulated attention (share * access_count)."""

    name = "h2o"
    family = "heavy_hitters"

    def select(self, metas, state, budget):
        n = len(metas)
        n_recent = math.ceil(budget / 2)  # budget >= 1
        recent = newest(n, n_recent)
        shares, _ = attention_shares(metas, state)
        scores = {}
        for i in range(n - n_recent):
            scores[i] = shares[i] * max(1, metas[i].access_count)
        keep = recent + top_k(scores, budget - n_recent)
        return sorted(keep), {i: scores.get(i, 1.0) for i in keep}


class TOVA(BudgetPolicy):
    """Token Omission Via Attention (TOVA, arXiv:2401.06104): keep the newest frame and the
    ``max_frames - 1`` frames the last query attended to most."""

    name = "tova"
    family = "last_query_attention"

    def select(self, metas, state, budget):
        n = len(metas)
        shares, _ = attention_shares(metas, state)
        scores = {i: shares[i] for i in range(n - 1)}
        keep = [n - 1] + top_k(scores, budget - 1)
        return sorted(keep), {i: shares[i] for i in keep}


class RKV(BudgetPolicy):
    """Redundancy-aware eviction (R-KV, arXiv:2505.24133; FlowCache's ``kvcompress``): keep the
    newest frame and the top ``max_frames - 1`` by ``lambda * attention - (1 - lambda) * redundancy``."""

    name = "rkv"
    family = "importance-redundancy"
    mix_lambda = 0.07

    def select(self, metas, state, budget):
        n = len(metas)
        importance, _ = attention_shares(metas, state)
        sim = similarity_matrix(metas)
        mean_sim = [sum(sim[i][j] for j in range(n) if j != i) / n for i in range(n)]
        redundancy = _softmax(mean_sim)
        scores = {i: self.mix_lambda * importance[i] - (1 - self.mix_lambda) * redundancy[i] for i in range(n - 1)}
        keep = [n - 1] + top_k(scores, budget - 1)
        return sorted(keep), {i: scores.get(i, 1.0) for i in keep}


# -------------------------------------------------------------------------------------------------- ours
class PoseRetrieval(BudgetPolicy):
    """Pose retrieval (ours): keep the newest ``n_recent`` frames, then the frames seen from closest
    to ``target_pose``, one per view, as camera-conditioned memory models retrieve context (WorldMem,
    arXiv:2504.12369; Context-as-Memory, arXiv:2506.03141). Without poses: R-KV's ranking if the host
    reports attention, else the newest. Rationale and failure cases: docs/benchmark.md (pose_retrieval)."""

    name = "pose_retrieval"
    family = "pose_retrieval"
    n_recent = 1  # newest frames always kept (the loop keeps the newest anyway)
    duplicate = 0.2  # pose distance under which a frame adds nothing to a kept one (37 degrees; 3.6 steps)
    context_margin = 0.3  # a ground-truth context frame ranks as if this much closer than a generated one

    def select(self, metas, state, budget):
        n = len(metas)
        poses = poses_of(metas)
        target = state.target_pose
        if target is None or any(p is None for p in poses):
            return self.fallback(metas, state, budget)
        target = tuple(float(v) for v in target)
        distance = pose_distances(poses, [*poses, target], candidates_step(metas, poses))  # (n, n + 1): to each, and the target
        is_context = context_flags(metas, state.step)
        chosen = newest(n, min(self.n_recent, budget))
        rank = {i: distance[i][n] - (self.context_margin if is_context[i] else 0.0) for i in range(n) if i not in chosen}
        skipped = []
        for i in sorted(rank, key=lambda i: (rank[i], -i)):
            if len(chosen) >= budget:
                break
            if any(distance[i][j] < self.duplicate for j in chosen):
                skipped.append(i)
            else:
                chosen.append(i)
        chosen += skipped[: budget - len(chosen)]  # only near-duplicates left: still better than nothing
        return sorted(chosen), {i: -rank.get(i, 0.0) for i in chosen}

    def fallback(self, metas, state, budget):
        if all(getattr(m, "attention_mass", None) is None for m in metas):
            keep = newest(len(metas), budget)
            return keep, {i: metas[i].recentness for i in keep}
        return RKV().select(metas, state, budget)


class PoseCoverage(PoseRetrieval):
    """Pose coverage (ours, for revisits): keep the newest frame, then the frames that together cover the
    views of every frame still to come (``upcoming_poses``), not only the next: greedy facility location
    on pose distance, each upcoming view costing its distance to the closest kept frame, capped at
    ``cap`` (45 degrees or 4.4 typical steps: farther frames hardly help a copy), a generated frame's
    ``generated_penalty`` more than a ground-truth one's. Frames are gone once evicted,
    so a view needed 10 frames from now must be kept now. Leftover slots, and clips without upcoming
    poses: pose retrieval's ranking. Failure cases: docs/benchmark.md (pose_coverage)."""

    name = "pose_coverage"
    family = "pose_coverage"
    cap = 0.3
    generated_penalty = 0.15

    def select(self, metas, state, budget):
        n, upcoming = len(metas), state.upcoming_poses
        poses = poses_of(metas)
        if not upcoming or any(p is None for p in poses):
            return super().select(metas, state, budget)
        distance = pose_distances(poses, list(upcoming), candidates_step(metas, poses))  # (n, upcoming)
        is_context = context_flags(metas, state.step)
        cost = [[min(self.cap, d + (0.0 if is_context[i] else self.generated_penalty)) for d in row]
                for i, row in enumerate(distance)]
        chosen = newest(n, min(self.n_recent, budget))
        covered = [min(cost[i][f] for i in chosen) for f in range(len(upcoming))]
        gains = {}
        while len(chosen) < budget:
            gains = {i: sum(c - min(c, cost[i][f]) for f, c in enumerate(covered)) for i in range(n) if i not in chosen}
            best = max(gains, key=lambda i: (gains[i], i), default=None)
            if best is None or gains[best] <= 0:
                break
            chosen.append(best)
            covered = [min(c, cost[best][f]) for f, c in enumerate(covered)]
        if len(chosen) < budget:  # every upcoming view is as covered as it can be: fill as pose retrieval would
            rest, _ = super().select(metas, state, budget)
            chosen += [i for i in sorted(rest, key=lambda i: -i) if i not in chosen][: budget - len(chosen)]
        return sorted(chosen), {i: gains.get(i, 0.0) for i in chosen}


class RandomKeep(BudgetPolicy):
    """Random retention (a bound from below): the newest frame plus ``max_frames - 1`` others drawn
    uniformly, seeded by the step and the candidates' clip times (same history, same draw; no global RNG)."""

    name = "random"
    family = "random"

    def select(self, metas, state, budget):
        n = len(metas)
        times = [getattr(m, "time", None) for m in metas]
        seed = [state.step, n, *(-1 if t is None else int(t) for t in times)]
        others = np.random.default_rng(seed).permutation(n - 1)[: budget - 1].tolist()
        keep = sorted([n - 1, *others])
        return keep, {i: 0.0 for i in keep}


BUDGET_BASELINES = (FIFO, SinkRecent, H2O, TOVA, RKV, RandomKeep)
OURS = (PoseRetrieval, PoseCoverage)
