"""Stage tokenize's work: encode a frames store into data/latents.zarr (same groups, layout, attributes
and side arrays; ``latents`` float16 (T, C, h, w)), atomically; several ranks write the same bytes
as one (docs/stages.md)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import zarr
from tqdm import tqdm

from pipeline.atomic import atomic_dir, remove_stale_tmp
from pipeline.data.pixels import to_pixels
from pipeline.data.stores import SIDE_ARRAYS, ShardedArrayWriter, StoreError, list_videos, open_store, read_array


def _layout(array: zarr.Array) -> tuple[int, int]:
    """(chunk_frames, shard_frames) of a time-major array."""
    chunk = array.chunks[0]
    return chunk, (array.shards[0] if array.shards else chunk)


@torch.no_grad()
def encode_frames(model, frames: np.ndarray, device) -> np.ndarray:
    """uint8 (N, H, W, 3) -> float16 (N, C, h, w)."""
    x = to_pixels(frames, device)
    return model.encode(x).to(torch.float16).cpu().numpy()


def encode_store(frames: str | Path, model, tokenizer_hash: str, out: str | Path, batch_size: int, device="cpu",
                 dist=None) -> dict:
    """Write the latents store `out` from `frames` with `model` (anything with ``encode``, ``image_size``,
    ``latent_shape``, ``config``); returns a summary. ``dist``: this rank (None: alone)."""
    from pipeline.runtime.distributed import Dist, barrier, broadcast_from_main

    dist = dist or Dist()
    frames, out = Path(frames), Path(out)
    videos = list_videos(frames)
    if not videos:
        raise StoreError(f"{frames}: no videos to encode")
    size = tuple(model.image_size)
    src = open_store(frames)
    for v in videos:
        got = tuple(src[v.id]["frames"].shape[1:3])
        if got != size:
            raise StoreError(f"{frames}/{v.id}: frames are {got[0]}x{got[1]}, the tokenizer was trained on "
                             f"{size[0]}x{size[1]} (retrain it on this store)")
    mine = videos[dist.rank :: dist.world]
    summary = {"videos": len(videos), "frames": sum(v.n_frames for v in videos), "latent_shape": list(model.latent_shape)}

    def encode_mine(tmp: Path) -> None:
        root = zarr.open_group(str(tmp), mode="r+")
        with tqdm(total=sum(v.n_frames for v in mine), desc="tokenize", unit="frame", dynamic_ncols=True,
                  disable=not dist.main) as bar:
            for v in mine:
                _encode_video(frames, src[v.id], v, root, model, batch_size, device, bar)

    if not dist.main:
        encode_mine(Path(broadcast_from_main(None, dist)))
        barrier(dist)  # rank 0 renames the store once every rank has written its videos
        return summary
    remove_stale_tmp(out.parent, out.name)  # left by a killed run
    with atomic_dir(out) as tmp:
        root = zarr.open_group(str(tmp), mode="w")
        root.attrs.update({
            "tokenizer_hash": tokenizer_hash,
            "latent_shape": list(model.latent_shape),
            "tokenizer_config": model.config,
        })
        broadcast_from_main(str(tmp), dist)
        encode_mine(tmp)
        barrier(dist)
    return summary


def _encode_video(frames: Path, source, v, root, model, batch_size: int, device, bar) -> None:
    """One video's group: its latents, side arrays and attributes."""
    group = root.create_group(v.id)
    group.attrs.update(v.attrs)
    chunk, shard = _layout(source["frames"])
    # `with`: on a crash the write in flight finishes before atomic_dir removes the tmp store
    with ShardedArrayWriter(group, "latents", model.latent_shape, np.float16, chunk, shard) as writer:
        for start in range(0, v.n_frames, batch_size):
            batch = read_array(frames, v.id, "frames", start, start + batch_size, group=source)
            writer.append(encode_frames(model, batch, device))
            bar.update(len(batch))
    for name in (a for a in SIDE_ARRAYS if a in source):  # actions, poses: copied as they are
        side = source[name]
        side_chunk, side_shard = _layout(side)
        with ShardedArrayWriter(group, name, side.shape[1:], side.dtype, side_chunk, side_shard) as writer:
            writer.append(read_array(frames, v.id, name, group=source))
