"""URL sources through yt-dlp's Python API: list a source cheaply, then fetch each video alone; a
finished file lands in data/raw before yt-dlp archives its id. Crawl behaviour: docs/sources.md."""

from __future__ import annotations

import hashlib
import itertools
import logging
import os
import re
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import urlparse, urlsplit

from tqdm.auto import tqdm
from yt_dlp import YoutubeDL
from yt_dlp.utils import DownloadError, parse_bytes, remove_terminal_sequences

from pipeline.config import DownloadParams
from pipeline.data.sources.manifest import VideoEntry, entry_for_file, safe_id
from pipeline.data.video.ffmpeg import ffmpeg_exe
from pipeline.data.video.probe import ProbeError, VideoInfo, probe_video

log = logging.getLogger(__name__)

ARCHIVE_NAME = "archive.txt"

# What YouTube (and most CDNs) say when they throttle a client.
_BLOCKED = re.compile(
    r"confirm you.?re not a bot|HTTP Error 429|Too Many Requests|rate.?limited|try again later", re.IGNORECASE
)


class SourceBlockedError(RuntimeError):
    """The site refuses us (bot check / HTTP 429): the stage stops instead of retrying harder."""


def is_blocked(message: str) -> bool:
    return bool(_BLOCKED.search(message))


def clean_error(exc: BaseException) -> str:
    msg = remove_terminal_sequences(str(exc)).strip()
    return msg.removeprefix("ERROR: ").strip()


def url_id(url: str) -> str:
    """An id for a URL that failed before yt-dlp could name the video: its file stem plus a hash."""
    stem = Path(urlparse(url).path).stem or urlparse(url).netloc or "url"
    return f"{safe_id(stem).split('-')[0][:48]}-{hashlib.sha1(url.encode()).hexdigest()[:8]}"


# Extractors that name a video after its file name (direct links, <video> tags in a page).
_FILE_NAMED = ("Generic", "HTML5MediaEmbed")


def media_file_id(item: dict) -> str | None:
    """The id of a video that yt-dlp names after its file alone ("clip" for both a/clip.mp4 and
    b/clip.mp4), from the file's scheme, host and path (no query); None for site ids, which are stable."""
    if item.get("extractor_key") not in _FILE_NAMED:
        return None
    formats = item.get("formats") or [{}]
    parts = urlsplit(formats[0].get("url") or item.get("webpage_url") or item.get("url") or "")
    return url_id(f"{parts.scheme}://{parts.netloc}{parts.path}")


def format_selector(max_height: int) -> str:
    """Best video-only stream within the cap (`<=?` passes unknown heights: direct links), else the
    smallest above it (`bv*` under the `res:<cap>` sort). Frames need no audio."""
    return f"bv*[height<=?{max_height}]/bv*"


def ytdlp_options(p: DownloadParams, staging: Path, archive: Path | None, *, file_urls: bool) -> dict[str, Any]:
    """The YoutubeDL params for a download section (see yt_dlp/YoutubeDL.py for each key)."""
    opts: dict[str, Any] = {
        "format": format_selector(p.max_height),
        # Among formats within the cap: largest first, then H.264 (fast, universal decode), then mp4.
        "format_sort": [f"res:{p.max_height}", "vcodec:h264", "ext:mp4:m4a"],
        "outtmpl": {"default": "%(id)s.%(ext)s"},  # the id only: a title never becomes a path
        "paths": {"home": str(staging), "temp": str(staging)},
        "postprocessors": [{"key": "FFmpegVideoRemuxer", "preferedformat": "mp4"}],  # webm -> mp4, no re-encode
        "ffmpeg_location": ffmpeg_exe(),
        "retries": p.retries,
        "fragment_retries": p.retries,
        "extractor_retries": p.retries,
        "file_access_retries": p.retries,
        "socket_timeout": 30,
        "match_filter": _not_live,
        "enable_file_urls": file_urls,  # yt-dlp refuses file:// unless asked (a page could point there)
        "noplaylist": False,
        "ignoreerrors": False,  # we catch per video
        "noprogress": True,  # our tqdm bars instead
        "quiet": True,
        "logger": _Logger(),
    }
    if archive is not None:
        opts["download_archive"] = str(archive)
    if p.sleep_interval:
        opts["sleep_interval"] = p.sleep_interval
        opts["max_sleep_interval"] = max(p.sleep_interval, p.max_sleep_interval)
    if p.rate_limit:
        opts["ratelimit"] = parse_bytes(p.rate_limit)
    if p.cookies_file:
        opts["cookiefile"] = p.cookies_file
    return opts


def _not_live(info: dict, *, incomplete: bool = False) -> str | None:
    # A live or upcoming stream has no end to download; yt-dlp would wait or record forever.
    if info.get("is_live") or info.get("live_status") in ("is_live", "is_upcoming"):
        return "live or upcoming stream"
    return None


class _Logger:
    """Route yt-dlp's messages to logging; its errors reach us as DownloadError anyway."""

    def debug(self, msg: str) -> None:
        log.debug(msg)

    def info(self, msg: str) -> None:
        log.debug(msg)

    def warning(self, msg: str) -> None:
        log.warning(remove_terminal_sequences(msg))

    def error(self, msg: str) -> None:
        log.debug(remove_terminal_sequences(msg))


