"""Stage extract: every raw video to fixed-rate, fixed-size RGB frames in data/frames.zarr (built
atomically; actions and poses resampled beside them) and data/frames_report.json. A bad input is
skipped with its reason; the run fails only when no video is usable. See docs/stages.md.
"""

from __future__ import annotations

import multiprocessing as mp
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import zarr
from tqdm import tqdm

from pipeline.atomic import TMP_MARK, atomic_dir, remove_stale_tmp, write_json
from pipeline.config import ExtractParams
from pipeline.data.sources.manifest import (
    ACTIONS_SUFFIX,
    MANIFEST_NAME,
    POSE_FIELDS,
    POSE_SUFFIX,
    load_manifest,
    sha256_file,
)
from pipeline.data.splits import SPLITS, assign_splits
from pipeline.data.stores import ShardedArrayWriter, compressors
from pipeline.data.video.decode import (
    DecodeError,
    EmptyWindowError,
    FrameStream,
    FrameWindow,
    build_graph,
    frame_window,
    raw_args,
    source_frame_index,
)
from pipeline.data.video.probe import ProbeError, VideoInfo, probe_video

# Starting a pool worker costs 1-2 s of imports; below ~30 s of 720p30 source video in total,
# decoding everything in this process is done sooner.
SERIAL_BELOW_PIXELS = 1e9
VIDEO_EXTS = (".mp4", ".mkv", ".webm", ".mov", ".avi")


class ExtractError(RuntimeError):
    """No video was usable (or the inputs are unreadable); the message summarises every reason."""


class BadVideoError(ValueError):
    """A video (or its actions) is unusable; reported and skipped."""


BAD_INPUT = (ProbeError, DecodeError, EmptyWindowError, BadVideoError)


@dataclass(frozen=True)
class FrameSeries:
    """A kind of per-frame array recorded beside a video: one row per source frame."""

    name: str                  # its array in the store group
    manifest_key: str          # the manifest field that names its file
    suffix: str                # its file beside <id>.mp4 when no manifest names one
    dtype: type                # as stored
    row_shape: tuple[int, ...]
    expected: str              # what a valid file holds, for errors


ACTIONS = FrameSeries("actions", "actions_file", ACTIONS_SUFFIX, np.int64, (), "1-D integer")
POSES = FrameSeries("poses", "pose_file", POSE_SUFFIX, np.float32, (len(POSE_FIELDS),),
                    f"(T, {len(POSE_FIELDS)}) finite float")  # fmt: skip
SERIES = {s.name: s for s in (ACTIONS, POSES)}


@dataclass(frozen=True)
class Source:
    """One input video as the download stage left it."""

    id: str
    path: Path
    source: str                      # URL or recorder spec, else the file name
    series_paths: dict[str, Path] = field(default_factory=dict)  # SERIES name -> its file, when recorded
    series_fps: float | None = None  # rate the series were recorded at (None: the video's own)
    n_actions: int | None = None      # size of the action space, when the manifest says
    action_meanings: tuple[str, ...] | None = None
    manifest_sha256: str | None = None


# --------------------------------------------------------------------------------------------
# inputs
# --------------------------------------------------------------------------------------------
def _video_file(raw: Path, vid: str) -> Path | None:
    for ext in VIDEO_EXTS:
        if (raw / f"{vid}{ext}").is_file():
            return raw / f"{vid}{ext}"
    return None


def find_sources(raw_dir: str | Path) -> tuple[list[Source], list[dict]]:
    """Videos to extract (the manifest's "ok" entries, else every video file), and skip entries."""
    raw = Path(raw_dir)
    if not raw.is_dir():
        raise ExtractError(f"{raw}: no such directory (run the download stage first)")
    manifest = raw / MANIFEST_NAME
    sources, skipped = [], []
    if not manifest.is_file():
        for path in sorted(p for p in raw.iterdir() if p.suffix.lower() in VIDEO_EXTS and TMP_MARK not in p.name):
            sources.append(Source(path.stem, path, path.name, _series_paths(raw, path.stem, {})))
        return sources, skipped

    try:
        entries = load_manifest(raw)
    except ValueError as exc:
        raise ExtractError(str(exc)) from None
    for vid, e in entries.items():
        if e.status != "ok":
            skipped.append(_skip(vid, f"download status {e.status!r}: {e.error or 'no error given'}", None))
            continue
        path = _video_file(raw, vid)
        if path is None:
            exts = "|".join(x[1:] for x in VIDEO_EXTS)
            skipped.append(_skip(vid, f"listed as ok in {MANIFEST_NAME} but no {raw / vid}.<{exts}> exists", None))
            continue
        series = _series_paths(raw, vid, e.extra)
        meanings = e.extra.get("action_meanings")
        sources.append(Source(
            id=vid, path=path, source=e.url or e.source or path.name,
            series_paths=series,
            series_fps=float(e.fps) if series and e.fps else None,
            n_actions=e.extra.get("n_actions"),
            action_meanings=tuple(meanings) if "actions" in series and meanings else None,
            manifest_sha256=e.sha256,
        ))
    return sources, skipped


