"""A benchmark on small real zarr stores and the deterministic toy host (no trained model)."""

import numpy as np
import torch
import zarr

from pipeline.benchmark.clips import select_clips
from pipeline.benchmark.run import run_benchmark
from pipeline.config import BenchmarkParams
from pipeline.data.stores import ShardedArrayWriter
from tests.rollout.toy_host import ToyHost

VIDEOS = {"a_train": ("train", 60), "b_test": ("test", 40), "c_test": ("test", 12), "d_val": ("val", 40)}


def make_stores(root):
    """frames.zarr and latents.zarr of VIDEOS under root; returns their paths."""
    frames_root = zarr.open_group(str(root / "frames.zarr"), mode="w")
    latents_root = zarr.open_group(str(root / "latents.zarr"), mode="w")
    host = ToyHost()
    rng = np.random.default_rng(0)
    for vid, (split, n) in VIDEOS.items():
        # a moving gradient: consecutive frames are similar, so the scores are not all noise
        x = np.linspace(0, 1, 64)
        frames = np.stack([(np.add.outer(x, x)[..., None] * 0.5 + 0.3 * np.sin(t / 4 + np.arange(3)))
                           .clip(0, 1) for t in range(n)])
        frames = (frames * 255).astype(np.uint8) + rng.integers(0, 3, frames.shape, dtype=np.uint8)
        for root_, attrs in ((frames_root, {"split": split, "fps": 20.0}), (latents_root, {"split": split})):
            g = root_.create_group(vid)
            g.attrs.update(attrs)
        w = ShardedArrayWriter(frames_root[vid], "frames", (64, 64, 3), np.uint8, 8, 64)
        w.append(frames)
        w.close()
        frames_root[vid].create_array("actions", data=np.arange(n, dtype=np.int64) % 3)
        lat = host.encode(torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255).numpy().astype(np.float16)
        w = ShardedArrayWriter(latents_root[vid], "latents", lat.shape[1:], np.float16, 8, 64)
        w.append(lat)
        w.close()
    return root / "frames.zarr", root / "latents.zarr"


def leave_and_return(away: int) -> np.ndarray:
    """Poses: spin at the origin, walk 20 units a frame east for ``away`` frames, walk back facing west, spin."""
    spin = [(0.0, 0.0, 22.5 * i) for i in range(16)]
    out = [(20.0 * (i + 1), 0.0, 0.0) for i in range(away)]
    back = [(20.0 * (away - i - 1), 0.0, 180.0) for i in range(away)]
    return np.array(spin + out + back + spin, dtype=np.float32)


def make_revisit_stores(root, away: int = 40):
    """frames.zarr and latents.zarr of one train and one test video that leave and return (with poses)."""
    frames_root = zarr.open_group(str(root / "frames.zarr"), mode="w")
    latents_root = zarr.open_group(str(root / "latents.zarr"), mode="w")
    host = ToyHost()
    poses = leave_and_return(away)
    n = len(poses)
    for vid, split in (("r_train", "train"), ("r_test", "test")):
        # a frame's pixels depend on its pose only: a revisited view looks as it did
        x = np.linspace(0, 1, 64)
        frames = np.stack([(np.add.outer(x, x)[..., None] * 0.5 + 0.3 * np.sin(p[0] / 40 + np.radians(p[2]) + np.arange(3)))
                           .clip(0, 1) for p in poses])
        frames = (frames * 255).astype(np.uint8)
        for root_, attrs in ((frames_root, {"split": split, "fps": 20.0}), (latents_root, {"split": split})):
            root_.create_group(vid).attrs.update(attrs)
        w = ShardedArrayWriter(frames_root[vid], "frames", (64, 64, 3), np.uint8, 8, 64)
        w.append(frames)
        w.close()
        frames_root[vid].create_array("actions", data=np.arange(n, dtype=np.int64) % 3)
        frames_root[vid].create_array("poses", data=poses)
        lat = host.encode(torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255).numpy().astype(np.float16)
        w = ShardedArrayWriter(latents_root[vid], "latents", lat.shape[1:], np.float16, 8, 64)
        w.append(lat)
        w.close()
    return root / "frames.zarr", root / "latents.zarr"


def bench_params(**kw):
    base = dict(policies=["recent_window", "full_history"], modes=["recompute", "kv"],
                workloads={"short": {"context": 3, "predict": 4}, "long": {"context": 10, "predict": 6}},
                budgets={"full": None, "tight": 2}, n_clips=2, seeds=[0], sampling_steps=4, media_clips=1)
    base.update(kw)
    return BenchmarkParams(**base)


def run(stores, scorer, bench=None, seed=0):
    bench = bench or bench_params()
    frames, latents = stores
    clips = {name: select_clips(frames, latents, w.context, w.predict, bench.n_clips, seed)
             for name, w in bench.workloads.items()}
    return run_benchmark(ToyHost(), bench, clips, seed=seed, media_clips=bench.media_clips, scorer=scorer,
                            progress=False)
