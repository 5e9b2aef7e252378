"""Compare two images or two videos: PSNR / SSIM / LPIPS per frame and their means.

Inputs: anything ffmpeg decodes, or a frames-store video group (``data/frames.zarr/<video_id>``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from pipeline.data.pixels import to_pixels
from pipeline.metrics import LPIPS, METRICS, video_metrics


def read_frames(path: str | Path, max_frames: int = 0) -> np.ndarray:
    """uint8 (T, H, W, 3) from a media file or a frames-store video group."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or directory")
    if path.is_dir():
        import zarr

        if not (path / "zarr.json").is_file() or not (path / "frames").is_dir():
            raise ValueError(f"{path}: a directory, but not a frames-store video group (<store>.zarr/<video_id>)")
        frames = zarr.open_group(str(path), mode="r")["frames"]
        return np.asarray(frames[: max_frames or None])
    import imageio_ffmpeg

    reader = imageio_ffmpeg.read_frames(str(path), pix_fmt="rgb24")
    try:
        meta = reader.__next__()
    except (RuntimeError, StopIteration, OSError) as exc:
        raise ValueError(f"{path}: ffmpeg cannot read it ({exc})") from None
    w, h = meta["size"]
    frames = []
    for buf in reader:
        frames.append(np.frombuffer(buf, np.uint8).reshape(h, w, 3))
        if max_frames and len(frames) == max_frames:
            reader.close()
            break
    if not frames:
        raise ValueError(f"{path}: no frames decoded")
    return np.stack(frames)


def compare(a: np.ndarray, b: np.ndarray, lpips: LPIPS, names=("A", "B")) -> dict:
    if a.shape[1:] != b.shape[1:]:
        raise ValueError(f"frame sizes differ: {names[0]} is {a.shape[2]}x{a.shape[1]}, {names[1]} is {b.shape[2]}x{b.shape[1]}")
    if len(a) != len(b):
        raise ValueError(f"frame counts differ: {names[0]} has {len(a)}, {names[1]} has {len(b)} (use --max-frames)")
    to_t = lambda x: to_pixels(x).unsqueeze(0)  # noqa: E731
    values = video_metrics(to_t(a), to_t(b), lpips)
    per_frame = {k: [round(float(x), 6) for x in v[0]] for k, v in values.items()}
    return {"n_frames": len(a), "per_frame": per_frame, "mean": {k: float(v.mean()) for k, v in values.items()}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pipeline.metrics", description=__doc__.split("\n\n")[0])
    ap.add_argument("a", help="reference: image, video, or <store>.zarr/<video_id>")
    ap.add_argument("b", help="compared: same kinds as A")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    ap.add_argument("--max-frames", type=int, default=0, help="compare only the first N frames of each (0 = all)")
    args = ap.parse_args(argv)
    try:
        a, b = read_frames(args.a, args.max_frames), read_frames(args.b, args.max_frames)
        result = {"a": args.a, "b": args.b, **compare(a, b, LPIPS(), (args.a, args.b))}
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"{'frame':>6} " + " ".join(f"{m:>9}" for m in METRICS))
    for t in range(result["n_frames"]):
        print(f"{t:>6} " + " ".join(f"{result['per_frame'][m][t]:>9.4f}" for m in METRICS))
    print(f"{'mean':>6} " + " ".join(f"{result['mean'][m]:>9.4f}" for m in METRICS))
    return 0


if __name__ == "__main__":
    sys.exit(main())