def _series_paths(raw: Path, vid: str, extra: dict) -> dict[str, Path]:
    """The per-frame files of a video: named in the manifest (then they must exist), else found by name."""
    paths = {}
    for series in SERIES.values():
        named = extra.get(series.manifest_key)
        path = raw / (named or f"{vid}{series.suffix}")
        if named or path.is_file():
            paths[series.name] = path
    return paths


def _skip(vid: str, reason: str, path: Path | None) -> dict:
    return {"id": vid, "status": "skipped", "file": str(path) if path else None, "reason": reason}


def load_series(path: Path, series: FrameSeries) -> np.ndarray:
    """The per-source-frame rows of one series of a video; BadVideoError if the file is unusable."""
    if not path.is_file():
        raise BadVideoError(f"{path}: {series.name} file missing")
    try:
        values = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise BadVideoError(f"{path}: not a readable .npy file ({exc})") from None
    integer = np.issubdtype(np.dtype(series.dtype), np.integer)
    right_kind = np.issubdtype(values.dtype, np.integer if integer else np.number) and values.dtype.kind != "c"
    if (values.ndim != 1 + len(series.row_shape) or values.shape[1:] != series.row_shape or not right_kind
            or len(values) == 0 or not (integer or np.isfinite(values).all())):
        raise BadVideoError(f"{path}: expected a non-empty {series.expected} array, got {values.dtype} {values.shape}")
    return values.astype(series.dtype)


def resample_to_frames(values: np.ndarray, src_fps: float, out_fps: float, start: int, n: int, name: str = "") -> np.ndarray:
    """The rows of the source frames that output frames start..start+n-1 (whole video's grid at out_fps)
    show, sample and hold as the fps filter; one missing row at the very end is tolerated."""
    idx = source_frame_index(np.arange(start, start + n), src_fps, out_fps)
    short = int(idx[-1]) - (len(values) - 1) if n else 0
    if short > 1:
        raise BadVideoError(
            f"{name}: {len(values)} frames recorded at {src_fps:g} fps cover {len(values) / src_fps:.2f} s, "
            f"but the frames need source frame {int(idx[-1])}"
        )
    return values[np.minimum(idx, len(values) - 1)]


def output_fps(cfg: ExtractParams, info: VideoInfo) -> float:
    """The rate a video is extracted at: extract.fps, or the video's own when it is null."""
    return cfg.fps or info.fps


def rate_warning(cfg: ExtractParams, info: VideoInfo) -> str | None:
    """Why extracting this video at extract.fps repeats frames, if it does."""
    if cfg.fps is None or info.fps >= cfg.fps * (1 - 1e-3):
        return None
    return (f"recorded at {info.fps:g} fps, below extract.fps {cfg.fps:g}: {1 - info.fps / cfg.fps:.0%} of its "
            f"stored frames repeat the previous one (set extract.fps to {info.fps:g}, or null for each video's own rate)")


