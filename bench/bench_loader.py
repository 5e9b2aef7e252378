"""What the streaming loaders deliver, next to what a training step consumes, in one run.

    python bench/bench_loader.py                 # default sizes and the GPU preset's, workers 0, 1, 2
    python bench/bench_loader.py --steps 64 --workers 0 2

For each data shape, a store laid out as the stages write it (chunks of ``extract.chunk_frames``,
shards of ``extract.shard_frames``, Blosc/zstd), then:

- loader: frames/s the DataLoader delivers on its own (frames a batch holds / wall time), per
  number of workers;
- training: the real training loop (``train_tokenizer`` / ``train_dynamics``) at that shape for a
  few steps with each number of workers: frames/s it consumes and the share of its time spent
  waiting for the loader (``loader_wait_share`` of its metrics file). Only the default shapes
  train here: the GPU preset's steps take minutes on a CPU (no GPU on this machine).

Frames: the embedded default's recordings (data/frames.zarr when present, else synthetic game-like
frames), 256 px ones upscaled 4x from them (the same content, compressing as game frames do).
Latents: float16 noise at the tokenizer's latent shape (what latents look like to a compressor).
Writes bench/results/loader.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import zarr

from pipeline.config import merge_files, parse_params, read_param_files
from pipeline.data.frame_batches import FrameBlocks
from pipeline.data.latent_windows import AlternatingBatches, LatentWindows
from pipeline.data.stores import ShardedArrayWriter, read_array
from pipeline.data.streaming import SplitIndex, loader
from pipeline.training.dynamics import train_dynamics
from pipeline.training.tokenizer import train_tokenizer

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from measure import write_block  # noqa: E402

GPU_PRESET = {"frame_size": 256, "frames_per_chunk": 8, "block_steps": 64, "latent_shape": (8, 64, 64),
              "seq_len_short": 32, "seq_len_long": 64, "batch_size_short": 32, "batch_size_long": 8}  # docs/models.md


def default_params():
    return parse_params(merge_files(read_param_files(ROOT / "params.yaml")))


def source_frames(n: int, size: int) -> np.ndarray:
    """n game frames at `size` px: the default recordings where there are some, else bouncing squares."""
    store = ROOT / "data/frames.zarr"
    if store.is_dir():
        root = zarr.open_group(str(store), mode="r")
        frames = np.concatenate([read_array(store, v, "frames") for v in sorted(root.group_keys())[:4]])
    else:
        yy, xx = np.mgrid[0:64, 0:64]
        frames = np.stack([np.stack([(xx + t) % 64 * 4, yy * 4, ((xx - yy + 2 * t) % 64) * 4], -1) for t in range(500)])
    frames = np.resize(frames.astype(np.uint8), (n, *frames.shape[1:]))
    k = size // frames.shape[1]
    return frames.repeat(k, axis=1).repeat(k, axis=2) if k > 1 else frames


def write_store(path: Path, array: str, videos: dict[str, np.ndarray], splits: dict[str, str], chunk: int, shard: int) -> Path:
    root = zarr.open_group(str(path), mode="w")
    for vid, data in videos.items():
        group = root.create_group(vid)
        group.attrs.update({"split": splits[vid], "fps": 17.5})
        with ShardedArrayWriter(group, array, data.shape[1:], data.dtype, chunk, shard) as writer:
            writer.append(data)
    if array == "latents":
        root.attrs["latent_shape"] = list(next(iter(videos.values())).shape[1:])
    return path


def loader_rate(batches, frames_per_batch, items: int, workers: int) -> float:
    """Frames/s the loader alone delivers over `items` items (after the first, which starts the workers)."""
    it = iter(loader(batches, 0, items + 1, workers=workers, device=torch.device("cpu")))
    next(it)
    t = time.perf_counter()
    n = sum(frames_per_batch(b) for b in it)
    return n / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=128, help="steps per case: several of the tokenizer's shuffle blocks")
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--videos", type=int, default=6, help="videos per store (500 frames each)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench/results/loader.json")
    ap.add_argument("--docs", type=Path, default=ROOT / "docs/scale.md")
    args = ap.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    params = default_params()
    ex, tok, tp = params.extract, params.tokenizer, params.train
    splits = {f"v{i}": ("val" if i == 0 else "train") for i in range(args.videos)}
    results: dict = {"steps": args.steps, "workers": args.workers, "cases": {}}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cases = []
        default_blocks = {"frame_size": ex.size, "frames_per_chunk": tok.frames_per_chunk, "block_steps": tok.block_steps}
        for label, shape in (("tokenizer frames, default", default_blocks), ("tokenizer frames, GPU preset", GPU_PRESET)):
            size = shape["frame_size"]
            videos = {v: source_frames(500, size) for v in splits}
            store = write_store(tmp / f"frames{size}.zarr", "frames", videos, splits, ex.chunk_frames, ex.shard_frames)
            batches = FrameBlocks(SplitIndex.open(store, "train", "frames"), batch_size=tok.batch_size,
                                  per_chunk=shape["frames_per_chunk"], block_steps=shape["block_steps"], seed=0)
            cases.append((label, store, batches, lambda b: b.shape[0] * b.shape[1], shape is default_blocks,
                          max(1, args.steps // shape["block_steps"])))  # an item is a block of steps
        rng = np.random.default_rng(0)
        default_latent = (tok.latent_channels, ex.size // tok.downsample, ex.size // tok.downsample)
        for label, shape, lens in (("dynamics windows, default", default_latent, tp),
                                   ("dynamics windows, GPU preset", GPU_PRESET["latent_shape"], None)):
            videos = {v: rng.normal(0, 0.4, (500, *shape)).astype(np.float16) for v in splits}
            store = write_store(tmp / f"latents{shape[1]}.zarr", "latents", videos, splits, ex.chunk_frames, ex.shard_frames)
            sizes = (dict(seq_len_short=tp.seq_len_short, seq_len_long=tp.seq_len_long, batch_size_short=tp.batch_size_short,
                          batch_size_long=tp.batch_size_long) if lens else
                     {k: GPU_PRESET[k] for k in ("seq_len_short", "seq_len_long", "batch_size_short", "batch_size_long")})
            batches = AlternatingBatches(LatentWindows(SplitIndex.open(store, "train", "latents")), long_ratio=tp.long_ratio,
                                         stride=tp.stride, seed=0, gapped_ratio=tp.gapped_ratio,
                                         gapped_span=tp.gapped_span, **sizes)  # the presets keep the gapped batches
            cases.append((label, store, batches, lambda b: b.latents.shape[0] * b.latents.shape[1], lens is not None,
                          args.steps))  # an item is a step's batch

        for label, store, batches, count, trains, items in cases:
            case = {"loader_frames_per_s": {w: loader_rate(batches, count, items, w) for w in args.workers}}
            if trains:
                case["training"] = {w: train_case(tmp, store, params, w, args.steps, "frames" in label) for w in args.workers}
            results["cases"][label] = case
            print(f"{label}: {case}", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    text = loader_table(results)
    print(text)
    write_block(args.docs, "loader table", text)


def loader_table(results: dict) -> str:
    workers = results["workers"]
    lines = [f"Frames/s with {' / '.join(map(str, workers))} loader workers; training: the real loop for "
             f"{results['steps']} steps on this machine, and the share of its time it waited for data (with workers, "
             "they share the 2 cores with training). GPU preset: {frame_size} px frames read {frames_per_chunk} a chunk "
             "in blocks of {block_steps} steps; latent windows of {latent}.".format(
                 **GPU_PRESET, latent="x".join(map(str, GPU_PRESET["latent_shape"]))), "",
             "| data | loader delivers, frames/s | training consumes, frames/s | training waits for data |",
             "| --- | --- | --- | --- |"]
    for label, case in results["cases"].items():
        train = case.get("training", {})
        delivered = " / ".join(f"{case['loader_frames_per_s'][w]:,.0f}" for w in workers)
        consumed = " / ".join(f"{train[w]['frames_per_s']:,.0f}" for w in workers) if train else "not trained here (GPU sizes)"
        waits = " / ".join(f"{train[w]['loader_wait_share']:.1%}" for w in workers) if train else "-"
        lines.append(f"| {label} | {delivered} | {consumed} | {waits} |")
    return "\n".join(lines)


def train_case(tmp: Path, store: Path, params, workers: int, steps: int, tokenizer: bool) -> dict:
    """The real loop for `steps` steps on `store` with `workers` loader processes."""
    out = tmp / f"run-{store.stem}-{workers}"
    common = {"steps": steps, "val_every": 10**6, "checkpoint_every": 10**6, "loader_workers": workers}
    if tokenizer:
        tok = params.tokenizer.model_copy(update=common | {"val_frames": 8})
        t = time.perf_counter()
        metrics = train_tokenizer(tok, 0, frames=store, out_dir=out / "model", live_dir=out / "live",
                                  metrics_path=out / "metrics.json")
        rate = steps * tok.batch_size / (time.perf_counter() - t)
        return {"frames_per_s": rate, "loader_wait_share": metrics["loader_wait_share"]}
    p = params.model_copy(update={"train": params.train.model_copy(update=common)})
    metrics = train_dynamics(p, latents=store, out_dir=out / "model", metrics_path=out / "metrics.json", live_dir=out / "live")
    return {"frames_per_s": metrics["frames_per_s"], "loader_wait_share": metrics["loader_wait_share"]}


if __name__ == "__main__":
    main()
