"""Decode a video into fixed-rate, fixed-size RGB frames streamed from ffmpeg's pipe in chunks, through
fps=F:round=up -> trim -> drawbox (HUD masks) -> crop -> scale (area) -> rgb24 [-> pad] (why: docs/stages.md).
"""

from __future__ import annotations

import collections
import math
import queue
import subprocess
import threading
from dataclasses import dataclass
from typing import Iterator

import ffmpeg
import numpy as np

from pipeline.data.video.ffmpeg import ffmpeg_exe
from pipeline.data.video.probe import VideoInfo

RESIZE_MODES = ("center_crop", "letterbox", "squash")


class DecodeError(RuntimeError):
    """ffmpeg failed or produced an incomplete frame; the message names the file and ffmpeg's words."""


class EmptyWindowError(ValueError):
    """The skip window leaves nothing of the video."""


@dataclass(frozen=True)
class Geometry:
    """Where the output square comes from: the source box kept, and its size inside the square."""

    crop_box: tuple[int, int, int, int]   # x0, y0, x1, y1 in source pixels
    scaled: tuple[int, int]               # (w, h) the box is scaled to
    offset: tuple[int, int]               # (x, y) of the scaled box inside the size x size square


def geometry(width: int, height: int, size: int, mode: str) -> Geometry:
    if mode == "center_crop":
        side = min(width, height) & ~1          # even, so the chroma planes crop exactly
        x0 = ((width - side) // 2) & ~1
        y0 = ((height - side) // 2) & ~1
        return Geometry((x0, y0, x0 + side, y0 + side), (size, size), (0, 0))
    if mode == "letterbox":
        scale = size / max(width, height)
        w, h = max(1, round(width * scale)), max(1, round(height * scale))
        return Geometry((0, 0, width, height), (w, h), ((size - w) // 2, (size - h) // 2))
    if mode == "squash":
        return Geometry((0, 0, width, height), (size, size), (0, 0))
    raise ValueError(f"extract.resize_mode: unknown mode {mode!r} (expected one of {', '.join(RESIZE_MODES)})")


@dataclass(frozen=True)
class FrameWindow:
    """Output frames [start, stop) on the fps grid of the whole video; stop=None runs to the end."""

    start: int
    stop: int | None
    expected: int        # frames the window should yield, from the probed duration


def frame_window(info: VideoInfo, fps: float, skip_start_s: float = 0.0, skip_end_s: float = 0.0,
                 max_frames: int = 0) -> FrameWindow:
    total = round(info.duration * fps)
    start = round(skip_start_s * fps)
    stop = total - round(skip_end_s * fps)
    if stop <= start:
        raise EmptyWindowError(
            f"{info.path}: shorter than the skip window ({info.duration:.2f} s <= "
            f"skip_start_s {skip_start_s:g} + skip_end_s {skip_end_s:g})"
        )
    if max_frames:
        stop = min(stop, start + max_frames)
    # No end trim when the window runs to the end: the decoder, not the header, decides the last frame.
    end = stop if (skip_end_s or max_frames) else None
    return FrameWindow(start, end, stop - start)


def source_frame_index(k: np.ndarray, src_fps: float, out_fps: float) -> np.ndarray:
    """The source frame that output frame k (on the whole video's grid) shows, as fps=round=up: floor(k * src / out)."""
    # + 1e-6: exact multiples (30 -> 20 fps: k = 2 -> 3.0) must not round down.
    return np.floor(np.asarray(k, dtype=np.float64) * (src_fps / out_fps) + 1e-6).astype(np.int64)


def build_graph(info: VideoInfo, size: int, mode: str, fps: float, window: FrameWindow, hud_masks=()) -> tuple:
    """ffmpeg-python stream of the extraction graph (before its output), and the geometry used."""
    geo = geometry(info.width, info.height, size, mode)
    v = ffmpeg.input(info.path).video
    v = v.filter("fps", fps=fps, round="up")
    if window.start or window.stop is not None:
        trim = {"start_frame": window.start}
        if window.stop is not None:
            trim["end_frame"] = window.stop
        # Restart timestamps at 0, else the muxer would pad the trimmed start with copies.
        v = v.filter("trim", **trim).filter("setpts", "PTS-STARTPTS")
    for x0, y0, x1, y1 in hud_masks:
        # Outward rounding: a mask covers every source pixel it touches.
        bx, by = math.floor(x0 * info.width), math.floor(y0 * info.height)
        bw, bh = math.ceil(x1 * info.width) - bx, math.ceil(y1 * info.height) - by
        v = v.filter("drawbox", x=bx, y=by, w=bw, h=bh, color="black", t="fill")
    x0, y0, x1, y1 = geo.crop_box
    if (x1 - x0, y1 - y0) != (info.width, info.height):
        v = v.filter("crop", w=x1 - x0, h=y1 - y0, x=x0, y=y0)
    v = v.filter("scale", w=geo.scaled[0], h=geo.scaled[1], flags="area").filter("format", "rgb24")
    if geo.scaled != (size, size):
        v = v.filter("pad", w=size, h=size, x=geo.offset[0], y=geo.offset[1], color="black")
    return v, geo


def _args(stream, target: str, fmt: str) -> list[str]:
    # passthrough: the fps filter is the only rate control; the muxer must neither drop nor duplicate.
    out = stream.output(target, format=fmt, pix_fmt="rgb24", fps_mode="passthrough")
    return out.global_args("-nostdin", "-hide_banner", "-nostats", "-v", "error").compile(cmd=ffmpeg_exe())


def raw_args(stream) -> list[str]:
    """Full command line decoding `stream` to raw RGB on stdout."""
    return _args(stream, "pipe:", "rawvideo")


def null_args(stream) -> list[str]:
    """The same graph to ffmpeg's null muxer: the decoding cost alone, for the benchmark."""
    return _args(stream, "-", "null")


def _widen_pipe(pipe, size: int = 1 << 20) -> None:
    """1 MiB instead of Linux's 64 KiB pipe: ffmpeg and the reader wake each other 16x less often."""
    try:
        import fcntl

        fcntl.fcntl(pipe.fileno(), getattr(fcntl, "F_SETPIPE_SZ", 1031), size)
    except (ImportError, OSError):  # not Linux, or above /proc/sys/fs/pipe-max-size: keep the default
        pass


class FrameStream:
    """Iterate (n, size, size, 3) uint8 chunks out of ffmpeg's stdout; a reader thread fills a small
    bounded queue, so ffmpeg decodes while the consumer writes. DecodeError if ffmpeg fails."""

    def __init__(self, args: list[str], size: int, chunk_frames: int = 32, prefetch: int = 4, name: str = ""):
        self.args, self.name = args, name or args[args.index("-i") + 1]
        self.frame_bytes = size * size * 3
        self.shape = (size, size, 3)
        self.chunk_frames = chunk_frames
        self._queue: queue.Queue = queue.Queue(maxsize=prefetch)
        self._stderr: collections.deque[str] = collections.deque(maxlen=20)
        self._proc: subprocess.Popen | None = None

    def _drain_stderr(self) -> None:
        for line in iter(self._proc.stderr.readline, b""):
            self._stderr.append(line.decode(errors="replace").rstrip())

    def _read(self) -> None:
        try:
            stdout = self._proc.stdout
            while True:
                buf = bytearray(self.chunk_frames * self.frame_bytes)
                view, got = memoryview(buf), 0
                while got < len(buf):
                    n = stdout.readinto(view[got:])
                    if not n:
                        break
                    got += n
                if got:
                    self._queue.put(buf[:got] if got < len(buf) else buf)
                if got < len(buf):
                    break
        except Exception as exc:  # handed to the consumer, which raises it
            self._queue.put(exc)
        finally:
            self._queue.put(None)

    def __iter__(self) -> Iterator[np.ndarray]:
        self._proc = subprocess.Popen(self.args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      bufsize=0)
        _widen_pipe(self._proc.stdout)
        threads = [threading.Thread(target=f, daemon=True) for f in (self._read, self._drain_stderr)]
        for t in threads:
            t.start()
        try:
            while (item := self._queue.get()) is not None:
                if isinstance(item, Exception):
                    raise item
                if len(item) % self.frame_bytes:
                    raise DecodeError(f"{self.name}: ffmpeg stopped inside a frame ({len(item) % self.frame_bytes} stray bytes)")
                frames = np.frombuffer(item, dtype=np.uint8).reshape(-1, *self.shape)
                yield frames
            rc = self._proc.wait()
            for t in threads:
                t.join()
            if rc != 0:
                raise DecodeError(f"{self.name}: ffmpeg exited with code {rc}: " + (" | ".join(self._stderr) or "no message"))
        finally:
            self.close()

    @property
    def warnings(self) -> list[str]:
        """ffmpeg's error-level messages (decoding errors it recovered from)."""
        return list(self._stderr)

    def close(self) -> None:
        """Stop ffmpeg if the consumer leaves early (or on Ctrl-C); idempotent."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        # Unblock the reader thread if it waits on a full queue.
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
