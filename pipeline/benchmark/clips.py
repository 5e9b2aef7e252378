"""Benchmark clips: windows of test-split video (or FAR's DMLab episodes) with ground truth, context,
actions and poses, drawn deterministically from the seed; placement: docs/statistics.md#clip-placement."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import torch

from pipeline.benchmark.revisits import revisit_starts
from pipeline.data.pixels import to_pixels
from pipeline.data.stores import (
    StoreError,
    list_videos,
    open_store,
    read_actions,
    read_array,
    read_poses,
)
from pipeline.paths import FRAMES, LATENTS


class BenchmarkError(RuntimeError):
    """The data or params cannot support the benchmark as configured; the message names the key or data."""


@dataclass
class Clip:
    video_id: str
    start: int
    pixels: torch.Tensor  # (context + predict, 3, H, W) float in [0, 1]: the ground truth
    context_latents: torch.Tensor | None  # (context, C, h, w); None: the host encodes the pixels
    actions: np.ndarray | None  # (context + predict,) int: the action that led to each frame, -1 none
    poses: np.ndarray | None = None  # (context + predict, 3) float: the pose recorded in each frame


def eligible_videos(frames_path: str | Path, context: int, predict: int, split: str = "test") -> list:
    """The videos of a split (the benchmark's: test) long enough for a ``context -> predict``
    workload; BenchmarkError when there is none."""
    length = context + predict
    videos = list_videos(frames_path, split=split)
    if not videos:
        raise BenchmarkError(f"{frames_path}: no video in the {split} split (extract.splits.{split})")
    eligible = [v for v in videos if v.n_frames >= length]
    if not eligible:
        have = ", ".join(f"{v.id}: {v.n_frames}" for v in videos)
        raise BenchmarkError(
            f"{frames_path}: no {split} video has the {length} frames a {context} -> {predict} workload needs ({have})"
        )
    return eligible


def select_clips(frames_path: str | Path, latents_path: str | Path | None, context: int, predict: int,
                 n_clips: int, seed: int, split: str = "test", revisit_gap: int | None = None,
                 workload: str = "") -> list[Clip]:
    """``n_clips`` windows of ``context + predict`` frames: videos in a seeded order, round robin, each
    video's windows placed by :func:`window_starts`, or with ``revisit_gap`` at its returns
    (:func:`revisit_placements`). Depends only on (seed, context, predict, n_clips, revisit_gap, data)."""
    length = context + predict
    eligible = eligible_videos(frames_path, context, predict, split)
    latents_root = open_store(latents_path) if latents_path is not None else None
    rng = np.random.default_rng([seed, context, predict])
    order = [eligible[i] for i in rng.permutation(len(eligible))]
    if revisit_gap is None:
        counts = [len(range(i, n_clips, len(order))) for i in range(len(order))]  # clips per video, round robin
        starts = [window_starts(video.n_frames, length, count, rng) for video, count in zip(order, counts)]
        placed = [(order[i % len(order)], int(starts[i % len(order)][i // len(order)])) for i in range(n_clips)]
    else:
        placed = revisit_placements(frames_path, order, context, predict, n_clips, revisit_gap, split, workload)
    clips = []
    for video, start in placed:
        latents = None
        if latents_root is not None:
            if video.id not in latents_root:
                raise StoreError(f"{latents_path}: no latents for {split} video {video.id!r} (rerun the tokenize stage)")
            latents = torch.from_numpy(read_array(latents_path, video.id, "latents", start, start + context)).float()
        pixels = to_pixels(read_array(frames_path, video.id, "frames", start, start + length))
        poses = read_poses(frames_path, video.id, start, start + length) if video.has_poses else None
        clips.append(Clip(video.id, start, pixels, latents, conditioning_actions(frames_path, video, start, length), poses))
    return clips


REVISIT_SHARE = 0.5  # a revisit clip: at least half of its predicted frames show views only the old context saw


def revisit_placements(frames_path, order: list, context: int, predict: int, n_clips: int, min_gap: int,
                       split: str, workload: str) -> list[tuple[object, int]]:
    """Up to ``n_clips`` (video, start) at returns (:func:`pipeline.benchmark.revisits.revisit_starts`),
    videos round robin in ``order``; BenchmarkError when the split has none."""
    per_video = []
    for video in order:
        if not video.has_poses:
            raise BenchmarkError(f"benchmark.workloads.{workload}.revisit_gap: {split} video {video.id!r} has no "
                                 "poses (revisits are found from poses)")
        poses = read_poses(frames_path, video.id, 0, video.n_frames)
        per_video.append(revisit_starts(poses, context, predict, min_gap, REVISIT_SHARE))
    placed = []
    for rank in range(max(map(len, per_video), default=0)):
        placed += [(video, starts[rank]) for video, starts in zip(order, per_video) if rank < len(starts)]
    if not placed:
        raise BenchmarkError(f"benchmark.workloads.{workload}: no {split} video returns to a view last seen "
                             f"{min_gap}+ frames before within a {context} -> {predict} clip (record with the "
                             "explorer's revisit motif, or lower revisit_gap)")
    return placed[:n_clips]


def window_starts(n_frames: int, length: int, count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` sorted window starts in a video of ``n_frames``: uniform over the non-overlapping placements,
    or evenly spread when the video cannot hold them apart."""
    if count == 0:
        return np.zeros(0, dtype=np.int64)
    free = n_frames - count * length
    if free >= 0:
        # stars and bars: sorted distinct draws minus their rank are the offsets, uniform over placements
        offsets = np.sort(rng.choice(free + count, size=count, replace=False)) - np.arange(count)
        return offsets + length * np.arange(count)
    return np.round(np.linspace(0, n_frames - length, count)).astype(np.int64)


def conditioning_actions(frames_path, video, start: int, length: int) -> np.ndarray | None:
    """The action that led to each clip frame (recorded at the frame before; -1 before the
    video's first frame), the convention the dynamics model is trained with."""
    if not video.has_actions:
        return None
    recorded = read_actions(frames_path, video.id, max(0, start - 1), start + length - 1)
    return np.concatenate([[-1], recorded]) if start == 0 else recorded


def workload_clips(params, workloads: Iterable[str] | None = None, split: str = "test") -> dict[str, list[Clip]]:
    """Clips per workload from this pipeline's stores (latent context for the pipeline host), or FAR's DMLab
    episodes when ``benchmark.far.dmlab_npz`` is set. ``split="val"``: to design a policy off the test clips."""
    bench = params.benchmark
    names = list(workloads if workloads is not None else bench.workloads)
    clips = {}
    for name in names:
        if name not in bench.workloads:
            raise KeyError(f"benchmark.workloads: no workload {name!r} (have {', '.join(bench.workloads)})")
        w = bench.workloads[name]
        if bench.host == "far" and bench.far.dmlab_npz:
            from pipeline.data.dmlab import dmlab_clips

            clips[name] = [
                Clip(c.id, 0, c.frames, None, np.asarray(c.actions))  # episodes come cut to the clip length
                for c in dmlab_clips(bench.far.dmlab_npz, bench.n_clips, w.context + w.predict)
            ]
        else:
            latents = LATENTS if bench.host == "pipeline" else None
            clips[name] = select_clips(FRAMES, latents, w.context, w.predict, bench.n_clips, params.seed, split,
                                       revisit_gap=w.revisit_gap, workload=name)
    return clips
