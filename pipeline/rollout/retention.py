"""Retention policies that read the budget: faithful frame-level versions of published KV-cache
eviction rules (baselines), and pose retrieval (ours).

The threshold rules of ``pipeline.rollout.policies`` (the ar-video-kv-temporal-policy baselines)
say what they would like and let the loop cut the oldest frames to fit the budget. The policies
here read ``budget_state["max_frames"]`` (None: unlimited, keep everything) and mark at most
that many frames ``keep``, the newest included, so the loop's oldest-first cut never overrides
their choice (``uses_budget_state`` is True: the benchmark reruns them under every budget).

They are stateless: a decision depends only on the call's arguments, so one instance can serve
many clips, interleaved or batched, and gives the same plan for the same input. They do not
assume that they are called at every step: a harness that consults a policy only when the
history is over budget gets the same choice for the same candidates.

Signals, all optional (each policy says what it falls back to without them):

- ``attention_mass`` (FrameMeta, when the host reports it): the share of the last generated
  frame's temporal attention that landed on each retained frame; None for a frame not yet
  attended (the newest, everything at step 0). :func:`attention_shares` fills the gaps with the
  model's own prior (see there).
- ``pose`` (FrameMeta) and ``target_pose`` (RolloutState): recorded poses (x, y, heading in
  degrees). :func:`pose_distance` mirrors the dynamics model's pose-distance bias.
- ``time`` (FrameMeta): the frame's index in its clip; frames before the first generated one are
  ground-truth context (:func:`context_flags`).
"""

from __future__ import annotations

import math
import statistics
from typing import Sequence

from pipeline.networks.dynamics import POSE_BIAS_STEPS, STILL_MOVE
from pipeline.rollout.api import ChunkDecision, FrameMeta, RolloutState, TemporalCachePlan

Pose = tuple[float, float, float]

PRIOR_RATE = 50.0  # the dynamics model's initial pose-bias rate (model.pose_bias): the attention prior's sharpness


# ----------------------------------------------------------------------------------------------- helpers
def max_frames_of(budget_state: dict | None) -> int | None:
    """The frame budget (None: unlimited)."""
    value = (budget_state or {}).get("max_frames")
    return None if value is None else max(1, int(value))


def keep_plan(metas: Sequence[FrameMeta], keep: set[int] | Sequence[int], family: str,
              priority: dict[int, float] | None = None) -> TemporalCachePlan:
    """A plan that keeps exactly the frames at list positions ``keep`` (the newest always) and
    drops the others; ``priority`` (informational) per position."""
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
    """Per frame: is it ground-truth context (not generated)? Frame ``step`` is about to be
    generated, so the first generated frame has time ``newest.time + 1 - step``. All False when
    the metas carry no time (then nothing is known)."""
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


def typical_step(metas: Sequence[FrameMeta], poses: Sequence[Pose | None] | None = None, default: float = 1.0) -> float:
    """The median distance moved per frame, from the candidates' own poses: over neighbours in the
    list (oldest first) with known poses and times, distance / time gap, standing still excluded
    (the dynamics model's ``pose_step`` is this median over the train split). ``default`` when
    the candidates never move."""
    poses = poses_of(metas) if poses is None else poses
    moves = []
    for a, b, pa, pb in zip(metas, metas[1:], poses, poses[1:]):
        ta, tb = getattr(a, "time", None), getattr(b, "time", None)
        gap = (tb - ta) if ta is not None and tb is not None else b.chunk_id - a.chunk_id
        if pa is None or pb is None or gap <= 0:
            continue
        d = math.hypot(pb[0] - pa[0], pb[1] - pa[1]) / gap
        if d > STILL_MOVE:
            moves.append(d)
    return statistics.median(moves) if moves else default


def pose_distance(p: Pose, q: Pose, step: float) -> float:
    """The dynamics model's pose distance with equal rates: ``|dxy / (8 step)|^2 + (1 - cos
    dheading)``. 0 for the same pose; 1 for a quarter turn (no view overlap at Doom's 90 degree
    field of view) or 8 typical steps apart."""
    scale = POSE_BIAS_STEPS * step
    dxy2 = ((p[0] - q[0]) ** 2 + (p[1] - q[1]) ** 2) / (scale * scale)
    return dxy2 + (1.0 - math.cos(math.radians(p[2] - q[2])))


# -------------------------------------------------------------------------------------------- attention
def _softmax(logits: Sequence[float]) -> list[float]:
    top = max(logits)
    e = [math.exp(v - top) for v in logits]
    s = sum(e)
    return [v / s for v in e]


