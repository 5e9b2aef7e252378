"""Training windows over data/latents.zarr, streamed, with DreamerV4's alternating batch lengths.

A window is ``length`` consecutive latent frames of one video, starting every ``stride`` frames;
windows never cross videos. Training alternates short batches (``seq_len_short`` x
``batch_size_short``) with long ones (``seq_len_long`` x ``batch_size_long``, with probability
``long_ratio``). The global batch of step s is a pure function of (seed, s); each DDP rank reads
only its rows of it. A window is read as one slice, so a decompressed chunk serves every frame of
the window that lies in it.

With probability ``gapped_ratio`` a step's batch is *gapped* (kind "G", ``batch_size_short`` rows
of ``seq_len_short`` frames): each row spans a window of ``gapped_span`` frames of one video and keeps
its newest ``seq_len_short // 2`` frames plus the rest drawn without replacement from the older part,
in time order; ``Batch.times`` gives each kept frame's offset in its window (the model's RoPE times),
so a model trained on short rows sees the time distances of a long, sparsely retained history.

Actions: a window's conditioning action for frame t is the one recorded at frame t-1 (the action
that led to it), -1 ("no action") before a video's first frame or without actions. Poses: the
pose of each frame itself; NaN for a video without poses.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from pipeline.data.stores import POSE_SHAPE, open_store
from pipeline.data.streaming import SplitIndex, StoreReader


class WindowError(ValueError):
    """The latents cannot provide the requested windows; the message names the param."""


@dataclass
class Batch:
    kind: str  # "S", "L" or "G" (gapped)
    latents: torch.Tensor  # (B, T, C, h, w) float32: this rank's rows
    actions: torch.Tensor | None  # (B, T) int64, -1 = no action
    poses: torch.Tensor | None = None  # (B, T, 3) float32 pose of each frame, NaN = unknown
    global_rows: int = 0  # rows of the whole step's batch, over every rank
    times: torch.Tensor | None = None  # (B, T) int64 frame times (G: offsets in the window); None: 0..T-1

    @property
    def global_shape(self) -> tuple[int, ...]:
        return (self.global_rows or len(self.latents), *self.latents.shape[1:])

    def pin_memory(self) -> Batch:
        pin = lambda t: None if t is None else t.pin_memory()  # noqa: E731
        return Batch(self.kind, pin(self.latents), pin(self.actions), pin(self.poses), self.global_rows,
                     pin(self.times))


class LatentWindows:
    """Reads windows of one split's videos: latents, conditioning actions and poses."""

    def __init__(self, index: SplitIndex):
        self.index = index
        self.reader = StoreReader(index.store)

    def count(self, length: int, stride: int) -> np.ndarray:
        """(V,) windows per video."""
        return np.maximum((self.index.lengths - length) // stride + 1, 0)

    def window(self, video: int, start: int, length: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Latents (length, C, h, w), conditioning actions (length,) and poses (length, 3) of one window."""
        vid = self.index.ids[video]
        frames = self.reader.read(vid, "latents", start, start + length)
        cond = np.full(length, -1, dtype=np.int64)
        if self.index.has_actions and self.reader.has(vid, "actions") and start + length > 1:
            first = max(start - 1, 0)
            cond[first - start + 1:] = self.reader.side(vid, "actions")[first : start + length - 1]
        poses = np.full((length, *POSE_SHAPE), np.nan, dtype=np.float32)
        if self.index.with_poses[video]:
            poses = self.reader.side(vid, "poses")[start : start + length]
        return frames, cond, poses

    def stack(self, picks: list[tuple[int, int]], length: int,
              keep: np.ndarray | None = None) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """The windows at (video, start) picks, stacked: latents float32, actions or None, poses or None.
        ``keep`` (rows, T): only those offsets of each window (each frame with its own action and pose)."""
        if keep is None:
            frames, actions, poses = zip(*(self.window(v, s, length) for v, s in picks)) if picks else ((), (), ())
        else:
            # One slice per window (a chunk serves all its kept frames); only the kept frames stay.
            frames, actions, poses = zip(*(tuple(a[k] for a in self.window(v, s, length))
                                           for (v, s), k in zip(picks, keep))) if picks else ((), (), ())
            length = keep.shape[1]
        shape = (0, length, *self.index.frame_shape)
        latents = torch.from_numpy(np.stack(frames).astype(np.float32)) if picks else torch.zeros(shape)
        acts = torch.from_numpy(np.stack(actions)) if self.index.has_actions and picks else None
        pos = torch.from_numpy(np.stack(poses)) if self.index.has_poses and picks else None
        return latents, acts, pos


def window_starts(counts: np.ndarray, picks: np.ndarray, stride: int) -> list[tuple[int, int]]:
    """Global window numbers (video-major, start ascending) -> (video, start)."""
    ends = np.cumsum(counts)
    videos = np.searchsorted(ends, picks, side="right")
    return [(int(v), int(k - (ends[v] - counts[v])) * stride) for v, k in zip(videos, picks)]


class AlternatingBatches(Dataset):
    """Item s: this rank's rows of the global batch of step s: long with probability long_ratio, gapped
    with probability gapped_ratio, else short."""

    def __init__(self, windows: LatentWindows, *, seq_len_short, seq_len_long, batch_size_short, batch_size_long,
                 long_ratio, stride, seed, rows: dict[str, slice] | None = None, gapped_ratio: float = 0.0,
                 gapped_span: int | None = None):
        self.windows = windows
        self.kinds = {"S": (seq_len_short, batch_size_short, self._counts(seq_len_short, stride, "train.seq_len_short")),
                      "L": (seq_len_long, batch_size_long, self._counts(seq_len_long, stride, "train.seq_len_long"))}
        self.long_ratio, self.stride, self.seed = long_ratio, stride, seed
        self.gapped_ratio, self.gapped_span = gapped_ratio, gapped_span
        if gapped_ratio > 0:  # windows of gapped_span frames, seq_len_short of them kept
            if gapped_span is None or gapped_span < seq_len_short:
                raise WindowError(f"train.gapped_span={gapped_span}: must be >= train.seq_len_short ({seq_len_short})")
            self.kinds["G"] = (seq_len_short, batch_size_short,
                               self._counts(gapped_span, stride, "train.gapped_span", " (or set train.gapped_ratio: 0)"))
        rows = rows or {"S": slice(None), "L": slice(None)}
        self.rows = {"G": rows["S"], **rows}  # a gapped batch has the short batch's rows

    def _counts(self, length: int, stride: int, param: str, remedy: str = "") -> np.ndarray:
        counts = self.windows.count(length, stride)
        if not counts.sum():
            index = self.windows.index
            longest = int(index.lengths.argmax()) if len(index) else None
            which = "none" if longest is None else f"{index.ids[longest]!r} with {index.lengths[longest]} frames"
            raise WindowError(f"{param}={length}: no video is that long (longest of {len(index)}: {which}); "
                              f"lower {param} or use longer videos{remedy}")
        return counts

    def __len__(self) -> int:
        return 2**62  # indexed by step; a sampler says which steps

    def kind(self, step: int) -> str:
        """One uniform draw u per step: L if u < long_ratio, G if u < long_ratio + gapped_ratio, else S
        (with gapped_ratio 0, every step draws the kind it always drew)."""
        u = np.random.default_rng([self.seed, step, 0]).random()
        if u < self.long_ratio:
            return "L"
        return "G" if u < self.long_ratio + self.gapped_ratio else "S"

    def picks(self, step: int) -> tuple[str, list[tuple[int, int]]]:
        """The kind of step ``step`` and the (video, start) of every window of its global batch."""
        kind = self.kind(step)
        _, size, counts = self.kinds[kind]
        total = int(counts.sum())
        rng = np.random.default_rng([self.seed, step, 1])
        # Without replacement within a batch while there are enough windows.
        return kind, window_starts(counts, rng.choice(total, size=size, replace=size > total), self.stride)

    def kept(self, step: int, rows: int) -> np.ndarray:
        """(rows, seq_len_short) int64: the offsets a gapped batch keeps of each of its windows of gapped_span
        frames: the newest seq_len_short // 2, consecutive, after the rest drawn without replacement from the
        older part, ascending. A function of (seed, step), for the global batch."""
        t, span = self.kinds["S"][0], self.gapped_span
        newest = t // 2
        rng = np.random.default_rng([self.seed, step, 3])
        older = [np.sort(rng.choice(span - newest, size=t - newest, replace=False)) for _ in range(rows)]
        recent = np.arange(span - newest, span)
        return np.stack([np.concatenate([o, recent]) for o in older]).astype(np.int64).reshape(rows, t)

    def __getitem__(self, step: int) -> Batch:
        kind, picks = self.picks(step)
        mine = self.rows[kind]
        if kind == "G":
            kept = self.kept(step, len(picks))[mine]
            latents, actions, poses = self.windows.stack(picks[mine], self.gapped_span, keep=kept)
            return Batch(kind, latents, actions, poses, global_rows=len(picks), times=torch.from_numpy(kept))
        length = self.kinds[kind][0]
        latents, actions, poses = self.windows.stack(picks[mine], length)
        return Batch(kind, latents, actions, poses, global_rows=len(picks))


def latent_shape(path: str | Path) -> tuple[int, int, int]:
    root = open_store(path)
    shape = root.attrs.get("latent_shape")
    if shape is None:
        first = next(iter(sorted(root.group_keys())), None)
        if first is None:
            raise WindowError(f"{path}: the latents store holds no video")
        shape = root[first]["latents"].shape[1:]
    return tuple(int(s) for s in shape)