# --------------------------------------------------------------------------------------------
# one video
# --------------------------------------------------------------------------------------------
def extract_video(src: Source, info: VideoInfo, window: FrameWindow, cfg: ExtractParams, store: Path,
                  progress: Callable[[int], None] | None = None) -> dict:
    """Decode one video into group `store/<id>`; returns its attrs. The group is written under a
    temporary name and renamed when complete, so a failed or killed attempt leaves no group."""
    fps = output_fps(cfg, info)
    with atomic_dir(Path(store) / src.id) as tmp:
        recorded = {name: load_series(path, SERIES[name]) for name, path in src.series_paths.items()}
        sha = sha256_file(src.path)
        graph, geo = build_graph(info, cfg.size, cfg.resize_mode, fps, window, cfg.hud_masks)
        group = zarr.open_group(str(store), mode="r+").create_group(tmp.name)
        stream = FrameStream(raw_args(graph), cfg.size, cfg.chunk_frames, name=str(src.path))
        with ShardedArrayWriter(group, "frames", (cfg.size, cfg.size, 3), np.uint8, cfg.chunk_frames, cfg.shard_frames) as writer:
            for chunk in stream:
                writer.append(chunk)
                if progress:
                    progress(len(chunk))
            n = writer.close()

        # A truncated file decodes up to the cut and ffmpeg exits 0: compare with the probed duration,
        # tolerating a small silent shortfall (rounded durations, a longer audio track).
        short = n < window.expected - max(2, round(0.02 * window.expected))
        if short and (stream.warnings or n < 0.75 * window.expected):
            said = f"; ffmpeg: {' | '.join(stream.warnings[-3:])}" if stream.warnings else ""
            raise BadVideoError(
                f"{src.path}: truncated or corrupt: decoded {n} of the {window.expected} frames its "
                f"{info.duration:.2f} s duration promises{said}"
            )

        attrs = {
            "fps": fps,
            "source": src.source,
            "source_id": src.id,
            "split": None,  # set once every video is done (splits depend on which videos are usable)
            "source_size": [info.width, info.height],
            "crop_box": list(geo.crop_box),
            "resize_mode": cfg.resize_mode,
            "n_frames": n,
            "start_frame": window.start,  # first frame's index on the whole video's grid at `fps`
            "source_fps": info.fps,
            "source_duration": info.duration,
            "source_sha256": sha,
        }
        attrs.update(_store_series(group, src, recorded, fps, window.start, n, info))
        group.attrs.update(attrs)
    return attrs


def _store_series(group: zarr.Group, src: Source, recorded: dict[str, np.ndarray], fps: float, start: int, n: int,
                  info: VideoInfo) -> dict:
    """Resample each recorded series to the n output frames from `start`, store it; returns its attrs."""
    recorded_fps = src.series_fps or info.fps
    attrs = {}
    for name, values in recorded.items():
        stored = resample_to_frames(values, recorded_fps, fps, start, n, str(src.series_paths[name]))
        # One chunk: a series is a few bytes a frame, so a shard layout would only add files.
        group.create_array(name, data=stored, chunks=(max(n, 1), *stored.shape[1:]), compressors=compressors(stored.dtype),
                           config={"write_empty_chunks": True})
        attrs[f"{name}_fps"] = recorded_fps
    if "actions" in recorded:
        # Size of the action space: the recorder's (manifest) else the largest action seen + 1.
        attrs["n_actions"] = int(src.n_actions) if src.n_actions else int(recorded["actions"].max()) + 1
        if src.action_meanings:
            attrs["action_meanings"] = list(src.action_meanings)
    if "poses" in recorded:
        attrs["pose_fields"] = list(POSE_FIELDS)
    return attrs


_PROGRESS = None  # a queue in pool workers: frames done, for the parent's progress bar


def _init_worker(progress_queue) -> None:
    global _PROGRESS
    _PROGRESS = progress_queue


def _run_one(src: Source, info: VideoInfo, window: FrameWindow, cfg: ExtractParams, store: Path, progress=None) -> dict:
    """Extract one video; bad input becomes a 'skipped' report entry instead of an exception."""
    if progress is None and _PROGRESS is not None:
        progress = _PROGRESS.put
    t0 = time.perf_counter()
    try:
        attrs = extract_video(src, info, window, cfg, store, progress)
    except BAD_INPUT as exc:
        return _skip(src.id, str(exc), src.path)
    entry = {"id": src.id, "status": "ok", "file": str(src.path), "n_frames": attrs["n_frames"],
             "seconds": round(time.perf_counter() - t0, 3), "attrs": attrs}
    warnings = [rate_warning(cfg, info)]
    if src.manifest_sha256 and src.manifest_sha256 != attrs["source_sha256"]:
        warnings.append(f"sha256 differs from {MANIFEST_NAME} (the file changed after download)")
    if any(warnings):
        entry["warning"] = "; ".join(w for w in warnings if w)
    return entry


