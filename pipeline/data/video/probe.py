"""Probe a video's size, frame rate and duration from the header ``ffmpeg -i`` prints (no ffprobe in the
imageio-ffmpeg wheel); without a declared duration, remux to the null muxer (no decoding) to find it."""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from pipeline.data.video.ffmpeg import ffmpeg_exe


class ProbeError(RuntimeError):
    """The file is not a readable video; the message says why, naming the file."""


@dataclass(frozen=True)
class VideoInfo:
    path: str
    width: int
    height: int
    fps: float          # average (or container-nominal) rate; variable-rate videos are fine
    duration: float     # seconds
    codec: str
    bytes: int


_DURATION = re.compile(r"Duration:\s*(\d+):(\d+):(\d+(?:\.\d+)?)")
# "Stream #0:0[0x1](und): Video: h264 (High) (avc1 / 0x31637661), yuv420p(progressive), 1280x720 [SAR 1:1 ...], 30 fps, 30 tbr"
_VIDEO_STREAM = re.compile(r"Stream #\d+:\d+.*?: Video: (\w+).*?, (\d{2,5})x(\d{2,5})[\s,\[]")
_RATE = re.compile(r"([\d.]+k?) (fps|tbr)\b")
_TIME = re.compile(r"time=\s*(\d+):(\d+):(\d+(?:\.\d+)?)")

# ffmpeg's own words for the usual ways a file is broken, mapped to a reason a user can act on.
_KNOWN_ERRORS = (
    ("moov atom not found", "truncated or incomplete MP4 (moov atom not found)"),
    ("Invalid data found when processing input", "not a video file (ffmpeg: invalid data found when processing input)"),
    ("End of file", "truncated file (ffmpeg: unexpected end of file)"),
    ("No such file or directory", "file not found"),
    ("Permission denied", "permission denied"),
)


def _seconds(h: str, m: str, s: str) -> float:
    return int(h) * 3600 + int(m) * 60 + float(s)


def _rate(value: str) -> float:
    return float(value[:-1]) * 1000 if value.endswith("k") else float(value)


def _looks_like_mp4(path: Path) -> bool:
    """An MP4/MOV file starts with a box whose type is at bytes 4..8 ('ftyp', or 'moov'/'mdat'/... in old MOVs)."""
    with open(path, "rb") as f:
        head = f.read(12)
    return head[4:8] in (b"ftyp", b"moov", b"mdat", b"wide", b"free", b"skip")


def _ffmpeg_stderr(path: Path, *output_args: str, timeout: float = 60) -> str:
    """What `ffmpeg -i path [output_args]` reports on stderr (the header, progress, errors)."""
    proc = subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", str(path), *output_args],
        capture_output=True, text=True, errors="replace", timeout=timeout,
    )
    return proc.stderr


def _header(path: Path) -> str:
    return _ffmpeg_stderr(path)


def _remux_duration(path: Path) -> float | None:
    """Last timestamp reached when copying the video stream to the null muxer (no decoding)."""
    times = _TIME.findall(_ffmpeg_stderr(path, "-map", "0:v:0", "-c", "copy", "-f", "null", "-", timeout=600))
    return _seconds(*times[-1]) if times else None


def probe_video(path: str | Path) -> VideoInfo:
    """Size, rate and duration of the first video stream of `path`; ProbeError says why a file is unusable."""
    path = Path(path)
    if not path.is_file():
        raise ProbeError(f"{path}: file not found")
    size = path.stat().st_size
    if size == 0:
        raise ProbeError(f"{path}: empty file (0 bytes)")

    header = _header(path)
    streams = [line for line in header.splitlines() if "Video:" in line and "attached pic" not in line]
    if not streams:
        if "moov atom not found" in header and not _looks_like_mp4(path):
            raise ProbeError(f"{path}: not a video file (no MP4/MOV header)")
        for needle, reason in _KNOWN_ERRORS:
            if needle in header:
                raise ProbeError(f"{path}: {reason}")
        if "Stream #" in header:
            raise ProbeError(f"{path}: no video stream")
        tail = header.strip().splitlines()[-1:] or ["no output"]
        raise ProbeError(f"{path}: not a readable video (ffmpeg: {tail[0]})")

    m = _VIDEO_STREAM.search(streams[0])
    if m is None:
        raise ProbeError(f"{path}: cannot parse the video stream header: {streams[0].strip()!r}")
    codec, width, height = m.group(1), int(m.group(2)), int(m.group(3))

    rates = dict((kind, _rate(v)) for v, kind in _RATE.findall(streams[0]))
    fps = rates.get("fps") or rates.get("tbr")
    if not fps:
        raise ProbeError(f"{path}: the video stream declares no frame rate")

    d = _DURATION.search(header)
    duration = _seconds(*d.groups()) if d else _remux_duration(path)
    if not duration:
        raise ProbeError(f"{path}: unknown duration (the container declares none and remuxing found no frames)")
    return VideoInfo(str(path), width, height, fps, duration, codec, size)
