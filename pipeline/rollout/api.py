"""The rollout API of the ar-video-kv-temporal-policy task (MLS-Bench), kept name for name so
users can bring their own policies. Elsewhere in this package "ar-video-kv-temporal-policy"
names that task: its harness, its baselines and its metric line format.

A *host* generates latent frames one at a time from a retained history; after each new frame a
*policy* looks at one :class:`FrameMeta` per retained frame and returns a
:class:`TemporalCachePlan`; the loop applies the plan (see ``pipeline.rollout.loop``).
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
    action: int | None = None  # the action that led to this frame (recorded at the frame before)
    pose: tuple[float, float, float] | None = None  # the agent's recorded pose (x, y, heading in degrees)
    observed: bool = True  # False for a frame the rollout generated (its pixels are the host's, not the data's)


@dataclass
class ChunkDecision:
    chunk_id: int
    action: str  # one of ACTIONS
    priority: float = 0.0  # informational


@dataclass
class TemporalCachePlan:
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


class RetentionPolicy(Protocol):
    """What the loop calls. ``budget_state = {"max_frames": int | None, "capacity_mb": float}``
    (``None`` / ``inf``: unlimited).

    Optional: ``uses_budget_state = False`` declares that decisions never read the budget
    (budget_state, rollout_state.budget_capacity_mb); the benchmark then reuses a rollout that
    stayed within a smaller budget instead of running it again (the result is identical).
    """

    name: str

    def build_temporal_cache_plan(
        self, chunk_meta_list: list[FrameMeta], rollout_state: RolloutState, budget_state: dict
    ) -> TemporalCachePlan: ...


@runtime_checkable
class RolloutHost(Protocol):
    """A world model that the policy-managed loop drives.

    Latents are float tensors (C, h, w) per frame; pixels are float (T, 3, H, W) in [0, 1].
    Every frame comes with its :class:`FrameInfo`: its time in the clip, the action *that led
    to it* (recorded at the frame before, as the dynamics model is trained; -1 or ``None``:
    none) and its recorded pose (``None``: none). A history with gaps keeps each frame's own
    info, so actions, poses and time positions stay aligned to the retained frames after
    eviction.

    A *session* holds the retained history. In ``recompute`` mode it keeps latents and re-runs
    them as context at every step; in ``kv`` mode it keeps the host's KV cache and evicting a
    frame removes its keys/values (nothing is recomputed).
    """

    def encode(self, pixels: torch.Tensor) -> torch.Tensor: ...

    def decode(self, latents: torch.Tensor) -> torch.Tensor: ...

    def start(self, mode: Mode, generator: torch.Generator) -> "HostSession": ...

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
