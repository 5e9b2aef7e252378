"""Stage download's work: parse `download.sources` (yt-dlp URLs, `@handles`, the recorders `atari:<Game>`,
`vizdoom:<scenario>`, `crafter`) and fetch each into data/raw with its manifest (docs/sources.md)."""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Literal

from tqdm.auto import tqdm

from pipeline.atomic import remove_stale_tmp
from pipeline.config import SOURCE_HINT, DownloadParams
from pipeline.data.sources import atari, crafter, recording, vizdoom, ytdlp
from pipeline.data.sources.manifest import (
    VideoEntry,
    entry_for_file,
    load_manifest,
    write_manifest,
)
from pipeline.data.sources.ytdlp import SourceBlockedError
from pipeline.data.video.probe import ProbeError

log = logging.getLogger(__name__)

__all__ = ["Source", "parse_source", "check_sources", "download", "DownloadFailed", "SourceError", "SourceBlockedError"]

# The embedded recorders by source prefix; each provides recording.Recorder's check() and episode().
RECORDERS: dict[str, recording.Recorder] = {"atari": atari, "vizdoom": vizdoom, "crafter": crafter}
EXAMPLES = {"atari": "atari:Boxing", "vizdoom": "vizdoom:my_way_home", "crafter": "crafter"}


class DownloadFailed(RuntimeError):
    """No usable video was obtained, or a source failed with download.fail_fast set."""


class SourceError(ValueError):
    """A download.sources entry is malformed, or names a game or scenario no recorder has."""


class MissingCookiesFile(SourceError, FileNotFoundError):
    """download.cookies_file names a file that does not exist."""


@dataclass(frozen=True)
class Source:
    spec: str  # as written in params.yaml; entries in the manifest name it
    kind: Literal["url", "atari", "vizdoom", "crafter"]
    target: str  # the URL for yt-dlp, the game or scenario of a recorder ("" for crafter)


def parse_source(spec: str) -> Source:
    """The kind and target of a download.sources entry; SourceError if it is malformed."""
    spec = spec.strip()
    kind, colon, target = spec.partition(":")
    if kind in RECORDERS and (colon or kind == "crafter"):
        if colon and not target:
            raise SourceError(f"download.sources: {spec!r}: nothing follows the colon (e.g. {EXAMPLES[kind]})")
        return Source(spec, kind, target)
    if spec.startswith("@"):
        if len(spec) < 2 or "/" in spec:
            raise SourceError(f"download.sources: {spec!r}: a channel handle looks like @domisumReplay-Garen")
        return Source(spec, "url", f"https://www.youtube.com/{spec}/videos")
    if spec.startswith(("http://", "https://", "file://")):
        return Source(spec, "url", spec)
    raise SourceError(f"download.sources: {spec!r}: {SOURCE_HINT}")


def check_sources(specs: list[str]) -> list[Source]:
    """Parse every entry and check that its recorder knows the game or scenario, before any work;
    one SourceError, on one line, names every bad entry."""
    sources, errors = [], []
    for spec in specs:
        try:
            src = parse_source(spec)
        except SourceError as exc:
            errors.append(str(exc))
            continue
        try:
            if src.kind in RECORDERS:
                RECORDERS[src.kind].check(src.target)  # its message names the source
            sources.append(src)
        except ValueError as exc:
            errors.append(f"download.sources: {exc}")
    if errors:
        raise SourceError("; ".join(errors))
    return sources


def is_recording(entry: VideoEntry) -> bool:
    """Whether a manifest entry came from an embedded recorder (cheap to redo, unlike a download)."""
    return entry.source.partition(":")[0] in RECORDERS


def _fetch(src: Source, p: DownloadParams, seed: int, out_dir: Path, staging: Path) -> Iterator[VideoEntry]:
    if src.kind in RECORDERS:
        return recording.record(RECORDERS[src.kind], src.target, src.spec, seed, p.recorder, p.max_videos, out_dir)
    return ytdlp.fetch(src.target, src.spec, p, out_dir, staging)