class _ByteBars:
    """One tqdm bar per file being downloaded, fed by yt-dlp's progress hook."""

    def __init__(self) -> None:
        self.bars: dict[str, tqdm] = {}

    def __call__(self, d: dict) -> None:
        name = d.get("filename") or d.get("tmpfilename") or "?"
        if d["status"] == "downloading":
            bar = self.bars.get(name)
            total = d.get("total_bytes") or d.get("total_bytes_estimate")
            if bar is None:
                bar = self.bars[name] = tqdm(
                    total=total, desc=Path(name).name, unit="B", unit_scale=True, unit_divisor=1024, leave=False
                )
            if total and bar.total != total:
                bar.total = total
            bar.update(max(0, (d.get("downloaded_bytes") or 0) - bar.n))
        else:  # finished or error
            bar = self.bars.pop(name, None)
            if bar is not None:
                bar.close()

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()
        self.bars.clear()


def _videos(ydl: YoutubeDL, info: dict | None, depth: int = 0) -> Iterator[dict]:
    """The video entries of an extraction result, depth-first through playlists, lazily."""
    if info is None:
        return
    kind = info.get("_type", "video")
    if kind in ("playlist", "multi_video"):
        for entry in info.get("entries") or ():
            if entry is not None:
                yield from _videos(ydl, entry, depth + 1)
    elif kind == "url" and depth < 3 and not _single_video(ydl, info) and not ydl.in_download_archive(info):
        # A link that may be a playlist (a channel's tabs, a redirect): list it too, one request.
        resolved = ydl.extract_info(info["url"], ie_key=info.get("ie_key"), download=False, process=False)
        yield from _videos(ydl, resolved, depth + 1)
    else:
        yield info


def _single_video(ydl: YoutubeDL, entry: dict) -> bool:
    """Whether a flat entry certainly is one video (a channel lists thousands: no request each)."""
    ie_key = entry.get("ie_key")
    return bool(ie_key) and bool(ydl.get_info_extractor(ie_key).is_single_video(entry["url"]))


def fetch(url: str, source: str, p: DownloadParams, out_dir: Path, staging: Path) -> Iterator[VideoEntry]:
    """Download up to p.max_videos videos of one URL source into out_dir, one entry per video;
    SourceBlockedError on a bot check or HTTP 429."""
    out_dir, staging = Path(out_dir), Path(staging)
    staging.mkdir(parents=True, exist_ok=True)
    (staging / ".gitignore").write_text("*\n")  # resumable .part files, never committed
    archive = out_dir / ARCHIVE_NAME if p.archive else None
    published: dict[str, tuple[Path, VideoInfo]] = {}  # yt-dlp's file path -> where it landed, probe

    def publish(filepath: str) -> None:
        # Post hook: runs once the file is complete and post-processed, before the archive entry.
        src = Path(filepath)
        try:
            if src.suffix != ".mp4":
                raise ValueError(f"{src.name}: expected an mp4 after remuxing, got {src.suffix}")
            info = probe_video(src)  # an error page saved as .mp4 fails here, is not archived, never lands
        except (ValueError, ProbeError):
            src.unlink(missing_ok=True)
            raise
        dest = out_dir / f"{safe_id(src.stem)}.mp4"
        os.replace(src, dest)
        published[filepath] = dest, info

    bars = _ByteBars()
    opts = ytdlp_options(p, staging, archive, file_urls=url.startswith("file://"))
    opts["progress_hooks"] = [bars]
    try:
        with YoutubeDL(opts) as ydl:
            ydl.add_post_hook(publish)
            try:
                listing = _videos(ydl, ydl.extract_info(url, download=False, process=False))
                items = list(itertools.islice(listing, p.max_videos))
            except DownloadError as exc:
                yield _failed(url_id(url), source, url, exc)
                return
            for item in tqdm(items, desc=f"videos of {_short(source)}", unit="video", leave=False):
                yield _fetch_one(ydl, item, source, url, published)
    finally:
        bars.close()


def _fetch_one(ydl: YoutubeDL, item: dict, source: str, url: str, published: dict[str, tuple[Path, VideoInfo]]) -> VideoEntry:
    item_url = item.get("webpage_url") or item.get("url") or url
    if file_id := media_file_id(item):
        item = {**item, "id": file_id}  # before the archive check: the archive records this id
    vid = safe_id(item["id"]) if item.get("id") else url_id(item_url)
    if ydl.in_download_archive(item):
        return _skipped(vid, source, item_url, item.get("title"), "already in the download archive")
    try:
        info = ydl.process_ie_result(item, download=True)
    except DownloadError as exc:
        return _failed(vid, source, item_url, exc)
    if info is None:  # skipped by yt-dlp itself (match filter, or archived under another id)
        return _skipped(vid, source, item_url, item.get("title"),
                        "skipped by yt-dlp (live stream or already in the download archive)")
    filepath = info.get("filepath") or (info.get("requested_downloads") or [{}])[-1].get("filepath")
    if filepath not in published:
        return _skipped(vid, source, item_url, info.get("title"),
                        "yt-dlp downloaded nothing (the file already existed in staging?)")
    dest, probed = published[filepath]
    return entry_for_file(dest, id=dest.stem, source=source, title=info.get("title"),
                          url=info.get("webpage_url") or item_url, probed=probed)  # fmt: skip


def _skipped(vid: str, source: str, url: str, title: str | None, why: str) -> VideoEntry:
    return VideoEntry(id=vid, source=source, status="skipped", url=url, title=title, error=why)


def _failed(vid: str, source: str, url: str, exc: BaseException) -> VideoEntry:
    message = clean_error(exc)
    if is_blocked(message):
        raise SourceBlockedError(
            f"{source}: the site is refusing us ({message}). Stopped instead of retrying harder. "
            "Wait (often an hour), set download.sleep_interval (5-30 s) and download.cookies_file "
            "(a Netscape cookies.txt exported from a logged-in browser), then rerun: the download "
            "archive skips what is already there."
        )
    return VideoEntry(id=vid, source=source, status="failed", url=url, error=message)


def _short(source: str, n: int = 40) -> str:
    return source if len(source) <= n else source[: n - 1] + "…"

