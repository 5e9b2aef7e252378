"""Training windows over data/latents.zarr (never across videos), in DreamerV4's alternating short and
long batches; the batch of step s is a function of (seed, s) alone. A window conditions frame t on
the action recorded at t-1 (-1: none); its poses are its own frames' (NaN: none).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from pipeline.data.stores import POSE_SHAPE, list_videos, open_store, read_actions, read_array, read_poses


class WindowError(ValueError):
    """The latents cannot provide the requested windows; the message names the param."""


@dataclass
class LatentVideos:
    """The latents of one split, held in memory as float16 (4 KiB a frame at 8x16x16)."""

    ids: list[str]
    latents: list[np.ndarray]  # (T, C, h, w) float16
    actions: list[np.ndarray | None]  # (T,) int64
    n_actions: int  # 0 when no video has actions
    poses: list[np.ndarray | None] = field(default_factory=list)  # (T, 3) float32; [] = not loaded

    @classmethod
    def load(cls, path: str | Path, split: str) -> "LatentVideos":
        """Every video of `split`; a damaged store raises stores.StoreError naming the file."""
        entries = list_videos(path, split, array="latents")
        latents = [read_array(path, e.id, "latents") for e in entries]
        actions = [read_actions(path, e.id) for e in entries]
        poses = [read_poses(path, e.id) for e in entries]
        n_actions = 0
        for e, a in zip(entries, actions):
            if a is not None and len(a):
                n_actions = max(n_actions, int(e.attrs.get("n_actions", 0)), int(a.max()) + 1)
        return cls([e.id for e in entries], latents, actions, n_actions, poses)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def has_actions(self) -> bool:
        return self.n_actions > 0

    @property
    def has_poses(self) -> bool:
        return any(p is not None for p in self.poses)

    def windows(self, length: int, stride: int, param: str = "train.seq_len") -> np.ndarray:
        """(video index, start) of every window; a clear error when no video is long enough."""
        starts = [(v, s) for v, lat in enumerate(self.latents) for s in range(0, len(lat) - length + 1, stride)]
        if not starts:
            longest = max(range(len(self)), key=lambda v: len(self.latents[v]), default=None)
            which = "none" if longest is None else f"{self.ids[longest]!r} with {len(self.latents[longest])} frames"
            raise WindowError(
                f"{param}={length}: no video is that long (longest of {len(self)}: {which}); "
                f"lower {param} or use longer videos"
            )
        return np.asarray(starts, dtype=np.int64)

    def window(self, video: int, start: int, length: int) -> tuple[np.ndarray, np.ndarray]:
        """Latents (length, C, h, w) and conditioning actions (length,) of one window."""
        frames = self.latents[video][start : start + length]
        recorded = self.actions[video]
        cond = np.full(length, -1, dtype=np.int64)
        if recorded is not None:
            prev = np.arange(start - 1, start + length - 1)
            ok = prev >= 0
            cond[ok] = recorded[prev[ok]]
        return frames, cond

    def window_poses(self, video: int, start: int, length: int) -> np.ndarray:
        """Poses (length, 3) float32 of one window's own frames; NaN for a video without poses."""
        recorded = self.poses[video] if self.poses else None
        if recorded is None:
            return np.full((length, *POSE_SHAPE), np.nan, dtype=np.float32)
        return recorded[start : start + length]


def latent_shape(path: str | Path) -> tuple[int, int, int]:
    root = open_store(path)
    shape = root.attrs.get("latent_shape")
    if shape is None:
        first = next(iter(sorted(root.group_keys())), None)
        if first is None:
            raise WindowError(f"{path}: the latents store holds no video")
        shape = root[first]["latents"].shape[1:]
    return tuple(int(s) for s in shape)


@dataclass
class Batch:
    kind: str  # "S" or "L"
    latents: torch.Tensor  # (B, T, C, h, w) float32
    actions: torch.Tensor | None  # (B, T) int64, -1 = no action
    poses: torch.Tensor | None = None  # (B, T, 3) float32 pose of each frame, NaN = unknown

    def rows(self, index: slice) -> "Batch":
        return Batch(self.kind, self.latents[index], None if self.actions is None else self.actions[index],
                     None if self.poses is None else self.poses[index])  # fmt: skip


class AlternatingBatches:
    """The global batch of any step: short (cheap) with probability 1 - long_ratio, else long."""

    def __init__(self, videos: LatentVideos, *, seq_len_short, seq_len_long, batch_size_short,
                 batch_size_long, long_ratio, stride, seed):
        self.videos = videos
        self.kinds = {
            "S": (seq_len_short, batch_size_short, videos.windows(seq_len_short, stride, "train.seq_len_short")),
            "L": (seq_len_long, batch_size_long, videos.windows(seq_len_long, stride, "train.seq_len_long")),
        }
        self.long_ratio = long_ratio
        self.seed = seed

    def kind(self, step: int) -> str:
        return "L" if np.random.default_rng([self.seed, step, 0]).random() < self.long_ratio else "S"

    def batch(self, step: int) -> Batch:
        kind = self.kind(step)
        length, size, windows = self.kinds[kind]
        rng = np.random.default_rng([self.seed, step, 1])
        # Without replacement within a batch while there are enough windows.
        picks = rng.choice(len(windows), size=size, replace=size > len(windows))
        frames, actions = zip(*(self.videos.window(int(v), int(s), length) for v, s in windows[picks]))
        latents = torch.from_numpy(np.stack(frames).astype(np.float32))
        acts = torch.from_numpy(np.stack(actions)) if self.videos.has_actions else None
        poses = None
        if self.videos.has_poses:
            poses = torch.from_numpy(np.stack([self.videos.window_poses(int(v), int(s), length) for v, s in windows[picks]]))
        return Batch(kind, latents, acts, poses)
