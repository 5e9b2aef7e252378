"""The policy-managed rollout loop: a policy decides, before every generated frame, which
history frames the host may attend to.

Order of one step (``step`` = index of the frame about to be generated, 0 = the first):

1. candidates = the retained history + what is new (at step 0 the whole context, later the
   frame generated last); one FrameMeta per candidate, oldest first;
2. ``policy.build_temporal_cache_plan(metas, RolloutState(step, ...), budget_state)``;
3. :func:`apply_plan`: keep frames marked keep or demote_to_long_term, plus the newest frame
   always; drop the oldest until at most ``max_frames`` remain;
4. the host session evicts what left and appends what is new and kept;
5. the host generates the next frame from exactly that history.

So the budget holds at every generation, the first included: with 36 context frames and a
budget of 8 the policy chooses, before anything is generated, which 8 context frames stay. The
session never holds more than ``max_frames`` frames, so peak retained memory is a property of
the budget and policy. After each generation the host's ``attention_mass()`` (if it has one)
goes onto the frames it attended to, for the next plan's FrameMeta.

**Batches.** :func:`run_rollouts` runs B clips through this loop at once, one *row* each: per
row and per step the same FrameMeta, policy call, plan and bookkeeping as above (its own
policy, evictions, actions, poses, attention_mass and noise generator), then one batched host
call per operation (evict, append, generate) for all rows. :func:`run_rollout`, one clip, is
a batch of one: there is one loop.

``protocol="harness"`` reproduces the loop of the ar-video-kv-temporal-policy harness instead:
the first frame is generated from the whole context; afterwards the policy is consulted only
when the history exceeds the budget (a history within budget keeps every frame); FrameMeta's
``access_count`` and ``recent_hit_count`` are fixed at 1 and no frame becomes a long-term
resident (demote_to_long_term counts as keep).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Sequence

import torch

from pipeline.rollout.api import ACTIONS, FrameInfo, Mode, RolloutHost, RolloutResult, RolloutState
from pipeline.rollout.batch import start_batch
from pipeline.rollout.frame_meta import FrameRecord, build_frame_meta
from pipeline.rollout.policies import policy_origin


class PlanError(ValueError):
    """A policy returned a plan the loop cannot apply; the message names the policy and entry."""


class PolicyError(RuntimeError):
    """A policy raised while planning; the message names the policy, its class and the step, and
    the policy's own exception is the ``__cause__``."""


def plan_step(policy, name: str, metas, state: RolloutState, budget_state: dict):
    """``policy.build_temporal_cache_plan``, its exceptions re-raised as PolicyError."""
    try:
        return policy.build_temporal_cache_plan(metas, state, budget_state)
    except Exception as exc:
        raise PolicyError(
            f"policy {name!r} ({policy_origin(policy)}) raised {type(exc).__name__} at step {state.step}: {exc}"
        ) from exc


def apply_plan(plan, n_frames: int, max_frames: int | None, policy_name: str) -> tuple[list[int], set[int]]:
    """Indices of the frames that stay (ascending) and those the plan demoted to long-term.

    Frames without a decision are dropped. Raises PlanError on an entry with an unknown
    chunk_id or action, or on two decisions for one frame.
    """
    decisions = getattr(plan, "chunk_decisions", None)
    if not isinstance(decisions, (list, tuple)):
        raise PlanError(
            f"policy {policy_name!r}: build_temporal_cache_plan returned {type(plan).__name__}, "
            "expected a TemporalCachePlan with a chunk_decisions list"
        )
    keep: set[int] = {n_frames - 1}  # the newest frame always stays
    demoted: set[int] = set()
    seen: set[int] = set()
    for j, d in enumerate(decisions):
        cid, action = getattr(d, "chunk_id", None), getattr(d, "action", None)
        if isinstance(cid, bool) or not isinstance(cid, int) or not 0 <= cid < n_frames:
            raise PlanError(
                f"policy {policy_name!r}: chunk_decisions[{j}] = {d!r}: unknown chunk_id {cid!r} "
                f"(the history has {n_frames} frames, ids 0..{n_frames - 1})"
            )
        if action not in ACTIONS:
            raise PlanError(
                f"policy {policy_name!r}: chunk_decisions[{j}] = {d!r}: unknown action {action!r} "
                f"(expected one of {', '.join(ACTIONS)})"
            )
        if cid in seen:
            raise PlanError(f"policy {policy_name!r}: chunk_decisions[{j}] = {d!r}: second decision for chunk_id {cid}")
        seen.add(cid)
        if action != "drop":
            keep.add(cid)
        if action == "demote_to_long_term":
            demoted.add(cid)
    kept = sorted(keep)
    if max_frames is not None and len(kept) > max_frames:
        kept = kept[len(kept) - max_frames :]  # drop the oldest first
    return kept, demoted & set(kept)


