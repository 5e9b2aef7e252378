"""Side-by-side rollout GIFs, one per workload and budget: columns ground truth | persistence | each
policy, rows clips, a horizon counter (t+1 = first generated frame); upscaled so 64 px stays legible."""

from __future__ import annotations

from pathlib import Path

import imageio.v3 as iio
import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from pipeline.atomic import atomic_file

HEADER = 14  # pixels of label band above the grid
GAP = 2  # pixels between tiles


def _uint8(pixels: torch.Tensor, scale: int) -> np.ndarray:
    """(T, 3, H, W) in [0, 1] -> (T, H*scale, W*scale, 3) uint8."""
    x = (pixels.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return x.repeat(scale, axis=1).repeat(scale, axis=2)


def grid_frames(columns: dict[str, list[torch.Tensor]], scale: int = 2) -> np.ndarray:
    """(T, H', W', 3) uint8 frames of a labelled grid; ``columns[label][row]`` is (T, 3, H, W)."""
    labels = list(columns)
    n_rows = len(columns[labels[0]])
    if any(len(v) != n_rows for v in columns.values()):
        raise ValueError("every column needs the same number of clips")
    tiles = {k: [_uint8(v, scale) for v in vs] for k, vs in columns.items()}
    t, h, w, _ = tiles[labels[0]][0].shape
    out = np.zeros((t, HEADER + n_rows * (h + GAP), len(labels) * (w + GAP), 3), dtype=np.uint8)
    for c, label in enumerate(labels):
        for r, tile in enumerate(tiles[label]):
            y, x = HEADER + r * (h + GAP), c * (w + GAP)
            out[:, y : y + h, x : x + w] = tile[:t]
    font = ImageFont.load_default()
    frames = []
    for i in range(t):
        img = Image.fromarray(out[i])
        draw = ImageDraw.Draw(img)
        for c, label in enumerate(labels):
            draw.text((c * (w + GAP) + 2, 1), label[: max(4, w // 6)], fill=(255, 255, 255), font=font)
        draw.text((2, img.height - 12), f"t+{i + 1}", fill=(255, 255, 0), font=font)
        frames.append(np.asarray(img))
    return np.stack(frames)


def write_gif(path: str | Path, frames: np.ndarray, fps: float = 4.0) -> None:
    """Looping GIF, written atomically."""
    with atomic_file(path) as tmp:
        iio.imwrite(tmp, frames, extension=".gif", duration=1000.0 / fps, loop=0)


def write_media(run, out_dir: str | Path, workloads: dict, mode: str) -> list[Path]:
    """One GIF per workload and budget of a BenchmarkRun (``mode``), a row per clip whose pixels it kept."""
    written = []
    for workload, wclips in run.clips.items():
        n_ctx = workloads[workload].context
        by_cell: dict[tuple[str, str], dict[int, torch.Tensor]] = {}
        for rec in run.records:
            if rec.pixels is not None and rec.cell.workload == workload and rec.cell.mode == mode:
                by_cell.setdefault((rec.cell.budget, rec.cell.policy), {})[rec.clip] = rec.pixels
        for budget in dict.fromkeys(b for b, _ in by_cell):
            policies = [p for b, p in by_cell if b == budget]
            n = min(len(by_cell[(budget, p)]) for p in policies)
            columns = {"ground truth": [c.pixels[n_ctx:] for c in wclips[:n]],
                       "persistence": run.reference_pixels[workload]["persistence"][:n]}
            columns.update({p: [by_cell[(budget, p)][i] for i in range(n)] for p in policies})
            path = Path(out_dir) / f"{workload}_{budget}.gif"
            write_gif(path, grid_frames(columns))
            written.append(path)
    return written
