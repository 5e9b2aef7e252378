"""Pose memory: pose embeddings, temporal attention biases and pose recall (docs/models.md#pose-recall).

Poses are (x, y, heading in degrees), NaN where unknown; distances are in units of
``POSE_BIAS_STEPS`` typical steps (the train split's median move per frame, :func:`pose_stats`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

POSE_FEATURES = 32  # 6 octaves of sin/cos for x and y, 4 harmonics of the heading
POSE_BIAS_STEPS = 8.0  # pose distances are measured in units of 8 typical steps
STILL_MOVE = 1e-3  # a move shorter than this (per frame) is standing still: not a typical step


@dataclass(frozen=True)
class PoseStats:
    """Where the train split's agent goes: the centre of its positions and its typical step."""

    center: tuple[float, float] = (0.0, 0.0)
    step: float = 1.0


def typical_step(moves) -> float:
    """The median distance moved per frame, standing still excluded; 1.0 when nothing moves."""
    moves = np.asarray(moves, dtype=np.float64)
    moves = moves[moves > STILL_MOVE]
    return float(np.median(moves)) if len(moves) else 1.0


def pose_stats(tracks: Iterable[np.ndarray | None], max_moves: int = 1 << 20) -> PoseStats | None:
    """The centre and typical step of recorded poses, one video's (T, 3) track at a time (None: a
    video without poses); None when no video has any. The median is over at most ~2 * ``max_moves``
    moves: beyond that, every other move is dropped, so memory stays bounded on any data set."""
    n, total, kept, thin = 0, np.zeros(2), [], 1
    for track in tracks:
        if track is None:
            continue
        xy = track[:, :2].astype(np.float64)
        n, total = n + len(xy), total + xy.sum(axis=0)
        kept.append(np.linalg.norm(np.diff(xy, axis=0), axis=1)[::thin])
        while sum(len(m) for m in kept) > 2 * max_moves:
            kept, thin = [m[::2] for m in kept], thin * 2
    if n == 0:
        return None
    center = total / n
    return PoseStats(center=(float(center[0]), float(center[1])), step=typical_step(np.concatenate(kept)))


def pose_features(poses: torch.Tensor, center, step: float) -> torch.Tensor:
    """(..., 3) -> (..., POSE_FEATURES), zeros where unknown: positions in units of 32 typical steps from
    the train centre at 6 octaves (finest half a step), the heading at harmonics 1..4."""
    known = ~torch.isnan(poses).any(dim=-1, keepdim=True)
    poses = torch.nan_to_num(poses.float())
    xy = (poses[..., :2] - torch.as_tensor(center, dtype=torch.float32, device=poses.device)) / (32 * step)
    octaves = math.pi * 2.0 ** torch.arange(6, dtype=torch.float32, device=poses.device)
    angles = torch.cat([(xy[..., :, None] * octaves).flatten(-2),
                        torch.deg2rad(poses[..., 2:]) * torch.arange(1, 5, device=poses.device)], dim=-1)
    return torch.cat([angles.sin(), angles.cos()], dim=-1) * known


def pose_distance(pose_q: torch.Tensor, pose_k: torch.Tensor, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, Tq, 3), (B, Tk, 3) -> (|dxy / scale|^2, 1 - cos dheading), each (B, Tq, Tk), NaN where a pose is
    unknown; each is 1 at ``scale`` apart or a quarter turn."""
    dxy = (pose_q[:, :, None, :2] - pose_k[:, None, :, :2]) / scale
    turn = 1 - torch.cos(torch.deg2rad(pose_q[:, :, None, 2] - pose_k[:, None, :, 2]))
    return dxy.pow(2).sum(-1), turn


class TemporalBias(nn.Module):
    """Per-head logit bias of a temporal layer: -(a |dxy/s|^2 + b (1 - cos dheading)) - c tau_key, with
    rates kept >= 0 by softplus, starting at ``pose_bias`` / ``clean_bias`` (0: off). The first
    temporal layer starts every head pose-focused, later ones half of them."""

    def __init__(self, heads: int, pose_step: float, pose_bias: float, clean_bias: float, first: bool):
        super().__init__()
        self.scale = POSE_BIAS_STEPS * pose_step
        self.pose_rate = self.clean_rate = None
        if pose_bias > 0:
            focused = heads if first else heads // 2
            rates = torch.tensor([pose_bias if h < focused else 0.0 for h in range(heads)])
            self.pose_rate = nn.Parameter(_inverse_softplus(rates)[:, None].repeat(1, 2))
        if clean_bias > 0:
            self.clean_rate = nn.Parameter(_inverse_softplus(torch.full((heads,), clean_bias)))

    def forward(self, pose_q, pose_k, tau_k):
        """pose_q (B, Tq, 3), pose_k (B, Tk, 3) or None; tau_k (B, Tk) -> (B, H, Tq, Tk) or None."""
        bias = None
        if self.pose_rate is not None and pose_q is not None:
            a, b = F.softplus(self.pose_rate).unbind(-1)  # (H,), (H,)
            dist, turn = pose_distance(pose_q.float(), pose_k.float(), self.scale)  # (B, Tq, Tk) each
            pose = -(a[:, None, None] * dist[:, None] + b[:, None, None] * turn[:, None])
            bias = torch.nan_to_num(pose, nan=0.0)  # frames without a pose: no pose bias
        if self.clean_rate is not None:
            clean = -(F.softplus(self.clean_rate)[:, None, None] * tau_k.float()[:, None, None, :])
            bias = clean if bias is None else bias + clean
        return bias


class PoseRecall(nn.Module):
    """The view a frame recalls: the clean latents of the earlier frames it may see, averaged with weights
    softmax(-(a |dxy/s|^2 + b (1 - cos dheading))), rates learned as logarithms. Observed frames are
    recalled first when any is visible (a rollout's own frames compound its blur); nothing: zeros."""

    def __init__(self, pose_step: float, rate: float):
        super().__init__()
        self.scale = POSE_BIAS_STEPS * pose_step
        self.log_rate = nn.Parameter(torch.full((2,), math.log(rate)))

    def forward(self, memory, pose_q, pose_k, allowed, observed=None):
        """memory (B, Tk, C, h, w), poses (B, Tq, 3) / (B, Tk, 3), allowed (B, Tq, Tk), observed (B, Tk) or
        None (all) -> (B, Tq, C, h, w)."""
        a, b = self.log_rate.exp()
        dist, turn = pose_distance(pose_q.float(), pose_k.float(), self.scale)
        logits = -(a * dist + b * turn)
        allowed = allowed & ~torch.isnan(logits)  # frames without a pose recall nothing, and are not recalled
        if observed is not None:
            seen = allowed & observed[:, None, :]
            allowed = torch.where(seen.any(dim=-1, keepdim=True), seen, allowed)
        weights = torch.nan_to_num(logits.masked_fill(~allowed, float("-inf")).softmax(dim=-1))  # none allowed: 0
        return torch.einsum("bqk,bkchw->bqchw", weights.to(memory.dtype), memory)


def _inverse_softplus(rate: torch.Tensor) -> torch.Tensor:
    rate = rate.clamp(min=1e-4)
    return rate + torch.log(-torch.expm1(-rate))  # log(exp(rate) - 1), finite for large rates too
