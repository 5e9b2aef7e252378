"""The rollout API of the ar-video-kv-temporal-policy task (MLS-Bench), kept name for name so that
users can bring their own policies.

A *host* generates latent frames one at a time from a retained history; before each frame a
*policy* gets one :class:`FrameMeta` per candidate frame and returns a :class:`TemporalCachePlan`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

import torch

Action = Literal["keep", "drop", "demote_to_long_term"]
ACTIONS: tuple[str, ...] = ("keep", "drop", "demote_to_long_term")
Mode = Literal["recompute", "kv"]


@dataclass
class FrameMeta:
    """What a policy knows about one retained frame; features computed on latents."""

    chunk_id: int  # 0 = oldest kept frame
    age: int  # 0 = newest frame
    dynamic_age: int  # = age
    recentness: float  # 1 / (1 + age)
    size_mb: float  # latent bytes of the frame / 2**20
    boundary_score: float  # min(1, (|x - prev| / |prev|) / 0.5)
    feature_drift: float  # min(1, |x - ref| / |ref|), ref = first context frame of the clip
    temporal_similarity: float  # max(0, cos(x, prev))
    motion_strength: float  # min(1, mean |x - prev|)
    keyframe_score: float  # = motion_strength
    long_term_resident: bool = False
    compression_state: str = "none"
    access_count: int = 0
    recent_hit_count: int = 0
    last_access_step: int = -1
    # Optional signals beyond the published task's (None where a host or data set has none):
    time: int | None = None  # the frame's index in its clip (0 = first context frame)
    pose: tuple[float, float, float] | None = None  # the recorded pose (x, y, heading in degrees)
    attention_mass: float | None = None  # share of the host's temporal attention at the last generation


@dataclass(frozen=True)
class FrameInfo:
    """What the data says about a frame besides its pixels: the host conditions on it."""

    time: int  # index in the clip: 0 = first context frame
    action: int | None = None  # the action that led to this frame (recorded at the frame before); None or -1: none
    pose: tuple[float, float, float] | None = None  # the agent's recorded pose (x, y, heading in degrees)
    observed: bool = True  # False for a frame the rollout generated (its pixels are the host's, not the data's)


@dataclass
class ChunkDecision:
    chunk_id: int  # FrameMeta.chunk_id of the frame
    action: str  # one of ACTIONS
    priority: float = 0.0  # informational


@dataclass
class TemporalCachePlan:
    """A policy's answer. Only ``chunk_decisions`` is applied (a frame without a decision is dropped,
    the newest always stays); the other fields are informational."""

    chunk_decisions: list[ChunkDecision]
    retention_family: str = "custom"
    anchor_preservation_rule: str = ""
    boundary_transition_rule: str = ""
    queue_depth: int = 0
    long_term_budget_fraction: float = 0.0
    chunkwise_reuse: bool = False
    compression_mode: str = "none"


@dataclass
class RolloutState:
    step: int  # 0 = the first generated frame
    budget_capacity_mb: float
    total_steps: int
    target_pose: tuple[float, float, float] | None = None  # pose of the frame about to be generated, if recorded
    pose_bias_rate: float | None = None  # the host model's initial pose-distance attention rate, if it has one
    upcoming_poses: list[tuple[float, float, float]] | None = None  # recorded poses of this frame and every later
    # one the rollout will generate (target_pose first), where the clip is known in advance; None otherwise


class RetentionPolicy(Protocol):
    """What the loop calls. ``budget_state = {"max_frames": int | None, "capacity_mb": float}`` (None /
    inf: unlimited). Optional ``uses_budget_state = False``: decisions never read the budget, so the
    benchmark may reuse a rollout that stayed within a smaller budget."""

    name: str

    def build_temporal_cache_plan(
        self, chunk_meta_list: list[FrameMeta], rollout_state: RolloutState, budget_state: dict
    ) -> TemporalCachePlan: ...


@runtime_checkable
class RolloutHost(Protocol):
    """A world model the loop drives. Latents are float (C, h, w) per frame, pixels float (T, 3, H, W)
    in [0, 1]; each frame keeps its own :class:`FrameInfo` through evictions. A session holds the
    retained history: latents re-run every step (``recompute``) or a KV cache (``kv``)."""

    def encode(self, pixels: torch.Tensor) -> torch.Tensor: ...

    def decode(self, latents: torch.Tensor) -> torch.Tensor: ...

    def start(self, mode: Mode, generator: torch.Generator) -> "HostSession": ...

    # Optional: pose_bias_rate (float | None), the model's initial pose-distance attention rate, which
    # policies' attention prior uses (RolloutState.pose_bias_rate).
    # Optional: start_batch(mode, generators) -> a session for several rollouts at once
    # (pipeline.rollout.batch); hosts without it run batches one session per rollout.


class HostSession(Protocol):
    def append(self, latent: torch.Tensor, info: FrameInfo) -> None:
        """Add a frame (context or just generated) to the retained history, as clean context."""

    def evict(self, keep: list[int]) -> None:
        """Keep only the history frames at these indices (0 = oldest retained), in order."""

    def generate(self, info: FrameInfo) -> torch.Tensor:
        """Sample the frame `info` describes from the retained history (does not append it)."""

    def retained_bytes(self) -> int:
        """Real bytes held for the history: latents in recompute mode, KV tensors in kv mode."""


@dataclass
class RolloutResult:
    generated: torch.Tensor  # (n_predict, C, h, w) latents
    kept_per_step: list[int] = field(default_factory=list)  # history length each frame was generated from
    history_per_step: list[list[int]] = field(default_factory=list)  # clip time indices of that history
    peak_retained_bytes: int = 0  # max over steps of HostSession.retained_bytes()
    seconds: float = 0.0  # wall time of the whole loop (generation + policy bookkeeping); batched: 1/B of the batch's
    policy_seconds: float = 0.0  # of which FrameMeta + policy + plan application (this rollout's own)
    batch_size: int = 1  # rollouts generated together with this one (pipeline.rollout.loop.run_rollouts)