def capacity_mb(max_frames: int | None, frame_mb: float) -> float:
    """The budget in MB: max_frames latent frames (inf when unlimited)."""
    return math.inf if max_frames is None else max_frames * frame_mb


def finish_queued_work(device: torch.device) -> None:
    """CUDA runs kernels asynchronously: wait for them so that timers measure work, not queueing."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


Protocol = str  # "default" | "harness"
PROTOCOLS = ("default", "harness")


@torch.no_grad()
def run_rollout(
    host: RolloutHost,
    policy,
    context: torch.Tensor,
    n_predict: int,
    *,
    max_frames: int | None,
    mode: Mode,
    generator: torch.Generator,
    actions: Sequence[int] | None = None,
    poses: Sequence[Sequence[float]] | None = None,
    protocol: Protocol = "default",
) -> RolloutResult:
    """Generate ``n_predict`` latents after ``context`` (T, C, h, w) under a frame budget.

    ``actions[t]`` is the action that led to clip frame t (context first), ``poses[t]`` the
    pose recorded in it; either may be None (the data has none). ``protocol``: "default" (the
    policy plans before every frame, the budget holds from the first) or "harness" (the
    ar-video-kv-temporal-policy loop, see the module docstring). A batch of one of
    :func:`run_rollouts`.
    """
    return run_rollouts(host, policy, [context], n_predict, max_frames=max_frames, mode=mode, generators=[generator],
                        actions=[actions], poses=[poses], protocol=protocol)[0]


@dataclass
class _Row:
    """One rollout of a batch: its clip, policy and the loop's bookkeeping."""

    policy: object
    name: str
    context: torch.Tensor
    actions: Sequence[int] | None
    poses: Sequence[Sequence[float]] | None
    budget_state: dict
    kept_lat: list[torch.Tensor] = field(default_factory=list)
    kept_rec: list[FrameRecord] = field(default_factory=list)
    new_lat: list[torch.Tensor] = field(default_factory=list)
    new_rec: list[FrameRecord] = field(default_factory=list)
    generated: list[torch.Tensor] = field(default_factory=list)
    result: RolloutResult = field(default_factory=lambda: RolloutResult(generated=torch.empty(0)))

    def info(self, t: int) -> FrameInfo:
        return FrameInfo(time=t, action=None if self.actions is None else int(self.actions[t]),
                         pose=None if self.poses is None else tuple(float(v) for v in self.poses[t]),
                         observed=t < len(self.context))


