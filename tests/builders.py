"""Small stores with known, learnable content, built with the project's own writer; params
sections and model configs taken from params.yaml with a test's changes."""

import copy
import zlib
from functools import cache
from pathlib import Path

import numpy as np
import zarr

from pipeline.config import Params, merge_files, read_param_files
from pipeline.data.stores import ShardedArrayWriter
from pipeline.networks import dynamics

PARAMS_YAML = Path(__file__).resolve().parents[1] / "params.yaml"


@cache
def _default_raw() -> dict:
    return merge_files(read_param_files(PARAMS_YAML))


def default_raw_params() -> dict:
    """params.yaml and settings.yaml merged, as plain data (a fresh copy to change)."""
    return copy.deepcopy(_default_raw())


def params_section(name: str, **changes):
    """Section `name` of the params (params.yaml + settings.yaml) with `changes`, validated: e.g.
    the tokenizer of a tiny run, ``params_section("tokenizer", steps=30, base_channels=8)``. The
    training sections have no schema defaults, so those files are where every value a test does
    not set comes from."""
    return Params.model_fields[name].annotation(**{**_default_raw()[name], **changes})


def dynamics_config(latent_shape=(4, 8, 8), *, n_actions=3, latent_mean=0.0, latent_std=1.0, poses=None, **model):
    """A dynamics model config: params.yaml's `model` section with `model` changes, for latent
    frames of `latent_shape` (no normalisation unless latent_mean/latent_std say otherwise; pose
    conditioning only with `poses`, a PoseStats)."""
    return dynamics.dynamics_config(params_section("model", **model), latent_shape, n_actions=n_actions,
                                    latent_mean=latent_mean, latent_std=latent_std, poses=poses)


def add_poses(group, n: int, seed: int) -> np.ndarray:
    """A pose track (x, y, heading in degrees) of n frames stored as extract stores it; returns it."""
    # Its own stream per video (the other content is unchanged): seeded with the video's name too.
    rng = np.random.default_rng([seed, zlib.crc32(group.basename.encode())])
    poses = np.cumsum(rng.normal(size=(n, 3)), axis=0).astype(np.float32)
    poses[:, 2] %= 360
    group.create_array("poses", data=poses, chunks=(n, 3), config={"write_empty_chunks": True})
    group.attrs["pose_fields"] = ["x", "y", "heading_deg"]
    return poses


def write_latents_store(path, *, videos=(("v0", "train", 40), ("v1", "train", 40), ("v2", "train", 40),
                                         ("v3", "val", 40), ("v4", "test", 40)),
                        shape=(4, 8, 8), n_actions=3, seed=0, poses_for=()):
    """A tiny data/latents.zarr whose content is learnable: a smooth bump that moves one
    column left/still/right as the action recorded at the previous frame says. The videos named
    in `poses_for` also get poses."""
    rng = np.random.default_rng(seed)
    c, h, w = shape
    root = zarr.open_group(str(path), mode="w")
    root.attrs["latent_shape"] = list(shape)
    yy, xx = np.mgrid[0:h, 0:w]
    weights = rng.normal(size=(c, 1, 1))  # one "game": every video shares the look, not the moves
    for vid, split, n in videos:
        g = root.create_group(vid)
        g.attrs.update({"split": split, "fps": 20.0, **({"n_actions": n_actions} if n_actions else {})})
        actions = rng.integers(0, max(n_actions, 1), n)
        row, col, frames = rng.integers(0, h), float(rng.integers(0, w)), []
        for t in range(n):
            if t and n_actions:
                col += int(actions[t - 1]) - 1
            elif t:
                col += 1
            dx = (xx - col + w / 2) % w - w / 2
            bump = np.exp(-((yy - row) ** 2 + dx**2) / 4.0)
            frames.append(2.0 * weights * bump[None] - 0.5)
        writer = ShardedArrayWriter(g, "latents", shape, np.float16, chunk_frames=8, shard_frames=32)
        writer.append(np.stack(frames))
        writer.close()
        if n_actions:
            aw = ShardedArrayWriter(g, "actions", (), np.int64, chunk_frames=8, shard_frames=32)
            aw.append(actions)
            aw.close()
        if vid in poses_for:
            add_poses(g, n, seed)
    return path



def write_frames_store(path, *, videos=(("v0", "train", 24), ("v1", "train", 24), ("v2", "val", 24), ("v3", "test", 24)),
                       size=32, n_actions=4, seed=0, poses_for=()):
    """Clips of two coloured squares bouncing over a static smooth background, like sprites
    over a ring; actions are random (they do not drive the motion). The videos named in
    `poses_for` also get poses."""
    rng = np.random.default_rng(seed)
    root = zarr.open_group(str(path), mode="w")
    yy, xx = np.mgrid[0:size, 0:size]
    background = np.stack([40 + 3 * xx, 90 + 0 * xx, 60 + 2 * yy], -1)  # smooth, static "ring"
    for vid, split, n in videos:
        g = root.create_group(vid)
        g.attrs.update({"split": split, "fps": 20.0, "n_actions": n_actions})
        pos = rng.uniform(0, size - 8, (2, 2))
        vel = rng.choice([-1, 1], (2, 2)) * rng.uniform(2, 4, (2, 2))
        colors = rng.integers(120, 256, (2, 3))
        frames = []
        for _ in range(n):
            img = background.copy()
            for (y, x), c in zip(pos.astype(int), colors):
                img[y : y + 8, x : x + 8] = c
            frames.append(img)
            pos = pos + vel
            vel = np.where((pos < 0) | (pos > size - 8), -vel, vel)  # bounce off the borders
            pos = np.clip(pos, 0, size - 8)
        writer = ShardedArrayWriter(g, "frames", (size, size, 3), np.uint8, chunk_frames=8, shard_frames=16)
        writer.append(np.stack(frames).astype(np.uint8))
        writer.close()
        aw = ShardedArrayWriter(g, "actions", (), np.int64, chunk_frames=8, shard_frames=16)
        aw.append(rng.integers(0, n_actions, n))
        aw.close()
        if vid in poses_for:
            add_poses(g, n, seed)
    return path


