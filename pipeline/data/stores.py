"""Frames and latents stores (zarr v3): per video, ``frames`` uint8 (T, H, W, 3) or ``latents`` float16
(T, C, h, w), chunked in time and sharded, with ``actions``/``poses`` when recorded. Reads raise
StoreError naming a missing or damaged shard file. CLI: ``inspect|verify PATH``; docs/stages.md.
"""

from __future__ import annotations

import hashlib
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import zarr
from zarr.codecs import BloscCodec, Crc32cCodec

from pipeline.data.splits import SPLITS


class StoreError(RuntimeError):
    """A store or a video group is missing, inconsistent or damaged."""


SIDE_ARRAYS = ("actions", "poses")  # per-frame arrays beside a video's frames or latents
POSE_SHAPE = (3,)  # a pose row: x, y, heading_deg
WRITTEN_BY = {"frames": "extract", "latents": "tokenize"}  # the stage that writes a store, by its data array
WRITTEN_BY_NAME = {"frames.zarr": "extract", "latents.zarr": "tokenize"}  # ... by the store's file name


def compressor(dtype=None) -> BloscCodec:
    """Blosc/zstd: level 1, no shuffle for bytes (keeps pace with decoding); level 5, byte shuffle otherwise."""
    if dtype is not None and np.dtype(dtype).itemsize == 1:
        return BloscCodec(cname="zstd", clevel=1, shuffle="noshuffle", typesize=1)
    return BloscCodec(cname="zstd", clevel=5, shuffle="shuffle")


def compressors(dtype=None) -> tuple[BloscCodec, Crc32cCodec]:
    """The compressor, then a CRC-32C per compressed chunk, so that damage inside a shard file (not
    only a truncation) fails the read."""
    return compressor(dtype), Crc32cCodec()


class ShardedArrayWriter:
    """Append frames along time to a new array, a shard at a time, written by a background thread while
    the next fills (memory: two shards); a write's error surfaces at the next flush or close."""

    def __init__(self, group: zarr.Group, name: str, frame_shape: tuple[int, ...], dtype, chunk_frames: int, shard_frames: int):
        if shard_frames % chunk_frames:
            raise ValueError(f"shard_frames {shard_frames} is not a multiple of chunk_frames {chunk_frames}")
        self.array = group.create_array(
            name,
            shape=(0, *frame_shape),
            dtype=dtype,
            chunks=(chunk_frames, *frame_shape),
            shards=(shard_frames, *frame_shape),
            compressors=compressors(dtype),
            fill_value=0,
            # Write all-zero chunks too (black frames, NOOP actions): a missing file then always means damage.
            config={"write_empty_chunks": True},
        )
        self.shard_frames = shard_frames
        self._buf = np.empty((shard_frames, *frame_shape), dtype=dtype)
        self._spare: np.ndarray | None = None
        self._fill = 0
        self._pending: Future | None = None
        self._pool = ThreadPoolExecutor(1, thread_name_prefix=f"zarr-writer-{name}")
        self.n_frames = 0  # frames handed to the writer thread

    def append(self, frames: np.ndarray) -> None:
        frames = np.asarray(frames, dtype=self._buf.dtype)
        while len(frames):
            take = min(len(frames), self.shard_frames - self._fill)
            self._buf[self._fill : self._fill + take] = frames[:take]
            self._fill += take
            frames = frames[take:]
            if self._fill == self.shard_frames:
                self._flush()

    def _write(self, buf: np.ndarray, start: int, n: int) -> None:
        self.array.resize((start + n, *self.array.shape[1:]))
        self.array[start : start + n] = buf[:n]

    def _wait(self) -> None:
        if self._pending is not None:
            pending, self._pending = self._pending, None
            pending.result()

    def _flush(self) -> None:
        if not self._fill:
            return
        self._wait()  # the previous shard is on disk and its buffer is free again
        buf, n, start = self._buf, self._fill, self.n_frames
        self._pending = self._pool.submit(self._write, buf, start, n)
        self._buf = self._spare if self._spare is not None else np.empty_like(buf)
        self._spare = buf
        self.n_frames += n
        self._fill = 0

    def close(self) -> int:
        """Write what is buffered and wait for it; returns the number of frames written."""
        try:
            self._flush()
            self._wait()
        finally:
            self._pool.shutdown(wait=True)
        return self.n_frames

    def __enter__(self) -> "ShardedArrayWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        # On an error, let the write in flight finish (so nothing lands after the caller cleans up)
        # and drop what is buffered; on success, close() if the caller did not.
        if exc_type is None:
            self.close()
            return
        try:
            self._wait()
        except Exception:
            pass
        finally:
            self._pool.shutdown(wait=True)