def attention_prior(metas: Sequence[FrameMeta], target: Pose | None) -> list[float]:
    """What the newest query would attend to before any content is compared: the dynamics model's
    own pose-distance bias (``-PRIOR_RATE * pose_distance(frame, target)``, its initial rate),
    softmaxed over the frames; without poses, recentness (1 / (1 + age), normalised), since
    temporal attention in causal video models concentrates on recent frames."""
    poses = poses_of(metas)
    if target is not None and all(p is not None for p in poses):
        step = typical_step(metas, poses)
        return _softmax([-PRIOR_RATE * pose_distance(p, target, step) for p in poses])
    r = [m.recentness for m in metas]
    s = sum(r) or 1.0
    return [v / s for v in r]


def attention_shares(metas: Sequence[FrameMeta], target: Pose | None) -> tuple[list[float], bool]:
    """Per frame, the share of the newest query's attention: ``attention_mass`` where the host
    reported it, the :func:`attention_prior` elsewhere (rescaled to the mass the reported frames
    leave). Also whether any value was measured (False: prior only)."""
    measured = [getattr(m, "attention_mass", None) for m in metas]
    known = [i for i, a in enumerate(measured) if a is not None]
    if not known:
        return attention_prior(metas, target), False
    prior = attention_prior(metas, target)
    missing = [i for i, a in enumerate(measured) if a is None]
    rest = max(0.0, 1.0 - sum(float(measured[i]) for i in known))
    prior_missing = sum(prior[i] for i in missing) or 1.0
    shares = [float(a) if a is not None else rest * prior[i] / prior_missing for i, a in enumerate(measured)]
    return shares, True


# ------------------------------------------------------------------------------------------- similarity
def similarity_matrix(metas: Sequence[FrameMeta]) -> list[list[float]]:
    """Cosine similarity of every pair of frames' latents, from FrameMeta's
    ``temporal_similarity`` (the exact cosine to the previous kept frame): the similarity of
    frames i < j is the product of the adjacent similarities between them, exact for neighbours
    and decaying across every scene change in between."""
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
    """FIFO queue cache (Ca2-VDM, arXiv:2411.16375): keep the newest ``max_frames`` frames.

    Frame level: Ca2-VDM caches the conditional frames' keys/values in a queue of fixed length
    and pushes out the oldest; a frame here is one queue entry, so this is exactly a sliding
    window (and the same rollout as ``full_history`` under a finite budget, which the loop cuts
    oldest first). Cannot: Ca2-VDM's cache-sharing across denoising steps and its prefix of
    always-kept first-chunk frames (the latter is ``sink_recent``)."""

    name = "fifo"
    family = "queue"

    def select(self, metas, state, budget):
        keep = newest(len(metas), budget)
        return keep, {i: metas[i].recentness for i in keep}


class SinkRecent(BudgetPolicy):
    """Attention sinks + recent window (StreamingLLM, arXiv:2309.17453): keep the first
    ``n_sink`` frames of the clip and the newest ``max_frames - n_sink``.

    Frame level: StreamingLLM keeps the first 4 tokens, which soak up attention mass whatever
    their content, and a window of the newest; here the sink is the oldest retained frame (the
    clip's first context frame, which this policy never drops: by ``time`` when known, else list
    order). Cannot: a frame-level sink is a whole frame of budget, not 4 of thousands of tokens,
    and a video model's temporal attention may not sink at all (this model's has a learned pose
    and clean-context bias instead)."""

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
    """Heavy hitters + recent window (H2O, arXiv:2306.14048): keep the newest ``ceil(B/2)``
    frames and the ``floor(B/2)`` others with the largest accumulated attention.

    Frame level: H2O sums, per token, the attention every later query gave it, and splits the
    budget evenly between heavy hitters and recent tokens. Here a frame's accumulated attention
    is estimated as ``attention_mass * access_count`` (the sum if the frame's share had been
    constant while it was retained); frames never attended and rollouts without attention use
    :func:`attention_prior` times the steps retained. Cannot: H2O's per-token, per-head,
    per-layer selection (one frame-level decision for all layers), and an exact running sum (the
    policy keeps no state across calls, so that one instance serves many clips)."""

    name = "h2o"
    family = "heavy_hitters"

    def select(self, metas, state, budget):
        n = len(metas)
        n_recent = math.ceil(budget / 2)  # budget >= 1
        recent = newest(n, n_recent)
        shares, _ = attention_shares(metas, state.target_pose)
        scores = {}
        for i in range(n - n_recent):
            scores[i] = shares[i] * max(1, metas[i].access_count)
        keep = recent + top_k(scores, budget - n_recent)
        return sorted(keep), {i: scores.get(i, 1.0) for i in keep}


