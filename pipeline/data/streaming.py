"""Training data streamed from a store: an index of a split, a per-process reader, a DataLoader.

Nothing here holds a split in memory. A trainer's batch of step s is a pure function of
(seed, s) (the batch classes in ``frame_batches`` and ``latent_windows``), so DataLoader workers
can build batches in any order and any number of them gives the same stream; a resumed run
starts the loader at its step.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import zarr
from torch.utils.data import DataLoader, Dataset

from pipeline.data.stores import StoreError, list_videos, open_store, read_array


@dataclass(frozen=True)
class SplitIndex:
    """The videos of one split of a store: ids, lengths and what they carry, without their data."""

    store: Path
    array: str  # the data array: "frames" or "latents"
    ids: tuple[str, ...]
    lengths: np.ndarray  # (V,) frames per video
    frame_shape: tuple[int, ...]  # one frame of the data array
    chunk: int  # frames per chunk of the data array (the largest among the videos)
    n_actions: int  # 0 when no video has actions
    with_poses: tuple[bool, ...]  # per video

    @classmethod
    def open(cls, store: str | Path, split: str, array: str) -> SplitIndex:
        store = Path(store)
        entries = list_videos(store, split, array=array)
        root = open_store(store)
        shapes = {tuple(root[e.id][array].shape[1:]) for e in entries}
        if len(shapes) > 1:
            raise StoreError(f"{store}: the {split!r} videos have {array} of different shapes {sorted(shapes)}")
        chunk = max((root[e.id][array].chunks[0] for e in entries), default=1)
        n_actions = 0
        for e in entries:  # one video's actions at a time
            if e.has_actions and e.n_frames:
                actions = read_array(store, e.id, "actions")
                n_actions = max(n_actions, int(e.attrs.get("n_actions", 0)), int(actions.max()) + 1)
        return cls(store, array, tuple(e.id for e in entries), np.array([e.n_frames for e in entries], dtype=np.int64),
                   next(iter(shapes), ()), int(chunk), n_actions, tuple(e.has_poses for e in entries))

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def frames(self) -> int:
        return int(self.lengths.sum())

    @property
    def has_actions(self) -> bool:
        return self.n_actions > 0

    @property
    def has_poses(self) -> bool:
        return any(self.with_poses)


class StoreReader:
    """Reads slices of a store's videos; opens the store lazily, once per process (a DataLoader
    worker opens its own after it starts). A video's side arrays (actions, poses: a few bytes a
    frame, stored as one chunk) are read whole and kept for the ``side_videos`` most recent videos."""

    def __init__(self, store: str | Path, side_videos: int = 64):
        self.store = Path(store)
        self.side_videos = side_videos
        self._groups: dict[str, zarr.Group] = {}
        self._sides: OrderedDict[tuple[str, str], np.ndarray] = OrderedDict()

    def __getstate__(self) -> dict:  # open handles and cached arrays stay in the process that made them
        return {"store": self.store, "side_videos": self.side_videos, "_groups": {}, "_sides": OrderedDict()}

    def side(self, video_id: str, array: str) -> np.ndarray:
        """A side array of a video, whole (least recently used videos' are dropped beyond ``side_videos``)."""
        key = (video_id, array)
        if key in self._sides:
            self._sides.move_to_end(key)
        else:
            self._sides[key] = self.read(video_id, array)
            if len(self._sides) > 2 * self.side_videos:
                self._sides.popitem(last=False)
        return self._sides[key]

    def group(self, video_id: str) -> zarr.Group:
        if video_id not in self._groups:
            self._groups[video_id] = open_store(self.store)[video_id]
        return self._groups[video_id]

    def read(self, video_id: str, array: str, start: int = 0, stop: int | None = None) -> np.ndarray:
        return read_array(self.store, video_id, array, start, stop, group=self.group(video_id))

    def has(self, video_id: str, array: str) -> bool:
        return array in self.group(video_id)


def split_stats(index: SplitIndex, reader: StoreReader | None = None) -> tuple[float, float]:
    """Mean and std of every value of a split's data array, read a chunk at a time (Chan et al.'s
    pairwise update of count, mean and squared deviations, in float64)."""
    reader = reader or StoreReader(index.store)
    n, mean, m2 = 0, 0.0, 0.0
    for vid, length in zip(index.ids, index.lengths):
        for start in range(0, int(length), index.chunk):
            x = reader.read(vid, index.array, start, start + index.chunk).astype(np.float64)
            nb, mb = x.size, float(x.mean())
            m2b = float(((x - mb) ** 2).sum())
            delta, total = mb - mean, n + nb
            mean += delta * nb / total
            m2 += m2b + delta * delta * n * nb / total
            n = total
    if n == 0:
        raise StoreError(f"{index.store}: the split holds no frames")
    return mean, float(np.sqrt(m2 / n))


def loader(batches: Dataset, start: int, stop: int, *, workers: int, device: torch.device, prefetch: int = 2):
    """The batches of steps start..stop-1, in order, built by ``workers`` processes (0: in this
    one) ``prefetch`` steps ahead each; pinned for a fast copy to a CUDA device."""
    # Its own generator: the workers' base seed is not drawn from the global RNG, whose state a
    # checkpoint saves (a resumed run would otherwise draw once more than an uninterrupted one).
    return DataLoader(batches, batch_size=None, sampler=range(start, stop), num_workers=workers,
                      prefetch_factor=prefetch if workers else None, pin_memory=device.type == "cuda",
                      persistent_workers=False, generator=torch.Generator().manual_seed(0))
