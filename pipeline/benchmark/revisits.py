"""Revisits, from poses alone: when a frame shows a view seen before, and how long ago.

A *view* is a position and a heading: two frames show the same view when they stand within
VIEW_RADIUS map units and face within VIEW_TURN degrees of each other (ViZDoom's map units; a
walked frame covers ~13). The revisit workload's clips are placed with these functions, and its
metrics group frames by how long ago their view was last seen; neither ever looks at pixels or at
a model's output (docs/benchmark.md#the-revisit-workload).
"""

from __future__ import annotations

import numpy as np

from pipeline.benchmark.keys import GAP_BINS, GAP_LABELS

VIEW_RADIUS = 48.0  # map units
VIEW_TURN = 22.5  # degrees: one turn step of the explorer
RETURN_GAP = 64  # frames: a predicted frame whose view the context last showed this long ago is a return


def same_view(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(Ta, 3), (Tb, 3) poses -> (Ta, Tb) bool: same view (NaN poses match nothing)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    near = np.hypot(a[:, None, 0] - b[None, :, 0], a[:, None, 1] - b[None, :, 1]) <= VIEW_RADIUS
    turn = np.abs((a[:, None, 2] - b[None, :, 2] + 180.0) % 360.0 - 180.0) <= VIEW_TURN + 1e-6
    return near & turn


def gaps_since_seen(poses: np.ndarray, n_ctx: int) -> np.ndarray:
    """(T - n_ctx,) per predicted frame t: t minus the newest context frame showing its view; NaN if no
    context frame does. Only the context counts: what the rollout generates is not a memory of the world."""
    poses = np.asarray(poses, dtype=np.float64)
    match = same_view(poses[n_ctx:], poses[:n_ctx])  # (P, C)
    newest = np.where(match.any(axis=1), n_ctx - 1 - np.argmax(match[:, ::-1], axis=1), -1)
    t = np.arange(n_ctx, len(poses))
    return np.where(newest >= 0, t - newest, np.nan).astype(np.float64)


SELF_MIN_GAP = 8  # frames: a predicted view counts as generated before when its match is at least this old


def earlier_generated(poses: np.ndarray, n_ctx: int) -> np.ndarray:
    """(T - n_ctx,) per predicted frame: the index (in the prediction) of the newest predicted frame at
    least SELF_MIN_GAP before it that shows its view, -1 if none: where the model drew this view itself."""
    pred = np.asarray(poses, dtype=np.float64)[n_ctx:]
    match = same_view(pred, pred)
    out = np.full(len(pred), -1, dtype=np.int64)
    for t in range(len(pred)):
        earlier = np.flatnonzero(match[t, : max(0, t - SELF_MIN_GAP + 1)])
        if len(earlier):
            out[t] = earlier[-1]
    return out


def gap_bin(gap: float) -> str:
    """The GAP_BINS label of a gap ("new" when the view was not seen)."""
    if not np.isfinite(gap):
        return "new"
    for (lo, hi), label in zip(GAP_BINS, GAP_LABELS):
        if lo <= gap <= hi:
            return label
    raise ValueError(f"gap {gap} below 1")


def revisit_score(poses: np.ndarray, n_ctx: int, min_gap: int) -> float:
    """Share of the predicted frames that return: the context showed their view, but not in its newest
    ``min_gap`` frames (so no budget of fewer frames holds it by keeping the newest)."""
    poses = np.asarray(poses, dtype=np.float64)
    return _returning_share(same_view(poses[n_ctx:], poses[:n_ctx]), min_gap)


def _returning_share(match: np.ndarray, min_gap: int) -> float:
    """:func:`revisit_score` from the (predicted, context) same-view matrix."""
    cut = max(0, match.shape[1] - min_gap)
    old, recent = match[:, :cut].any(axis=1), match[:, cut:].any(axis=1)
    return float((old & ~recent).mean())


def revisit_starts(poses: np.ndarray, context: int, predict: int, min_gap: int, min_share: float) -> list[int]:
    """Window starts of one video's revisit clips, one per return: a return is a stretch of starts whose
    predicted frames revisit at least ``min_share`` (:func:`revisit_score`), stretches less than
    ``min_gap`` apart counting as one; its clip starts where the share is highest (earliest on ties)."""
    poses = np.asarray(poses, dtype=np.float64)
    length = context + predict
    views = same_view(poses, poses)  # once per video; each start reads its window's block
    scores = np.array([_returning_share(views[s + context : s + length, s : s + context], min_gap)
                       for s in range(len(poses) - length + 1)])
    qualifying = np.flatnonzero(scores >= min_share)
    if not len(qualifying):
        return []
    events = np.split(qualifying, np.flatnonzero(np.diff(qualifying) >= min_gap) + 1)
    return [int(e[np.argmax(scores[e])]) for e in events]
