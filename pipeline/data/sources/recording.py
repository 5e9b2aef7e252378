"""The one writer of the embedded recorders: a recorder yields a :class:`Step` per frame, and
:func:`record_episode` writes <id>.mp4 (bit-exact H.264), <id>.actions.npy and <id>.pose.npy, each
atomically, the video last, so a video on disk always has its side files (docs/sources.md).
"""

from __future__ import annotations

import contextlib
import dataclasses
import subprocess
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Iterable, Iterator, NamedTuple, Protocol, Sequence

import numpy as np
from tqdm.auto import tqdm

from pipeline.atomic import atomic_file
from pipeline.config import RecorderParams
from pipeline.data.sources.manifest import (
    ACTIONS_SUFFIX,
    POSE_FIELDS,
    POSE_SUFFIX,
    VideoEntry,
    entry_for_file,
)
from pipeline.data.video.ffmpeg import ffmpeg_exe


class Step(NamedTuple):
    """One recorded frame."""

    frame: np.ndarray  # uint8 (H, W, 3) RGB
    action: int  # index into the recorder's action_meanings, chosen on seeing `frame`
    pose: Sequence[float] | None = None  # (x, y, heading_deg) in `frame`; None for games without one


@dataclass(frozen=True)
class EpisodeInfo:
    """What a recorder says about one episode, beside its steps."""

    id: str  # file-name-safe video id, e.g. vizdoom-my-way-home-s0-e000
    source: str  # the download.sources entry
    title: str
    fps: Fraction  # the rate the frames were taken at, exactly (Doom: 35/2)
    action_meanings: Sequence[str]
    has_pose: bool  # every step carries a pose (else none does)
    extra: dict[str, Any] = field(default_factory=dict)  # recorder-specific manifest fields


def rate_arg(fps: Fraction) -> str:
    """ffmpeg's spelling of an exact rate: "20", "35/2"."""
    fps = Fraction(fps)
    return str(fps.numerator) if fps.denominator == 1 else f"{fps.numerator}/{fps.denominator}"


def encode_command(out: Path, width: int, height: int, fps: Fraction, crf: int) -> list[str]:
    """ffmpeg reading raw RGB frames on stdin and writing a bit-exact H.264 mp4 at `fps`."""
    return [
        ffmpeg_exe(), "-v", "error", "-y", "-nostdin",
        "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-r", rate_arg(fps), "-i", "pipe:0",
        "-vf", "pad=ceil(iw/2)*2:ceil(ih/2)*2",  # yuv420p needs even sides
        "-c:v", "libx264", "-preset", "veryfast", "-crf", str(crf), "-pix_fmt", "yuv420p",
        "-threads", "1",  # x264 with several threads is not bit-exact run to run
        "-fflags", "+bitexact", "-flags:v", "+bitexact", "-map_metadata", "-1",
        "-f", "mp4", str(out),
    ]  # fmt: skip


def _encode(steps: Iterable[Step], info: EpisodeInfo, video: Path, crf: int) -> tuple[list[int], list]:
    """Pipe every step's frame into ffmpeg (writing `video`); returns the actions and poses seen."""
    actions: list[int] = []
    poses: list = []
    proc = None
    try:
        for t, step in enumerate(steps):
            if (step.pose is not None) != info.has_pose:
                raise ValueError(f"{info.id}: frame {t} {'lacks' if info.has_pose else 'has'} a pose")
            if proc is None:
                h, w = step.frame.shape[:2]
                proc = subprocess.Popen(encode_command(video, w, h, info.fps, crf), stdin=subprocess.PIPE, stderr=subprocess.PIPE)
            proc.stdin.write(np.ascontiguousarray(step.frame, dtype=np.uint8).tobytes())
            actions.append(int(step.action))
            poses.append(step.pose)
        if proc is None:
            raise RuntimeError(f"{info.id}: the episode ended before its first frame")
        proc.stdin.close()
        err = proc.stderr.read().decode(errors="replace")
        if proc.wait() != 0:
            raise RuntimeError(f"{info.id}: ffmpeg failed to encode the recording: {err.strip()}")
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
    return actions, poses


def _save_npy(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as out:
        np.save(out, array, allow_pickle=False)


def record_episode(steps: Iterable[Step], info: EpisodeInfo, out_dir: Path, *, crf: int, max_frames: int) -> VideoEntry:
    """Record one episode's steps to out_dir (see the module doc); returns its manifest entry.
    `max_frames` only sizes the progress bar: the steps decide where the episode ends."""
    video = out_dir / f"{info.id}.mp4"
    actions_path = out_dir / f"{info.id}{ACTIONS_SUFFIX}"
    pose_path = out_dir / f"{info.id}{POSE_SUFFIX}"
    with contextlib.ExitStack() as stack:
        # On an error too, the game stops now (its engine process exits), not when garbage collected.
        stack.callback(getattr(steps, "close", lambda: None))
        # Entered first, renamed last: the video appears only once its side files are in place.
        tmp_video = stack.enter_context(atomic_file(video))
        tmp_actions = stack.enter_context(atomic_file(actions_path))
        tmp_pose = stack.enter_context(atomic_file(pose_path)) if info.has_pose else None
        progress = stack.enter_context(tqdm(steps, total=max_frames, desc=info.id, unit="frame", leave=False))
        actions, poses = _encode(progress, info, tmp_video, crf)
        _save_npy(tmp_actions, np.asarray(actions, dtype=np.int64))
        if tmp_pose is not None:
            _save_npy(tmp_pose, np.asarray(poses, dtype=np.float32).reshape(len(poses), len(POSE_FIELDS)))

    extra = {
        "actions_file": actions_path.name,
        **({"pose_file": pose_path.name, "pose_fields": list(POSE_FIELDS)} if info.has_pose else {}),
        "n_frames": len(actions),
        "n_actions": len(info.action_meanings),
        "action_meanings": list(info.action_meanings),
        **info.extra,
    }
    entry = entry_for_file(video, id=info.id, source=info.source, title=info.title, extra=extra)
    # The probe reads a rounded rate from ffmpeg's log ("17.50 fps"); the recorder knows it exactly.
    return dataclasses.replace(entry, fps=float(info.fps))


class Recorder(Protocol):
    """What a recorder module (atari, vizdoom, crafter) provides; `target` is the part of the
    source after its prefix (the game, the scenario; "" for crafter)."""

    def check(self, target: str) -> None:
        """Raise ValueError naming the source if it cannot be recorded (before any work)."""

    def episode(
        self, target: str, source: str, seed: int, episode: int, rec: RecorderParams
    ) -> tuple[EpisodeInfo, Iterator[Step]]:
        """The description and the steps of one seeded episode (played lazily, as they are read)."""


def record(recorder: Recorder, target: str, source: str, seed: int, rec: RecorderParams, max_videos: int,
           out_dir: Path) -> Iterator[VideoEntry]:
    """Record min(rec.episodes, max_videos) episodes, yielding one manifest entry per episode."""
    recorder.check(target)
    for episode in range(min(rec.episodes, max_videos)):
        info, steps = recorder.episode(target, source, seed, episode, rec)
        yield record_episode(steps, info, out_dir, crf=rec.crf, max_frames=rec.max_frames)