@dataclass(frozen=True)
class VideoEntry:
    id: str
    split: str
    n_frames: int
    fps: float
    has_actions: bool
    attrs: dict
    has_poses: bool = False


def store_identity(store: str | Path) -> str:
    """sha256 of a store's metadata files and its data files' names and sizes (no shard is read)."""
    store = Path(store)
    h = hashlib.sha256()
    for path in sorted(p for p in store.rglob("*") if p.is_file()):
        h.update(path.relative_to(store).as_posix().encode())
        h.update(path.read_bytes() if path.name == "zarr.json" else str(path.stat().st_size).encode())
    return h.hexdigest()


def _advice(path: Path, stage: str | None = None) -> str:
    rebuild = f"rebuild it with `dvc repro -f {stage}`" if stage else "rerun the stage that writes it"
    return f"check it with `python -m pipeline.data.stores verify {path}`, then {rebuild}"


def open_store(path: str | Path) -> zarr.Group:
    path = Path(path)
    if not (path / "zarr.json").is_file():
        stage = WRITTEN_BY_NAME.get(path.name)
        run = f"`dvc repro {stage}`" if stage else "the stage that writes it"
        raise StoreError(f"{path}: not a zarr store (run {run} first; `dvc repro` runs the stages in order)")
    try:
        return zarr.open_group(str(path), mode="r")
    except Exception as exc:  # a damaged zarr.json: any parse or codec error
        raise StoreError(f"{path}: unreadable store metadata ({type(exc).__name__}: {exc}); {_advice(path)}") from exc


def _video_group(path: Path, root: zarr.Group, video_id: str) -> zarr.Group:
    if video_id not in root:
        raise StoreError(f"{path}: no video {video_id!r}")
    try:
        return root[video_id]
    except Exception as exc:
        raise StoreError(f"{path}: video {video_id!r}: unreadable group metadata "
                         f"{path / video_id / 'zarr.json'} ({type(exc).__name__}: {exc}); {_advice(path)}") from exc  # fmt: skip


def list_videos(path: str | Path, split: str | None = None, array: str = "frames") -> list[VideoEntry]:
    """Videos of a store, sorted by id, optionally of one split only."""
    path = Path(path)
    root = open_store(path)
    entries = []
    for vid in sorted(root.group_keys()):
        g = _video_group(path, root, vid)
        attrs = dict(g.attrs)
        if array not in g:
            raise StoreError(f"{path}/{vid}: no {array!r} array")
        entry = VideoEntry(
            id=vid,
            split=attrs.get("split", "train"),
            n_frames=int(_array(path, vid, g, array).shape[0]),
            fps=float(attrs.get("fps", 0.0)),
            has_actions="actions" in g,
            attrs=attrs,
            has_poses="poses" in g,
        )
        if split is None or entry.split == split:
            entries.append(entry)
    return entries


def _array(path: Path, video_id: str, group: zarr.Group, name: str) -> zarr.Array:
    try:
        return group[name]
    except Exception as exc:
        stage = WRITTEN_BY.get(_data_array(group))
        raise StoreError(f"{path}: video {video_id!r}: unreadable array metadata {path / video_id / name / 'zarr.json'} "
                         f"({type(exc).__name__}: {exc}); {_advice(path, stage)}") from exc  # fmt: skip


def _shard_path(path: Path, video_id: str, name: str, array: zarr.Array, shard: int) -> Path:
    """The file that holds shard `shard` (along time) of an array; time is its only split axis."""
    key = array.metadata.chunk_key_encoding.encode_chunk_key((shard,) + (0,) * (array.ndim - 1))
    return path / video_id / name / key


