"""The tokenizer's training frames, streamed from data/frames.zarr a block of steps at a time.

Steps come in blocks of ``block_steps``. A block's frames are drawn as groups of ``per_chunk``
frames, each group from one chunk of one video (chunks in proportion to their frames, so every
frame is as likely as under uniform sampling) and read in one slice, so one decompressed chunk
serves ``per_chunk`` frames; then the block's frames are shuffled across its steps, so a batch
holds frames of about as many chunks as it has frames (neighbouring frames of one chunk in one
batch would make it less diverse). The batch of step s is a pure function of (seed, s).
"""

from __future__ import annotations

import math
from typing import Iterator

import numpy as np
import torch
from torch.utils.data import Dataset

from pipeline.data.stores import StoreError
from pipeline.data.streaming import SplitIndex, StoreReader, loader


class FrameBlocks(Dataset):
    """Item b: uint8 frames (block_steps, batch_size, H, W, 3), the batches of steps
    b * block_steps ... (b + 1) * block_steps - 1."""

    def __init__(self, index: SplitIndex, *, batch_size: int, per_chunk: int, block_steps: int, seed: int):
        if not len(index) or not index.frames:
            raise StoreError(f"{index.store}: no frames in the split (check extract.splits)")
        self.index, self.batch_size, self.seed = index, batch_size, seed
        self.per_chunk, self.block_steps = max(1, per_chunk), max(1, block_steps)
        self.reader = StoreReader(index.store)
        starts = [(v, s) for v, n in enumerate(index.lengths) for s in range(0, int(n), index.chunk)]
        self.chunks = np.asarray(starts, dtype=np.int64).reshape(-1, 2)  # (chunks, 2): video, first frame
        self.sizes = np.minimum(index.chunk, index.lengths[self.chunks[:, 0]] - self.chunks[:, 1])
        self.weights = self.sizes / self.sizes.sum()

    def __len__(self) -> int:
        return 2**62  # indexed by block; a sampler says which

    def picks(self, block: int) -> tuple[list[tuple[int, np.ndarray]], np.ndarray]:
        """(chunk, frame offsets in it) of each group of a block, and the order that deals the
        block's frames (groups concatenated) to its steps."""
        rng = np.random.default_rng([self.seed, block, 3])
        total = self.block_steps * self.batch_size
        chunks = rng.choice(len(self.chunks), size=math.ceil(total / self.per_chunk), p=self.weights)
        groups, left = [], total
        for c in chunks:
            n = min(self.per_chunk, left)
            groups.append((int(c), np.sort(rng.choice(self.sizes[c], size=n, replace=n > self.sizes[c]))))
            left -= n
        return groups, rng.permutation(total)

    def __getitem__(self, block: int) -> torch.Tensor:
        groups, order = self.picks(block)
        frames = []
        for c, offsets in groups:
            video, first = self.chunks[c]
            frames.append(self.reader.read(self.index.ids[video], "frames", int(first), int(first + offsets[-1] + 1))[offsets])
        frames = np.concatenate(frames)[order]
        return torch.from_numpy(frames.reshape(self.block_steps, self.batch_size, *frames.shape[1:]))


def frame_batches(blocks: FrameBlocks, start: int, stop: int, *, workers: int, device: torch.device) -> Iterator[torch.Tensor]:
    """The batches of steps start..stop-1, in order, from blocks read ahead by ``workers`` processes."""
    k = blocks.block_steps
    first, last = start // k, (stop - 1) // k
    for b, block in zip(range(first, last + 1), loader(blocks, first, last + 1, workers=workers, device=device)):
        for step in range(max(start, b * k), min(stop, (b + 1) * k)):
            yield block[step - b * k]


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
