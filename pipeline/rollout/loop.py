"""The policy-managed rollout loop: before every generated frame a policy decides which history
frames the host may attend to.

One step: FrameMeta for each candidate (retained history + what is new) -> policy plan ->
:func:`apply_plan` (plus the newest, then the oldest cut to ``max_frames``) -> the session evicts
and appends -> the host generates. The budget thus holds from the first generated frame on.
``protocol="harness"`` reproduces the published harness's loop instead. Details:
docs/benchmark.md (The rollout loop, Protocols).
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
    """A policy raised while planning; names the policy, its class and the step (cause: the
    policy's exception)."""


def plan_step(policy, name: str, metas, state: RolloutState, budget_state: dict):
    """``policy.build_temporal_cache_plan``, its exceptions re-raised as PolicyError."""
    try:
        return policy.build_temporal_cache_plan(metas, state, budget_state)
    except Exception as exc:
        raise PolicyError(
            f"policy {name!r} ({policy_origin(policy)}) raised {type(exc).__name__} at step {state.step}: {exc}"
        ) from exc


def apply_plan(plan, n_frames: int, max_frames: int | None, policy_name: str) -> tuple[list[int], set[int]]:
    """Indices of the frames that stay (ascending) and those demoted to long-term. Frames without
    a decision are dropped; PlanError on an unknown chunk_id or action, or a repeated chunk_id."""
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
    ``actions[t]`` / ``poses[t]``: the action that led to clip frame t and its pose (None: none).
    A batch of one of :func:`run_rollouts`."""
    return run_rollouts(host, policy, [context], n_predict, max_frames=max_frames, mode=mode, generators=[generator],
                        actions=[actions], poses=[poses], protocol=protocol)[0]


@dataclass
class _Row:
    """One rollout of a batch: its clip, policy, budget and the loop's bookkeeping."""

    policy: object
    name: str
    context: torch.Tensor
    actions: Sequence[int] | None
    poses: Sequence[Sequence[float]] | None
    max_frames: int | None
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

    def upcoming(self, t: int, total_steps: int) -> list[tuple[float, float, float]] | None:
        """Poses of frames t .. the last to generate, where the track holds them all (a clip; not live play)."""
        end = len(self.context) + total_steps
        if self.poses is None or len(self.poses) < end:
            return None
        return [tuple(float(v) for v in p) for p in self.poses[t:end]]

    def set_budget(self, max_frames: int | None) -> None:
        ref = self.context[0]
        self.max_frames = max_frames
        self.budget_state = {"max_frames": max_frames,
                             "capacity_mb": capacity_mb(max_frames, ref.numel() * ref.element_size() / 2**20)}


class Rollouts:
    """B rollouts advanced one generated frame per :meth:`step`. :func:`run_rollouts` steps it
    ``n_predict`` times; an interactive driver (pipeline.play) extends a row's ``actions`` and
    ``poses`` before each step and may swap its policy or budget between steps."""

    def __init__(self, host: RolloutHost, policies: Sequence, contexts: Sequence[torch.Tensor], *,
                 max_frames: int | None, mode: Mode, generators: Sequence[torch.Generator],
                 actions: Sequence, poses: Sequence, total_steps: int, protocol: Protocol = "default"):
        self.harness = protocol == "harness"
        self.total_steps = total_steps
        self.host = host
        self.rows = []
        for pol, context, acts, pos in zip(policies, contexts, actions, poses, strict=True):
            row = _Row(pol, getattr(pol, "name", type(pol).__name__), context.float(), acts, pos, max_frames, {})
            row.set_budget(max_frames)
            row.new_lat = list(row.context)
            row.new_rec = [FrameRecord(time=t, pose=row.info(t).pose) for t in range(len(row.context))]
            self.rows.append(row)
        self.device = contexts[0].device
        self.pose_bias_rate = getattr(host, "pose_bias_rate", None)
        self.session = start_batch(host, mode, generators)
        self.steps_done = 0

    @torch.no_grad()
    def step(self) -> torch.Tensor:
        """Plan, evict, append and generate the next frame of every row: (B, C, h, w) latents."""
        step, harness = self.steps_done, self.harness
        finish_queued_work(self.device)  # else the policy's timer absorbs the last generation
        evictions, appends = [], []
        for row in self.rows:
            t0 = time.perf_counter()
            t_new = len(row.context) + step
            cand_lat, cand_rec = row.kept_lat + row.new_lat, row.kept_rec + row.new_rec
            over_budget = row.max_frames is not None and len(cand_lat) > row.max_frames
            if harness and (step == 0 or not over_budget):  # the harness consults its policy only when over budget
                keep, demoted = list(range(len(cand_lat))), set()
            else:
                # feature_drift's reference: the clip's first context frame, even once evicted
                metas = build_frame_meta(torch.stack(cand_lat), row.context[0], cand_rec, step, fixed_access=harness)
                state = RolloutState(step=step, budget_capacity_mb=row.budget_state["capacity_mb"],
                                     total_steps=self.total_steps, target_pose=row.info(t_new).pose,
                                     pose_bias_rate=self.pose_bias_rate, upcoming_poses=row.upcoming(t_new, self.total_steps))
                plan = plan_step(row.policy, row.name, metas, state, dict(row.budget_state))
                keep, demoted = apply_plan(plan, len(cand_lat), row.max_frames, row.name)
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
            self.session.evict(evictions)
        self.session.append(appends)
        for row, held in zip(self.rows, self.session.retained_bytes()):
            row.result.peak_retained_bytes = max(row.result.peak_retained_bytes, held)

        x = self.session.generate([row.info(len(row.context) + step) for row in self.rows]).float()
        shares = getattr(self.session, "attention_mass", lambda: None)() or [None] * len(self.rows)
        for row, x_b, share in zip(self.rows, x, shares):
            _record_attention(share, row.kept_rec)
            row.generated.append(x_b)
            t_new = len(row.context) + step
            row.new_lat, row.new_rec = [x_b], [FrameRecord(time=t_new, pose=row.info(t_new).pose)]
        self.steps_done += 1
        return x


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
    """:func:`run_rollout` for B clips at once (row b: ``contexts[b]``, ``generators[b]``, ...;
    ``policy`` shared or one per row). Each row's result equals its unbatched one to float rounding;
    ``seconds`` is its 1/B share of the batch's wall time."""
    b = len(contexts)
    policies = list(policy) if isinstance(policy, (list, tuple)) else [policy] * b
    actions = [None] * b if actions is None else list(actions)
    poses = [None] * b if poses is None else list(poses)
    if not b or not len(policies) == len(generators) == len(actions) == len(poses) == b:
        raise ValueError(f"{b} contexts, {len(policies)} policies, {len(generators)} generators, {len(actions)} "
                         f"action and {len(poses)} pose tracks: need one of each per rollout (at least one)")
    for context, acts, pos in zip(contexts, actions, poses):
        _check_rollout(len(context), n_predict, max_frames, acts, pos, protocol)

    start = time.perf_counter()
    rollouts = Rollouts(host, policies, contexts, max_frames=max_frames, mode=mode, generators=generators,
                        actions=actions, poses=poses, total_steps=n_predict, protocol=protocol)
    for _ in range(n_predict):
        rollouts.step()
    finish_queued_work(rollouts.device)
    seconds = time.perf_counter() - start
    for row in rollouts.rows:
        row.result.generated = torch.stack(row.generated)
        row.result.seconds = seconds / b
        row.result.batch_size = b
    return [row.result for row in rollouts.rows]


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
    """Store one row's attention_mass of the generation just done on its frames (None: no signal)."""
    if shares is not None:
        for rec, share in zip(kept, shares):
            rec.attention_mass = float(share)
