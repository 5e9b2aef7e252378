"""FrameMeta features of the retained history, computed on latents (prev = the kept frame before):

    boundary_score      = min(1, (|x - prev| / |prev|) / 0.5)
    feature_drift       = min(1, |x - ref| / |ref|)        ref = first context frame of the clip
    temporal_similarity = max(0, cos(x, prev))
    motion_strength     = min(1, mean |x - prev|)           keyframe_score = motion_strength

The oldest kept frame has change features 0 and similarity 1. Ages are clip-time differences.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from pipeline.rollout.api import FrameMeta

EPS = 1e-8
BOUNDARY_SCALE = 0.5  # a relative change of 50% saturates the boundary score


RECENT_STEPS = 4  # recent_hit_count counts accesses within this many generation steps


@dataclass
class FrameRecord:
    """The loop's bookkeeping for one retained frame (what FrameMeta reports besides features)."""

    time: int  # index in the clip: 0 = first context frame
    pose: tuple[float, float, float] | None = None  # recorded pose, if the data has one
    attention_mass: float | None = None  # its share of the host's attention at the last generation
    long_term_resident: bool = False  # a plan demoted it to long-term memory once
    access_count: int = 0  # generation steps this frame was in the history for
    last_access_step: int = -1
    recent_steps: tuple[int, ...] = ()

    def touch(self, step: int) -> None:
        """The frame was attended to when generating frame ``step``."""
        self.access_count += 1
        self.last_access_step = step
        self.recent_steps = tuple(s for s in (*self.recent_steps, step) if s > step - RECENT_STEPS)


def latent_features(latents: torch.Tensor, ref: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-frame change features of a history (T, ...) against its previous kept frame and ref."""
    x = latents.reshape(len(latents), -1).float()
    ref = ref.reshape(-1).float()
    n = len(x)
    boundary, similarity, motion = x.new_zeros(n), x.new_ones(n), x.new_zeros(n)  # on the latents' device
    if n > 1:
        cur, prev = x[1:], x[:-1]
        diff = cur - prev
        prev_norm = prev.norm(dim=1)
        boundary[1:] = ((diff.norm(dim=1) / prev_norm.clamp_min(EPS)) / BOUNDARY_SCALE).clamp(max=1.0)
        cos = (cur * prev).sum(dim=1) / (cur.norm(dim=1) * prev_norm).clamp_min(EPS)
        similarity[1:] = cos.clamp(min=0.0)
        motion[1:] = diff.abs().mean(dim=1).clamp(max=1.0)
    drift = ((x - ref).norm(dim=1) / ref.norm().clamp_min(EPS)).clamp(max=1.0)
    return {"boundary_score": boundary, "feature_drift": drift, "temporal_similarity": similarity, "motion_strength": motion}


def build_frame_meta(
    latents: torch.Tensor, ref: torch.Tensor, records: list[FrameRecord], step: int = 0, fixed_access: bool = False
) -> list[FrameMeta]:
    """One FrameMeta per history frame, oldest first, before generating frame ``step``
    (``fixed_access``: access counts fixed at 1, as the published harness)."""
    if len(records) != len(latents):
        raise ValueError(f"{len(latents)} latents but {len(records)} frame records")
    features = latent_features(latents, ref)
    feats = dict(zip(features, torch.stack(list(features.values())).cpu().tolist()))  # one device transfer
    size_mb = latents[0].numel() * latents.element_size() / 2**20
    newest = records[-1].time
    metas = []
    for i, rec in enumerate(records):
        age = newest - rec.time
        metas.append(
            FrameMeta(
                chunk_id=i,
                age=age,
                dynamic_age=age,
                recentness=1.0 / (1.0 + age),
                size_mb=size_mb,
                boundary_score=feats["boundary_score"][i],
                feature_drift=feats["feature_drift"][i],
                temporal_similarity=feats["temporal_similarity"][i],
                motion_strength=feats["motion_strength"][i],
                keyframe_score=feats["motion_strength"][i],
                long_term_resident=rec.long_term_resident,
                compression_state="none",
                access_count=1 if fixed_access else rec.access_count,
                recent_hit_count=1 if fixed_access else sum(s > step - 1 - RECENT_STEPS for s in rec.recent_steps),
                last_access_step=rec.last_access_step,
                time=rec.time,
                pose=rec.pose,
                attention_mass=rec.attention_mass,
            )
        )
    return metas