def _read_slice(path: Path, video_id: str, group: zarr.Group, name: str, start: int, stop: int | None) -> np.ndarray:
    """group[name][start:stop], or a StoreError naming the shard file that is missing or damaged."""
    array = _array(path, video_id, group, name)
    lo, hi, _ = slice(start, stop).indices(array.shape[0])
    step = (array.shards or array.chunks)[0]
    shards = range(lo // step, -(-hi // step)) if hi > lo else range(0)
    where = f"{path}: video {video_id!r}, array {name!r}"

    def advice() -> str:  # only for an error: it looks the store's data array up again
        return _advice(path, WRITTEN_BY.get(_data_array(group)))

    # zarr reads a missing shard as fill values without complaint: look for the files first.
    for shard in shards:
        file = _shard_path(path, video_id, name, array, shard)
        if not file.is_file():
            raise StoreError(f"{where}: shard file {file} (frames from {shard * step}) is missing; {advice()}")
    try:
        return array[lo:hi]
    except Exception as exc:  # a codec or IO failure: find the shard it comes from
        for shard in shards:
            try:
                array[max(lo, shard * step) : min(hi, (shard + 1) * step)]
            except Exception as shard_exc:
                file = _shard_path(path, video_id, name, array, shard)
                raise StoreError(f"{where}: shard file {file} (frames from {shard * step}) is damaged "
                                 f"({type(shard_exc).__name__}: {shard_exc}); {advice()}") from exc  # fmt: skip
        raise StoreError(f"{where}: frames [{lo}:{hi}] unreadable ({type(exc).__name__}: {exc}); {advice()}") from exc


def read_array(path: str | Path, video_id: str, array: str, start: int = 0, stop: int | None = None,
               group: zarr.Group | None = None) -> np.ndarray:
    """``array[start:stop]`` of a video; pass its open ``group`` to skip re-reading the store's metadata."""
    path = Path(path)
    group = _video_group(path, open_store(path), video_id) if group is None else group
    if array not in group:
        raise StoreError(f"{path}: video {video_id!r} has no {array!r} array")
    return _read_slice(path, video_id, group, array, start, stop)


def _read_side_array(path: str | Path, video_id: str, name: str, start: int, stop: int | None) -> np.ndarray | None:
    path = Path(path)
    group = _video_group(path, open_store(path), video_id)
    return _read_slice(path, video_id, group, name, start, stop) if name in group else None


def read_actions(path: str | Path, video_id: str, start: int = 0, stop: int | None = None) -> np.ndarray | None:
    """int64 (T,) actions of a video (actions[t]: chosen on seeing frame t), None if it has none."""
    return _read_side_array(path, video_id, "actions", start, stop)


def read_poses(path: str | Path, video_id: str, start: int = 0, stop: int | None = None) -> np.ndarray | None:
    """float32 (T, 3) poses of a video (x, y, heading in degrees of frame t), None if it has none."""
    return _read_side_array(path, video_id, "poses", start, stop)


# --------------------------------------------------------------------------------------------
# inspect / verify:  python -m pipeline.data.stores inspect|verify data/frames.zarr
# --------------------------------------------------------------------------------------------
REQUIRED_ATTRS = {
    "frames": ("fps", "source", "split", "source_size", "crop_box", "n_frames", "source_sha256"),
    "latents": ("split",),
}


def _data_array(group: zarr.Group) -> str | None:
    return next((name for name in REQUIRED_ATTRS if name in group), None)


def _disk_usage(path: Path) -> tuple[int, int]:
    """(bytes, files) under `path`."""
    files = [p for p in path.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files), len(files)


def _shard_files(path: Path) -> int:
    return sum(1 for p in (path / "c").rglob("*") if p.is_file()) if (path / "c").is_dir() else 0


def store_summary(path: str | Path) -> dict:
    """Per-video rows (id, split, frames, fps, shape, actions, poses, bytes, files) and per-split totals."""
    path = Path(path)
    root = open_store(path)
    rows = []
    for vid in sorted(root.group_keys()):
        g = root[vid]
        name = _data_array(g)
        nbytes, nfiles = _disk_usage(path / vid)
        rows.append({
            "id": vid,
            "split": g.attrs.get("split"),
            "array": name,
            "frames": int(g[name].shape[0]) if name else 0,
            "fps": g.attrs.get("fps"),
            "shape": list(g[name].shape[1:]) if name else None,
            "actions": "actions" in g,
            "poses": "poses" in g,
            "bytes": nbytes,
            "files": nfiles,
        })
    splits = {s: {"videos": sum(r["split"] == s for r in rows), "frames": sum(r["frames"] for r in rows if r["split"] == s)}
              for s in SPLITS}
    nbytes, nfiles = _disk_usage(path)
    return {"path": str(path), "videos": rows, "splits": splits, "bytes": nbytes, "files": nfiles, "attrs": dict(root.attrs)}


def verify_store(path: str | Path, read: bool = True) -> list[str]:
    """Problems found (empty = sound): groups complete, shapes and attrs consistent, every shard readable."""
    path = Path(path)
    root = open_store(path)
    problems = []
    videos = sorted(root.group_keys())
    if not videos:
        problems.append(f"{path}: no video groups")
    for vid in videos:
        try:
            problems += _verify_video(path, vid, root[vid], read)
        except Exception as exc:  # damaged metadata: a finding, not a crash
            problems.append(f"{path}/{vid}: unreadable ({type(exc).__name__}: {exc})")
    return problems


def _verify_video(path: Path, vid: str, g: zarr.Group, read: bool) -> list[str]:
    where, problems = f"{path}/{vid}", []
    name = _data_array(g)
    if name is None:
        return [f"{where}: no 'frames' or 'latents' array"]
    arr, attrs = g[name], dict(g.attrs)
    missing = [k for k in REQUIRED_ATTRS[name] if k not in attrs]
    if missing:
        problems.append(f"{where}: missing attrs {', '.join(missing)}")
    if attrs.get("split") not in SPLITS:
        problems.append(f"{where}: split {attrs.get('split')!r} is not one of {', '.join(SPLITS)}")
    if name == "frames" and (arr.ndim != 4 or arr.shape[-1] != 3 or arr.dtype != np.uint8):
        problems.append(f"{where}/frames: expected uint8 (T, H, W, 3), got {arr.dtype} {arr.shape}")
    if name == "latents" and (arr.ndim != 4 or arr.dtype != np.float16):
        problems.append(f"{where}/latents: expected float16 (T, C, h, w), got {arr.dtype} {arr.shape}")
    n = arr.shape[0]
    if n == 0:
        problems.append(f"{where}/{name}: no frames")
    if "n_frames" in attrs and attrs["n_frames"] != n:
        problems.append(f"{where}: attrs n_frames {attrs['n_frames']} != {name} length {n}")
    problems += _verify_side_arrays(where, g, n, attrs)
    for array_name in (name, *(a for a in SIDE_ARRAYS if a in g)):
        problems += _verify_files(path, vid, array_name, g[array_name], read)
    return problems


def _verify_side_arrays(where: str, g: zarr.Group, n: int, attrs: dict) -> list[str]:
    problems = []
    expected = {"actions": (np.int64, (n,), "n_actions"), "poses": (np.float32, (n, *POSE_SHAPE), "pose_fields")}
    for name, (dtype, shape, attr) in expected.items():
        if name not in g:
            continue
        arr = g[name]
        if arr.shape != shape or arr.dtype != dtype:
            problems.append(f"{where}/{name}: expected {np.dtype(dtype)} {shape}, got {arr.dtype} {arr.shape}")
        if attr not in attrs:
            problems.append(f"{where}: {name} without attrs {attr}")
    return problems


def _verify_files(path: Path, vid: str, name: str, arr: zarr.Array, read: bool) -> list[str]:
    """Every shard file of an array on disk, and (read=True) decodable."""
    where, problems = f"{path}/{vid}/{name}", []
    n = arr.shape[0]
    # zarr reads a missing chunk as fill_value without complaint: count the shard files.
    step = (arr.shards or arr.chunks)[0]
    expected = -(-n // step)
    found = _shard_files(path / vid / name)
    if found != expected:
        problems.append(f"{where}: {found} shard files on disk, expected {expected} for {n} frames")
    if read:
        for start in range(0, n, step):
            try:
                arr[start : start + step]
            except Exception as exc:  # any codec or IO failure is a finding, not a crash
                file = _shard_path(path, vid, name, arr, start // step)
                problems.append(f"{where}[{start}:{start + step}]: unreadable, {file} ({type(exc).__name__}: {exc})")
    return problems


def _human(nbytes: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if nbytes < 1024 or unit == "GiB":
            return f"{nbytes:.1f} {unit}" if unit != "B" else f"{int(nbytes)} B"
        nbytes /= 1024
    return str(nbytes)


def main(argv: list[str] | None = None) -> int:
    import argparse
    import json

    parser = argparse.ArgumentParser(prog="python -m pipeline.data.stores",
                                     description="Inspect or verify a frames/latents store.")  # fmt: skip
    parser.add_argument("command", choices=["inspect", "verify"])
    parser.add_argument("path")
    parser.add_argument("--json", action="store_true", help="inspect: print JSON instead of a table")
    parser.add_argument("--no-read", action="store_true", help="verify: skip decoding every shard")
    args = parser.parse_args(argv)
    try:
        if args.command == "inspect":
            s = store_summary(args.path)
            if args.json:
                print(json.dumps(s, indent=2))
                return 0
            print(f"{'video':<28} {'split':<6} {'frames':>8} {'fps':>6} {'shape':<14} {'actions':<7} {'poses':<5} "
                  f"{'size':>10} {'files':>5}")
            for r in s["videos"]:
                shape = "x".join(map(str, r["shape"] or []))
                print(f"{r['id']:<28} {str(r['split']):<6} {r['frames']:>8} {r['fps'] or 0:>6g} {shape:<14} "
                      f"{'yes' if r['actions'] else 'no':<7} {'yes' if r['poses'] else 'no':<5} "
                      f"{_human(r['bytes']):>10} {r['files']:>5}")
            for name, t in s["splits"].items():
                print(f"{name}: {t['videos']} videos, {t['frames']} frames")
            print(f"total: {len(s['videos'])} videos, {_human(s['bytes'])} in {s['files']} files")
            return 0
        problems = verify_store(args.path, read=not args.no_read)
    except StoreError as exc:
        print(f"error: {exc}")
        return 2
    for p in problems:
        print(f"FAIL {p}")
    print(f"{args.path}: {'OK' if not problems else f'{len(problems)} problem(s)'}")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