# --------------------------------------------------------------------------------------------
# the whole store
# --------------------------------------------------------------------------------------------
def _run_all(jobs: list[tuple], cfg: ExtractParams, store: Path) -> list[dict]:
    total = sum(w.expected for _, _, w in jobs)
    results = []
    with tqdm(total=total, unit="frame", desc="extract", smoothing=0.1) as bar:
        if cfg.engine == "ray":
            from pipeline.data.extract_ray import run_on_ray

            return run_on_ray(jobs, cfg, store, _run_one, bar.update)
        source_pixels = sum(info.duration * info.fps * info.width * info.height for _, info, _ in jobs)
        if cfg.workers == 1 or len(jobs) == 1 or source_pixels < SERIAL_BELOW_PIXELS:
            for src, info, window in jobs:
                results.append(_run_one(src, info, window, cfg, store, bar.update))
            return results
        # spawn, not fork: zarr runs an event-loop thread, and forking a threaded process can deadlock.
        ctx = mp.get_context("spawn")
        progress = ctx.Queue()
        pool = ProcessPoolExecutor(min(cfg.workers, len(jobs)), mp_context=ctx, initializer=_init_worker, initargs=(progress,))
        try:
            pending = {pool.submit(_run_one, src, info, window, cfg, store) for src, info, window in jobs}
            while pending:
                done, pending = wait(pending, timeout=0.25, return_when=FIRST_COMPLETED)
                while not progress.empty():
                    bar.update(progress.get())
                results.extend(f.result() for f in done)
        except BaseException:
            # Ctrl-C or a bug: stop the videos in progress now rather than let them run to their end.
            for proc in list(getattr(pool, "_processes", {}).values()):
                proc.terminate()
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
    return results


def extract_all(raw_dir: str | Path, out: str | Path, report_path: str | Path, cfg: ExtractParams, seed: int) -> dict:
    """Extract every usable video of `raw_dir` into the store `out`; writes the report; returns it."""
    out, t0 = Path(out), time.perf_counter()
    remove_stale_tmp(out.parent, out.name)  # leftovers of a killed run
    remove_stale_tmp(Path(report_path).parent, Path(report_path).name)

    sources, entries = find_sources(raw_dir)
    jobs = []
    for src in sources:
        try:
            info = probe_video(src.path)
            window = frame_window(info, output_fps(cfg, info), cfg.skip_start_s, cfg.skip_end_s, cfg.max_frames)
        except BAD_INPUT as exc:
            entries.append(_skip(src.id, str(exc), src.path))
            continue
        jobs.append((src, info, window))

    report = _build_store(out, report_path, raw_dir, jobs, entries, cfg, seed, t0)
    write_json(report_path, report)
    return report


def _build_store(out: Path, report_path, raw_dir, jobs: list[tuple], entries: list[dict], cfg: ExtractParams,
                 seed: int, t0: float) -> dict:
    """Extract every job into a temporary store, assign splits, rename it into place; returns the report."""
    with atomic_dir(out, settle_s=0.5) as tmp:  # Ctrl-C can land mid-write in zarr's IO thread
        root = zarr.open_group(str(tmp), mode="w")
        root.attrs.update({**cfg.model_dump(mode="json", exclude=cfg.EXECUTION), "seed": seed})
        entries += _run_all(jobs, cfg, tmp)
        remove_stale_tmp(tmp)  # groups of attempts that died (a killed Ray worker's, before its retry)
        ok = [e for e in entries if e["status"] == "ok"]
        if not ok:
            write_json(report_path, _report(entries, cfg, time.perf_counter() - t0))
            reasons = "\n  ".join(f"{e['id']}: {e['reason']}" for e in entries) or f"no videos found in {raw_dir}"
            raise ExtractError(f"no usable video in {raw_dir} (details in {report_path}):\n  {reasons}")
        splits = assign_splits([e["id"] for e in ok], cfg.splits.model_dump(), seed)
        for e in ok:
            root[e["id"]].attrs["split"] = e["attrs"]["split"] = splits[e["id"]]
        root.attrs["split_videos"] = {s: sorted(v for v, sp in splits.items() if sp == s) for s in SPLITS}
        return _report(entries, cfg, time.perf_counter() - t0)


def _report(entries: list[dict], cfg: ExtractParams, seconds: float) -> dict:
    ok = [e for e in entries if e["status"] == "ok"]
    frames = sum(e["n_frames"] for e in ok)
    videos = [{k: v for k, v in e.items() if k != "attrs"} | ({"split": e["attrs"]["split"]} if "attrs" in e else {})
              for e in sorted(entries, key=lambda e: e["id"])]
    return {
        "n_ok": len(ok),
        "n_skipped": len(entries) - len(ok),
        "n_frames": frames,
        "seconds": round(seconds, 3),
        "frames_per_second": round(frames / seconds, 1) if seconds > 0 else None,
        "fps": cfg.fps,  # None: each video's own (its attrs say)
        "size": cfg.size,
        "videos": videos,
    }