class TOVA(BudgetPolicy):
    """Token Omission Via Attention (TOVA, arXiv:2401.06104): keep the newest frame and the
    ``max_frames - 1`` frames the newest query attends to most.

    Frame level: TOVA drops, at every step, the token with the lowest attention from the last
    query (averaged over heads); here the last query is the last generated frame's final
    denoising call (``attention_mass``); frames it did not attend (and everything at step 0 or
    without a reporting host) get the :func:`attention_prior`. Cannot: TOVA's per-layer choice,
    and the newest frame's own attention (the loop measures attention before the newest frame
    queries anything, so the newest is kept unconditionally)."""

    name = "tova"
    family = "last_query_attention"

    def select(self, metas, state, budget):
        n = len(metas)
        shares, _ = attention_shares(metas, state.target_pose)
        scores = {i: shares[i] for i in range(n - 1)}
        keep = [n - 1] + top_k(scores, budget - 1)
        return sorted(keep), {i: shares[i] for i in keep}


class RKV(BudgetPolicy):
    """Redundancy-aware eviction (R-KV, arXiv:2505.24133; FlowCache's released ``kvcompress``):
    score = lambda * importance - (1 - lambda) * redundancy, keep the newest
    frame and the top ``max_frames - 1``.

    As the released code computes it per token, here per frame: importance = the attention share
    from the newest query (``attention_mass``, else :func:`attention_prior`); redundancy = the
    softmax over frames of each frame's mean cosine similarity to the other candidates (the
    diagonal zeroed, as ``cal_similarity``), from :func:`similarity_matrix` (chained
    ``temporal_similarity``); lambda = 0.07 (``mix_lambda`` of both releases). Cannot:
    per-token / per-head selection and the max pooling over neighbouring tokens (a frame is one
    unit), and exact latent similarities between non-adjacent frames (FrameMeta has only each
    frame's similarity to the previous kept one)."""

    name = "rkv"
    family = "importance-redundancy"
    mix_lambda = 0.07

    def select(self, metas, state, budget):
        n = len(metas)
        importance, _ = attention_shares(metas, state.target_pose)
        sim = similarity_matrix(metas)
        mean_sim = [sum(sim[i][j] for j in range(n) if j != i) / n for i in range(n)]
        redundancy = _softmax(mean_sim)
        scores = {i: self.mix_lambda * importance[i] - (1 - self.mix_lambda) * redundancy[i] for i in range(n - 1)}
        keep = [n - 1] + top_k(scores, budget - 1)
        return sorted(keep), {i: scores.get(i, 1.0) for i in keep}


# -------------------------------------------------------------------------------------------------- ours
class PoseRetrieval(BudgetPolicy):
    """Pose retrieval (ours): keep the newest ``n_recent`` frames and fill the rest of the budget
    with the frames seen from closest to the pose of the frame about to be generated, at most one
    per view.

    The dynamics model is pose-conditioned and its temporal heads prefer frames seen from close to
    the new frame's pose (a learned pose-distance bias), as camera-conditioned memory models do
    (WorldMem, arXiv:2504.12369; Context-as-Memory, arXiv:2506.03141, retrieve context frames by
    field-of-view overlap). So the memory slots go to the candidates ranked by
    :func:`pose_distance` to ``rollout_state.target_pose`` (the model's distance with equal rates,
    the typical step measured on the candidates' own moves), greedily, skipping a frame within
    ``duplicate`` of a frame already kept, the newest included: two frames of nearly one view add
    little, and a slot is better spent on a neighbouring view (0.2: kept views differ by two
    22.5-degree turns, or ~3.6 typical steps). Ground-truth context frames rank as if
    ``context_margin`` closer than generated ones (they carry no generation error); ties go to the
    newer frame. Frames close to this target are also close to the next few (the camera turns
    22.5 degrees a frame at most), so what is kept for this frame serves the following ones.

    Fallbacks: any candidate without a pose, or no target pose -> R-KV's importance-minus-
    redundancy ranking when the host reports ``attention_mass``, else keep the newest (FIFO).

    Failure cases: poses that do not determine the view (moving objects, doors, teleports, other
    agents); a revisit that the next target cannot anticipate: a view far from every current
    target can be evicted just before the camera returns to it (eviction is final in ``kv``
    mode); long walks without revisits, where recent frames are all that matter and the
    retrieved ones are merely the least far; a budget of 1 (only the newest fits).
    """

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
        step = typical_step(metas, poses)
        is_context = context_flags(metas, state.step)
        chosen = newest(n, min(self.n_recent, budget))
        rank = {i: pose_distance(poses[i], target, step) - (self.context_margin if is_context[i] else 0.0)
                for i in range(n) if i not in chosen}
        skipped = []
        for i in sorted(rank, key=lambda i: (rank[i], -i)):
            if len(chosen) >= budget:
                break
            if any(pose_distance(poses[i], poses[j], step) < self.duplicate for j in chosen):
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


BUDGET_BASELINES = (FIFO, SinkRecent, H2O, TOVA, RKV)
OURS = (PoseRetrieval,)
