"""DMLab episodes in FAR's npz format (``video`` uint8 (T, 64, 64, 3), ``actions`` (T,) ints) as
benchmark clips: an episode's first frames, as FAR's evaluation split takes them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pipeline.data.pixels import to_pixels


@dataclass
class FarClip:
    id: str
    frames: torch.Tensor  # (T, 3, H, W) float in [0, 1]
    actions: list[int]  # one per frame


def list_dmlab_episodes(directory: str | Path) -> list[Path]:
    root = Path(directory).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"benchmark.far.dmlab_npz: {root} is not a directory of DMLab .npz episodes")
    paths = sorted(root.rglob("*.npz"))
    if not paths:
        raise FileNotFoundError(f"benchmark.far.dmlab_npz: no .npz episodes under {root}")
    return paths


def read_dmlab_episode(path: str | Path, n_frames: int | None = None) -> FarClip:
    """The first ``n_frames`` (all when None) frames and actions of one episode."""
    path = Path(path)
    with np.load(path) as data:
        missing = {"video", "actions"} - set(data.files)
        if missing:
            raise ValueError(f"{path}: missing {sorted(missing)} (FAR's DMLab npz has 'video' and 'actions')")
        video, actions = data["video"], data["actions"]
    if video.ndim != 4 or video.shape[-1] != 3 or video.dtype != np.uint8:
        raise ValueError(f"{path}: 'video' must be uint8 (T, H, W, 3), got {video.dtype} {video.shape}")
    if actions.shape != (len(video),) or not np.issubdtype(actions.dtype, np.integer):
        raise ValueError(
            f"{path}: 'actions' must be ints of shape ({len(video)},), got {actions.dtype} {actions.shape}"
        )
    if n_frames is not None:
        if len(video) < n_frames:
            raise ValueError(f"{path}: {len(video)} frames, the workload needs {n_frames}")
        video, actions = video[:n_frames], actions[:n_frames]
    frames = to_pixels(video)
    return FarClip(id=path.stem, frames=frames, actions=[int(a) for a in actions])


def episode_paths(directory: str | Path, n_clips: int, n_frames: int) -> list[Path]:
    """The first ``n_clips`` episodes (by path) with ``n_frames`` frames; ValueError when none has."""
    paths = []
    for path in list_dmlab_episodes(directory):
        with np.load(path) as data:
            if "actions" in data.files and len(data["actions"]) < n_frames:  # tiny; the video is checked on read
                continue  # too short for this workload
        paths.append(path)
        if len(paths) == n_clips:
            break
    if not paths:
        raise ValueError(f"benchmark.far.dmlab_npz: no episode under {directory} has {n_frames} frames")
    return paths


def dmlab_clips(directory: str | Path, n_clips: int, n_frames: int) -> list[FarClip]:
    """The first ``n_clips`` episodes (sorted by path) that hold ``n_frames`` frames."""
    return [read_dmlab_episode(path, n_frames) for path in episode_paths(directory, n_clips, n_frames)]