def _settle(new: VideoEntry, old: VideoEntry | None, out_dir: Path) -> VideoEntry:
    """What the manifest records when this run did not produce the file itself."""
    if new.status == "ok":
        return new
    path = out_dir / new.file_name
    if not path.is_file():
        return new
    if old is not None and old.status == "ok" and old.bytes == path.stat().st_size:
        return old  # archive skip (or a transient failure) of a video we already have
    if new.status == "skipped":  # on disk but not in the manifest (e.g. max_videos was lower): describe it
        try:
            return entry_for_file(path, id=new.id, source=new.source, title=new.title, url=new.url)
        except ProbeError as exc:
            return dataclasses.replace(new, status="failed", error=f"archived, but the file on disk is unusable: {exc}")
    return new


def download(p: DownloadParams, seed: int, out_dir: str | Path) -> list[VideoEntry]:
    """Fetch every source of `p` into out_dir, rewriting out_dir/manifest.json after each video. SourceError
    before any work; DownloadFailed if nothing usable came (or on a failure with fail_fast); SourceBlockedError."""
    out_dir = Path(out_dir)
    staging = out_dir.parent / f".{out_dir.name}-partial"  # yt-dlp's resumable .part files
    sources = check_sources(p.sources)
    if p.cookies_file and not Path(p.cookies_file).is_file():
        raise MissingCookiesFile(f"download.cookies_file: {p.cookies_file!r} does not exist")
    out_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_tmp(out_dir)  # leftovers of a crashed run never look like videos
    previous = load_manifest(out_dir)
    specs = [s.spec for s in sources]
    entries: dict[str, VideoEntry] = {}

    def save(entries: dict[str, VideoEntry]) -> None:
        if _usable(entries) or not _usable(previous):  # never trade usable videos for none
            write_manifest(out_dir, entries, specs)

    complete = False
    try:
        for src in tqdm(sources, desc="sources", unit="source"):
            for new in _fetch(src, p, seed, out_dir, staging):
                if new.id in entries and entries[new.id].status == "ok":
                    continue  # the same video through two sources (a playlist and its channel): once
                entry = entries[new.id] = _settle(new, previous.get(new.id), out_dir)
                save(entries)
                if entry.status == "failed":
                    log.warning("%s: %s failed: %s", src.spec, entry.id, entry.error)
                    if p.fail_fast:
                        raise DownloadFailed(
                            f"{src.spec}: {entry.id}: {entry.error} (stopped: download.fail_fast is set)"
                        )
        complete = True
    finally:
        if not complete:  # keep what earlier runs obtained from the sources this run did not reach
            entries = {**{k: v for k, v in previous.items() if v.source in specs}, **entries}
        save(entries)
        _remove_if_empty(staging)

    ok = _usable(entries)
    failed = [e for e in entries.values() if e.status == "failed"]
    log.info("download: %d ok, %d failed, %d skipped", len(ok), len(failed), len(entries) - len(ok) - len(failed))
    if not ok:
        summary = "\n  ".join(f"{e.source}: {e.id}: {e.status}: {e.error}" for e in entries.values()) or "(no videos)"
        raise DownloadFailed(f"no usable video was obtained from download.sources:\n  {summary}")
    _drop_stale_recordings(previous, entries, out_dir)
    return list(entries.values())


def _usable(entries: dict[str, VideoEntry]) -> list[VideoEntry]:
    return [e for e in entries.values() if e.status == "ok"]


def _drop_stale_recordings(previous: dict[str, VideoEntry], entries: dict[str, VideoEntry], out_dir: Path) -> None:
    # Recordings are cheap to redo, so ones the params no longer select are removed (not so downloads).
    for old in previous.values():
        if old.id not in entries and is_recording(old):
            (out_dir / old.file_name).unlink(missing_ok=True)
            for side_file in (old.extra.get("actions_file"), old.extra.get("pose_file")):
                if side_file:
                    (out_dir / side_file).unlink(missing_ok=True)


def _remove_if_empty(staging: Path) -> None:
    if staging.is_dir() and {p.name for p in staging.iterdir()} <= {".gitignore"}:
        (staging / ".gitignore").unlink(missing_ok=True)
        staging.rmdir()
