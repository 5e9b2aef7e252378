"""A played session on disk, and its replay.

``<name>.mp4``: game | model side by side (H.264, to watch); ``<name>.json``: the clip, and per step
the action, policy and budget; ``<name>.npz``: both frame sequences losslessly, so that a replay is
checked frame for frame. Each file is written atomically.
"""

from __future__ import annotations

import json
import subprocess
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

from pipeline.atomic import atomic_file
from pipeline.benchmark.media import grid_frames
from pipeline.data.pixels import to_pixels
from pipeline.data.sources.recording import encode_command
from pipeline.play.game import PlayError
from pipeline.play.session import Played, PlaySession

FORMAT = 1


def save(played: Played, video: Path, meta: dict, fps: float) -> list[Path]:
    """Write ``video`` (.mp4) and its .json and .npz; returns the three paths."""
    if not played.steps:
        raise PlayError(f"{video}: nothing was played since the recording started: press a key first")
    video = Path(video)
    paths = [video, video.with_suffix(".json"), video.with_suffix(".npz")]
    game, model = np.stack(played.game), np.stack(played.model)
    with atomic_file(paths[2]) as tmp, open(tmp, "wb") as out:
        np.savez_compressed(out, game=game, model=model)
    with atomic_file(paths[1]) as tmp:
        tmp.write_text(json.dumps({"format": FORMAT, "clip": played.clip, "steps": played.steps, **meta}, indent=1) + "\n")
    grid = grid_frames({"game": [to_pixels(game)], "model": [to_pixels(model)]}, scale=4)
    h, w = grid.shape[1:3]
    with atomic_file(video) as tmp:
        proc = subprocess.run(encode_command(tmp, w, h, Fraction(fps).limit_denominator(1000), crf=18),
                              input=np.ascontiguousarray(grid).tobytes(), capture_output=True)
        if proc.returncode != 0:
            raise PlayError(f"{video}: ffmpeg failed: {proc.stderr.decode(errors='replace').strip()[-500:]}")
    return paths


def load(video: Path) -> tuple[dict, dict[str, np.ndarray]]:
    """A recording's steps and frames; PlayError naming the file that is missing or unreadable."""
    video = Path(video)
    meta_path, frames_path = video.with_suffix(".json"), video.with_suffix(".npz")
    for path in (meta_path, frames_path):
        if not path.is_file():
            raise PlayError(f"{path}: not found (a recording is {video.stem}.mp4, .json and .npz side by side)")
    try:
        meta = json.loads(meta_path.read_text())
        with np.load(frames_path) as npz:
            frames = {"game": npz["game"], "model": npz["model"]}
    except (ValueError, KeyError, OSError) as exc:
        raise PlayError(f"{video}: unreadable recording: {exc}") from exc
    if meta.get("format") != FORMAT:
        raise PlayError(f"{meta_path}: recording format {meta.get('format')!r}, this version reads {FORMAT}")
    return meta, frames


@torch.no_grad()
def replay(session: PlaySession, video: Path) -> tuple[int, int | None]:
    """Play a recording's steps again from its clip; returns (frames played, the first frame whose game
    or model pixels differ from the recording's, or None)."""
    meta, frames = load(video)
    session.recording = True
    session.reset(int(meta["clip"]))
    for step in meta["steps"]:
        session.configure(step["policy"], step["budget"])
        session.act(int(step["action"]))
    played = session.stop_recording()
    for i, (game, model) in enumerate(zip(played.game, played.model)):
        same = i < len(frames["model"]) and np.array_equal(game, frames["game"][i]) and np.array_equal(model, frames["model"][i])
        if not same:
            return len(played.model), i
    return len(played.model), None