@torch.no_grad()
def run_rollouts(
    host: RolloutHost,
    policy,
    contexts: Sequence[torch.Tensor],
    n_predict: int,
    *,
    max_frames: int | None,
    mode: Mode,
    generators: Sequence[torch.Generator],
    actions: Sequence[Sequence[int] | None] | None = None,
    poses: Sequence[Sequence[Sequence[float]] | None] | None = None,
    protocol: Protocol = "default",
) -> list[RolloutResult]:
    """:func:`run_rollout` for B clips at once, one *row* each: ``contexts[b]``, ``generators[b]``,
    ``actions[b]`` and ``poses[b]`` (each None or per clip frame) are row b's. ``policy`` is one
    policy or one per row; every row gets its own plans, evictions and FrameMeta, and the host
    generates every row's next frame in one batched session (``pipeline.rollout.batch``), so a
    row's result equals its unbatched one (to float rounding; exactly on a host without
    ``start_batch``). ``seconds`` of each result is its share (1/B) of the batch's wall time.
    """
    b = len(contexts)
    policies = list(policy) if isinstance(policy, (list, tuple)) else [policy] * b
    actions = [None] * b if actions is None else list(actions)
    poses = [None] * b if poses is None else list(poses)
    if not b or not len(policies) == len(generators) == len(actions) == len(poses) == b:
        raise ValueError(f"{b} contexts, {len(policies)} policies, {len(generators)} generators, {len(actions)} "
                         f"action and {len(poses)} pose tracks: need one of each per rollout (at least one)")
    harness = protocol == "harness"
    rows = []
    for pol, context, acts, pos in zip(policies, contexts, actions, poses):
        _check_rollout(len(context), n_predict, max_frames, acts, pos, protocol)
        context = context.float()
        ref = context[0]
        frame_mb = ref.numel() * ref.element_size() / 2**20
        row = _Row(pol, getattr(pol, "name", type(pol).__name__), context, acts, pos,
                   {"max_frames": max_frames, "capacity_mb": capacity_mb(max_frames, frame_mb)})
        row.new_lat = list(context)
        row.new_rec = [FrameRecord(time=t, pose=row.info(t).pose) for t in range(len(context))]
        rows.append(row)
    device = contexts[0].device

    start = time.perf_counter()
    session = start_batch(host, mode, generators)
    for step in range(n_predict):
        finish_queued_work(device)  # else the policy's timer absorbs the last generation
        evictions, appends = [], []
        for row in rows:
            t0 = time.perf_counter()
            t_new = len(row.context) + step
            cand_lat, cand_rec = row.kept_lat + row.new_lat, row.kept_rec + row.new_rec
            over_budget = max_frames is not None and len(cand_lat) > max_frames
            if harness and (step == 0 or not over_budget):  # the harness consults its policy only when over budget
                keep, demoted = list(range(len(cand_lat))), set()
            else:
                # feature_drift's reference: the clip's first context frame, even once evicted
                metas = build_frame_meta(torch.stack(cand_lat), row.context[0], cand_rec, step, fixed_access=harness)
                state = RolloutState(step=step, budget_capacity_mb=row.budget_state["capacity_mb"],
                                     total_steps=n_predict, target_pose=row.info(t_new).pose)
                plan = plan_step(row.policy, row.name, metas, state, dict(row.budget_state))
                keep, demoted = apply_plan(plan, len(cand_lat), max_frames, row.name)
            row.result.policy_seconds += time.perf_counter() - t0

            n_old = len(row.kept_lat)
            old_keep = [i for i in keep if i < n_old]
            evictions.append(old_keep if len(old_keep) < n_old else None)
            appends.append([(cand_lat[i], row.info(cand_rec[i].time)) for i in keep if i >= n_old])
            if not harness:  # the harness never marks frames long-term resident
                for i in demoted:
                    cand_rec[i].long_term_resident = True
            row.kept_lat = [cand_lat[i] for i in keep]
            row.kept_rec = [cand_rec[i] for i in keep]
            for rec in row.kept_rec:
                rec.touch(step)
            row.result.kept_per_step.append(len(keep))
            row.result.history_per_step.append([rec.time for rec in row.kept_rec])
        if any(e is not None for e in evictions):
            session.evict(evictions)
        session.append(appends)
        for row, held in zip(rows, session.retained_bytes()):
            row.result.peak_retained_bytes = max(row.result.peak_retained_bytes, held)

        x = session.generate([row.info(len(row.context) + step) for row in rows]).float()
        shares = getattr(session, "attention_mass", lambda: None)() or [None] * b
        for row, x_b, share in zip(rows, x, shares):
            _record_attention(share, row.kept_rec)
            row.generated.append(x_b)
            t_new = len(row.context) + step
            row.new_lat, row.new_rec = [x_b], [FrameRecord(time=t_new, pose=row.info(t_new).pose)]
    finish_queued_work(device)
    seconds = time.perf_counter() - start
    for row in rows:
        row.result.generated = torch.stack(row.generated)
        row.result.seconds = seconds / b
        row.result.batch_size = b
    return [row.result for row in rows]


def _check_rollout(n_ctx: int, n_predict: int, max_frames: int | None, actions, poses, protocol: str) -> None:
    if n_ctx < 1 or n_predict < 1:
        raise ValueError(f"need at least one context and one predicted frame, got {n_ctx} and {n_predict}")
    for name, values in (("actions", actions), ("poses", poses)):
        if values is not None and len(values) < n_ctx + n_predict:
            raise ValueError(f"{len(values)} {name} for a clip of {n_ctx} + {n_predict} frames")
    if max_frames is not None and max_frames < 1:
        raise ValueError(f"max_frames must be >= 1 or None, got {max_frames}")
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")


def _record_attention(shares: list[float] | None, kept: list[FrameRecord]) -> None:
    """The host's attention_mass signal of the generation just done (one row's), onto the frames
    it attended to (hosts without the signal give None and leave it None)."""
    if shares is not None:
        for rec, share in zip(kept, shares):
            rec.attention_mass = float(share)
