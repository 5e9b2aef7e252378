"""Frames and latents stores: zarr v3, one group per video, arrays chunked in time and sharded.

``data/frames.zarr/<video_id>/frames``   uint8 (T, H, W, 3)   (+ ``actions`` int64 (T,))
``data/latents.zarr/<video_id>/latents`` float16 (T, C, h, w)

A shard holds many time chunks, so one video is a handful of files (DVC hashes every file).
Writers stream: they buffer one shard of frames at a time and write it whole, so memory stays
constant whatever the video length and no shard is read back and rewritten.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import zarr
from zarr.codecs import BloscCodec


class StoreError(RuntimeError):
    """A store or a video group is missing or inconsistent."""


def compressor() -> BloscCodec:
    return BloscCodec(cname="zstd", clevel=5, shuffle="bitshuffle")


class ShardedArrayWriter:
    """Append frames along time to a new array; writes whole shards as they fill."""

    def __init__(self, group: zarr.Group, name: str, frame_shape: tuple[int, ...], dtype, chunk_frames: int, shard_frames: int):
        if shard_frames % chunk_frames:
            raise ValueError(f"shard_frames {shard_frames} is not a multiple of chunk_frames {chunk_frames}")
        self.array = group.create_array(
            name,
            shape=(0, *frame_shape),
            dtype=dtype,
            chunks=(chunk_frames, *frame_shape),
            shards=(shard_frames, *frame_shape),
            compressors=compressor(),
            fill_value=0,
        )
        self.shard_frames = shard_frames
        self._buf = np.empty((shard_frames, *frame_shape), dtype=dtype)
        self._fill = 0
        self.n_frames = 0

    def append(self, frames: np.ndarray) -> None:
        frames = np.asarray(frames, dtype=self._buf.dtype)
        while len(frames):
            take = min(len(frames), self.shard_frames - self._fill)
            self._buf[self._fill : self._fill + take] = frames[:take]
            self._fill += take
            frames = frames[take:]
            if self._fill == self.shard_frames:
                self._flush()

    def _flush(self) -> None:
        if not self._fill:
            return
        start = self.n_frames
        self.array.resize((start + self._fill, *self.array.shape[1:]))
        self.array[start : start + self._fill] = self._buf[: self._fill]
        self.n_frames += self._fill
        self._fill = 0

    def close(self) -> int:
        """Write what is buffered; returns the number of frames written."""
        self._flush()
        return self.n_frames


@dataclass(frozen=True)
class VideoEntry:
    id: str
    split: str
    n_frames: int
    fps: float
    has_actions: bool
    attrs: dict


def open_store(path: str | Path) -> zarr.Group:
    path = Path(path)
    if not (path / "zarr.json").is_file():
        raise StoreError(f"{path}: not a zarr store (run the stage that writes it first)")
    return zarr.open_group(str(path), mode="r")


def list_videos(path: str | Path, split: str | None = None, array: str = "frames") -> list[VideoEntry]:
    """Videos of a store, sorted by id, optionally of one split only."""
    root = open_store(path)
    entries = []
    for vid in sorted(root.group_keys()):
        g = root[vid]
        attrs = dict(g.attrs)
        if array not in g:
            raise StoreError(f"{path}/{vid}: no {array!r} array")
        entry = VideoEntry(
            id=vid,
            split=attrs.get("split", "train"),
            n_frames=int(g[array].shape[0]),
            fps=float(attrs.get("fps", 0.0)),
            has_actions="actions" in g,
            attrs=attrs,
        )
        if split is None or entry.split == split:
            entries.append(entry)
    return entries


def read_array(path: str | Path, video_id: str, array: str, start: int = 0, stop: int | None = None) -> np.ndarray:
    root = open_store(path)
    if video_id not in root:
        raise StoreError(f"{path}: no video {video_id!r}")
    return root[video_id][array][start:stop]


def read_actions(path: str | Path, video_id: str, start: int = 0, stop: int | None = None) -> np.ndarray | None:
    g = open_store(path)[video_id]
    return g["actions"][start:stop] if "actions" in g else None
