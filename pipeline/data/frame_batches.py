"""The tokenizer's training frames, streamed from data/frames.zarr in chunk-sized groups.

A batch of ``batch_size`` frames is drawn as groups of ``per_chunk`` frames, each group from one
chunk of one video (chunks drawn in proportion to their frames, so every frame is as likely as
in uniform sampling): one decompressed chunk serves ``per_chunk`` frames instead of one.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch.utils.data import Dataset

from pipeline.data.stores import StoreError
from pipeline.data.streaming import SplitIndex, StoreReader


class FrameBatches(Dataset):
    """Item s: the uint8 frames (batch_size, H, W, 3) of training step s, a pure function of (seed, s)."""

    def __init__(self, index: SplitIndex, *, batch_size: int, per_chunk: int, seed: int):
        if not len(index) or not index.frames:
            raise StoreError(f"{index.store}: no frames in the split (check extract.splits)")
        self.index, self.batch_size, self.per_chunk, self.seed = index, batch_size, max(1, per_chunk), seed
        self.reader = StoreReader(index.store)
        starts = [(v, s) for v, n in enumerate(index.lengths) for s in range(0, int(n), index.chunk)]
        self.chunks = np.asarray(starts, dtype=np.int64).reshape(-1, 2)  # (chunks, 2): video, first frame
        sizes = np.minimum(index.chunk, index.lengths[self.chunks[:, 0]] - self.chunks[:, 1])
        self.sizes = sizes
        self.weights = sizes / sizes.sum()

    def __len__(self) -> int:
        return 2**62  # indexed by step; a sampler says which steps

    def picks(self, step: int) -> list[tuple[int, np.ndarray]]:
        """(chunk, frame offsets in it) of each group of step ``step``."""
        rng = np.random.default_rng([self.seed, step, 3])
        groups = math.ceil(self.batch_size / self.per_chunk)
        chunks = rng.choice(len(self.chunks), size=groups, p=self.weights)
        out, left = [], self.batch_size
        for c in chunks:
            n = min(self.per_chunk, left)
            out.append((int(c), np.sort(rng.choice(self.sizes[c], size=n, replace=n > self.sizes[c]))))
            left -= n
        return out

    def __getitem__(self, step: int) -> torch.Tensor:
        frames = []
        for c, offsets in self.picks(step):
            video, first = self.chunks[c]
            block = self.reader.read(self.index.ids[video], "frames", int(first), int(first + offsets[-1] + 1))
            frames.append(block[offsets])
        return torch.from_numpy(np.concatenate(frames))


def val_pairs(index: SplitIndex, n: int, reader: StoreReader | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``n`` frames spread evenly over the split's videos, each with the frame before it (for the
    persistence baseline): uint8 (n, H, W, 3) twice. Reads only those frames."""
    reader = reader or StoreReader(index.store)
    usable = np.maximum(index.lengths - 1, 0)  # frame t >= 1 of each video
    total = int(usable.sum())
    if total == 0:
        raise StoreError(f"{index.store}: val videos have fewer than 2 frames each: no persistence baseline possible")
    picks = np.linspace(0, total - 1, min(n, total)).round().astype(np.int64)
    ends = np.cumsum(usable)
    prev, cur = [], []
    for k in picks:
        video = int(np.searchsorted(ends, k, side="right"))
        t = int(k - (ends[video] - usable[video])) + 1
        pair = reader.read(index.ids[video], "frames", t - 1, t + 1)
        prev.append(pair[0])
        cur.append(pair[1])
    return np.stack(prev), np.stack(cur)
