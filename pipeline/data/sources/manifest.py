"""data/raw/manifest.json, the contract between download and extract: per video, its source and what
landed on disk (size, sha256, probed fps and size) or why not; written atomically."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pipeline.atomic import write_json
from pipeline.data.video.probe import VideoInfo, probe_video

MANIFEST_NAME = "manifest.json"
MANIFEST_VERSION = 1
ACTIONS_SUFFIX = ".actions.npy"  # <id>.actions.npy beside <id>.mp4: the action of every frame
POSE_SUFFIX = ".pose.npy"  # <id>.pose.npy beside <id>.mp4: the agent's pose in every frame
POSE_FIELDS = ("x", "y", "heading_deg")  # the columns of a pose file

Status = Literal["ok", "failed", "skipped"]

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


class ManifestError(ValueError):
    """data/raw/manifest.json is not a manifest this pipeline wrote (damaged, edited)."""


def safe_id(raw_id: str) -> str:
    """A file-name-safe video id, [A-Za-z0-9_-] only: YouTube ids unchanged, others that needed
    replacing get a short hash of the original (so "a.b" and "a_b" do not collide)."""
    cleaned = _UNSAFE.sub("_", raw_id).strip("_") or "video"
    if cleaned == raw_id:
        return raw_id
    return f"{cleaned[:64]}-{hashlib.sha1(raw_id.encode()).hexdigest()[:8]}"


@dataclass
class VideoEntry:
    id: str
    source: str  # the params entry it came from (URL, @handle, or a recorder: atari:<Game>, ...)
    status: Status
    title: str | None = None
    url: str | None = None  # the video's own URL when the source is a playlist or channel
    duration: float | None = None  # seconds
    fps: float | None = None
    width: int | None = None
    height: int | None = None
    bytes: int | None = None
    sha256: str | None = None
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. actions_file, pose_file, n_actions

    @property
    def file_name(self) -> str:
        return f"{self.id}.mp4"

    def to_json(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.update(d.pop("extra"))
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "VideoEntry":
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        return cls(**{k: v for k, v in d.items() if k in names}, extra={k: v for k, v in d.items() if k not in names})


def sha256_file(path: Path, block: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            h.update(chunk)
    return h.hexdigest()


def entry_for_file(
    path: Path, *, id: str, source: str, title: str | None, url: str | None = None, extra: dict | None = None,
    probed: VideoInfo | None = None,
) -> VideoEntry:
    """An "ok" entry describing the finished file at `path` (hashed, and probed unless `probed` is given)."""
    info = probed or probe_video(path)
    return VideoEntry(
        id=id,
        source=source,
        status="ok",
        title=title,
        url=url,
        bytes=path.stat().st_size,
        sha256=sha256_file(path),
        duration=info.duration,
        fps=info.fps,
        width=info.width,
        height=info.height,
        extra=extra or {},
    )


def load_manifest(out_dir: Path) -> dict[str, VideoEntry]:
    """The previous run's entries by id ({} when there is none)."""
    path = Path(out_dir) / MANIFEST_NAME
    if not path.exists():
        return {}
    try:
        videos = json.loads(path.read_text())["videos"]
        return {d["id"]: VideoEntry.from_json(d) for d in videos}
    except (ValueError, KeyError, TypeError) as exc:
        raise ManifestError(f"{path}: not a manifest this pipeline wrote ({exc!r}); delete it to start over") from None


def write_manifest(out_dir: Path, entries: dict[str, VideoEntry], sources: list[str]) -> Path:
    """Write the manifest atomically; entries are ordered by source (params order), then id."""
    rank = {s: i for i, s in enumerate(sources)}
    ordered = sorted(entries.values(), key=lambda e: (rank.get(e.source, len(rank)), e.id))
    path = Path(out_dir) / MANIFEST_NAME
    write_json(
        path,
        {
            "version": MANIFEST_VERSION,
            "sources": sources,
            "counts": {s: sum(e.status == s for e in ordered) for s in ("ok", "failed", "skipped")},
            "videos": [e.to_json() for e in ordered],
        },
    )
    return path
