"""yt-dlp sources against a loopback HTTP server serving real mp4 files (no internet)."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import pytest
from yt_dlp import YoutubeDL

from pipeline.config import DownloadParams
from pipeline.data.sources import DownloadFailed, SourceBlockedError, download
from pipeline.data.sources.ytdlp import (
    format_selector,
    is_blocked,
    media_file_id,
    url_id,
    ytdlp_options,
)


def manifest(raw: Path) -> dict[str, dict]:
    return {v["id"]: v for v in json.loads((raw / "manifest.json").read_text())["videos"]}


def file_id(server, path: str) -> str:
    """The id a served media file gets (direct link or <video> tag): named by its location."""
    return url_id(server.url(path))


def video_files(raw: Path) -> list[str]:
    return sorted(p.name for p in raw.iterdir() if p.name not in ("manifest.json", "archive.txt"))


def test_http_download_lands_as_id_mp4_with_manifest_sha256_of_the_served_bytes(server, clips, params, tmp_path):
    server.routes["/videos/a.mp4"] = ("file", clips["a"])
    raw = tmp_path / "raw"
    download(params([server.url("/videos/a.mp4")]), seed=0, out_dir=raw)

    vid = file_id(server, "/videos/a.mp4")
    assert vid.startswith("a-") and (raw / f"{vid}.mp4").read_bytes() == clips["a"]
    entry = manifest(raw)[vid]
    assert entry["status"] == "ok" and entry["error"] is None
    assert entry["sha256"] == hashlib.sha256(clips["a"]).hexdigest()
    assert entry["bytes"] == len(clips["a"])
    assert (entry["width"], entry["height"], entry["fps"]) == (64, 48, 10.0)
    assert entry["duration"] == pytest.approx(1.0, abs=0.05)
    assert entry["source"] == server.url("/videos/a.mp4")


def test_file_url_source_is_downloaded(clips, params, tmp_path):
    src = tmp_path / "local clip.mp4"  # a space: the id, not the name, becomes the path
    src.write_bytes(clips["b"])
    raw = tmp_path / "raw"
    download(params([src.as_uri()]), seed=0, out_dir=raw)

    (entry,) = manifest(raw).values()
    assert entry["status"] == "ok"
    assert all(c.isalnum() or c in "_-" for c in entry["id"])
    assert (raw / f"{entry['id']}.mp4").read_bytes() == clips["b"]
    assert (entry["width"], entry["height"]) == (80, 60)


def test_rerun_downloads_nothing_and_keeps_the_entries(server, clips, params, tmp_path):
    server.routes["/page.html"] = ("html", '<video src="/v/a.mp4"></video><video src="/v/b.mp4"></video>')
    server.routes["/v/a.mp4"] = ("file", clips["a"])
    server.routes["/v/b.mp4"] = ("file", clips["b"])
    raw = tmp_path / "raw"
    p = params([server.url("/page.html")])
    download(p, seed=0, out_dir=raw)
    first = manifest(raw)
    stamps = {n: (raw / n).stat().st_mtime_ns for n in video_files(raw)}
    assert len(first) == 2 and server.gets("/v/a.mp4") == 1 and server.gets("/v/b.mp4") == 1

    download(p, seed=0, out_dir=raw)

    assert server.gets("/v/a.mp4") == 1 and server.gets("/v/b.mp4") == 1  # only the page was listed again
    assert {n: (raw / n).stat().st_mtime_ns for n in video_files(raw)} == stamps
    assert manifest(raw) == first  # archive-skipped videos keep their entries
    assert len((raw / "archive.txt").read_text().split("\n")) - 1 == 2


def test_failures_are_recorded_leave_no_partial_file_and_the_others_go_on(server, clips, params, tmp_path):
    server.routes["/v/a.mp4"] = ("file", clips["a"])
    server.routes["/v/cut.mp4"] = ("cut", clips["b"])
    server.routes["/v/c.mp4"] = ("file", clips["c"])
    raw = tmp_path / "raw"
    urls = [server.url(p) for p in ("/v/a.mp4", "/v/missing.mp4", "/v/cut.mp4", "/v/c.mp4")]
    download(params(urls, retries=1), seed=0, out_dir=raw)

    m = manifest(raw)
    a, cut, c = (file_id(server, p) for p in ("/v/a.mp4", "/v/cut.mp4", "/v/c.mp4"))
    assert video_files(raw) == sorted([f"{a}.mp4", f"{c}.mp4"])  # no .part, no half of cut.mp4
    assert m[a]["status"] == m[c]["status"] == "ok"
    missing = next(v for v in m.values() if v["source"] == urls[1])
    assert missing["status"] == "failed" and "404" in missing["error"]
    assert m[cut]["status"] == "failed" and "bytes read" in m[cut]["error"]
    assert m[cut]["sha256"] is None and not (raw / f"{cut}.mp4").exists()
    assert cut not in (raw / "archive.txt").read_text()  # a rerun tries it again
    assert server.gets("/v/cut.mp4") >= 2  # the retry happened


def test_http_429_stops_the_stage_before_the_next_source(server, clips, params, tmp_path):
    server.routes["/v/a.mp4"] = ("file", clips["a"])
    server.routes["/v/busy.mp4"] = ("status", 429)
    server.routes["/v/c.mp4"] = ("file", clips["c"])
    raw = tmp_path / "raw"
    urls = [server.url(p) for p in ("/v/a.mp4", "/v/busy.mp4", "/v/c.mp4")]
    with pytest.raises(SourceBlockedError, match=r"429.*download\.cookies_file"):
        download(params(urls), seed=0, out_dir=raw)

    assert server.gets("/v/c.mp4") == 0  # no hammering after the refusal
    assert manifest(raw)[file_id(server, "/v/a.mp4")]["status"] == "ok"  # what was obtained is on record


def test_max_videos_caps_a_playlist(server, clips, params, tmp_path):
    server.routes["/page.html"] = ("html", "".join(f'<video src="/v/{k}.mp4"></video>' for k in "abc"))
    for k in "abc":
        server.routes[f"/v/{k}.mp4"] = ("file", clips[k])
    raw = tmp_path / "raw"
    download(params([server.url("/page.html")], max_videos=2), seed=0, out_dir=raw)

    assert sorted(manifest(raw)) == sorted(file_id(server, f"/v/{k}.mp4") for k in "ab")
    assert server.gets("/v/c.mp4") == 0


def test_fail_fast_stops_at_the_first_failure(server, clips, params, tmp_path):
    server.routes["/v/a.mp4"] = ("file", clips["a"])
    urls = [server.url("/v/missing.mp4"), server.url("/v/a.mp4")]
    with pytest.raises(DownloadFailed, match="fail_fast"):
        download(params(urls, fail_fast=True), seed=0, out_dir=tmp_path / "raw")
    assert server.gets("/v/a.mp4") == 0


def test_nothing_usable_fails_with_a_summary_naming_each_source(server, params, tmp_path):
    url = server.url("/v/missing.mp4")
    with pytest.raises(DownloadFailed, match=r"no usable video(.|\n)*missing\.mp4: .*404"):
        download(params([url]), seed=0, out_dir=tmp_path / "raw")


def test_a_file_that_is_not_a_video_is_a_failure_and_never_lands(server, params, tmp_path):
    server.routes["/v/fake.mp4"] = ("file", b"<html>sorry, not a video</html>" * 20)
    server.routes["/v/a.mp4"] = ("status", 404)
    raw = tmp_path / "raw"
    with pytest.raises(DownloadFailed):
        download(params([server.url("/v/fake.mp4")]), seed=0, out_dir=raw)
    fake = file_id(server, "/v/fake.mp4")
    assert manifest(raw)[fake]["status"] == "failed"
    assert video_files(raw) == []
    assert not (raw / "archive.txt").exists() or fake not in (raw / "archive.txt").read_text()


def test_cookies_file_that_does_not_exist_is_named(params, tmp_path):
    with pytest.raises(FileNotFoundError, match="download.cookies_file"):
        download(params(["atari:Boxing"], cookies_file=str(tmp_path / "nope.txt")), seed=0, out_dir=tmp_path / "raw")


def _select(max_height: int, formats: list[dict]) -> str:
    """The format id yt-dlp picks among `formats` with our selector (no network: info given)."""
    opts = ytdlp_options(DownloadParams(sources=["atari:X"], max_height=max_height), Path("."), None, file_urls=False)
    info = {"id": "x", "title": "x", "extractor": "test", "extractor_key": "Test", "webpage_url": "http://x/",
            "formats": [{"url": f"http://x/{f['format_id']}", "ext": "mp4", **f} for f in formats]}  # fmt: skip
    with YoutubeDL({"format": opts["format"], "format_sort": opts["format_sort"], "quiet": True}) as ydl:
        return ydl.process_ie_result(info, download=False)["format_id"]


def test_format_selector_respects_the_height_cap_and_passes_unknown_heights():
    heights = [{"format_id": f"{h}p", "height": h, "width": h * 16 // 9, "vcodec": "avc1", "acodec": "none"}
               for h in (240, 360, 720, 1080)]  # fmt: skip
    assert _select(360, heights) == "360p"
    assert _select(480, heights) == "360p"
    assert _select(64, heights) == "240p"  # nothing fits: the smallest, not a failure
    assert _select(360, [{"format_id": "direct", "vcodec": None}]) == "direct"  # a direct link has no height
    assert "height<=?360" in format_selector(360)


def test_options_carry_the_careful_crawler_settings(tmp_path):
    cookies = tmp_path / "cookies.txt"
    p = DownloadParams(sources=["@x"], sleep_interval=5, max_sleep_interval=30, retries=7, rate_limit="2M",
                       cookies_file=str(cookies))  # fmt: skip
    o = ytdlp_options(p, tmp_path / "staging", tmp_path / "archive.txt", file_urls=False)
    assert (o["sleep_interval"], o["max_sleep_interval"]) == (5, 30)
    assert o["retries"] == o["fragment_retries"] == o["extractor_retries"] == 7
    assert o["ratelimit"] == 2 * 1024**2
    assert o["cookiefile"] == str(cookies)
    assert o["download_archive"] == str(tmp_path / "archive.txt")
    assert o["outtmpl"]["default"] == "%(id)s.%(ext)s"
    assert o["enable_file_urls"] is False


@pytest.mark.parametrize(
    "message",
    ["ERROR: [youtube] abc: Sign in to confirm you\u2019re not a bot. Use --cookies", "HTTP Error 429: Too Many Requests",
     "The current session has been rate-limited by YouTube for up to an hour"],  # fmt: skip
)
def test_throttling_messages_trip_the_circuit_breaker(message):
    assert is_blocked(message)


def test_ordinary_errors_do_not_trip_the_circuit_breaker():
    assert not is_blocked("HTTP Error 404: Not Found")
    assert not is_blocked("Video unavailable. This video is private")


def test_url_ids_are_safe_and_distinct():
    a, b = url_id("http://h/x/clip.mp4"), url_id("http://other/clip.mp4")
    assert a != b and a.startswith("clip-") and all(c.isalnum() or c in "_-" for c in a + b)


def test_manifest_follows_max_videos_and_rebuilds_entries_of_archived_files(server, clips, params, tmp_path):
    server.routes["/page.html"] = ("html", '<video src="/v/a.mp4"></video><video src="/v/b.mp4"></video>')
    server.routes["/v/a.mp4"] = ("file", clips["a"])
    server.routes["/v/b.mp4"] = ("file", clips["b"])
    raw, url = tmp_path / "raw", server.url("/page.html")
    download(params([url], max_videos=2), seed=0, out_dir=raw)
    full = manifest(raw)
    a, b = file_id(server, "/v/a.mp4"), file_id(server, "/v/b.mp4")

    download(params([url], max_videos=1), seed=0, out_dir=raw)
    assert sorted(manifest(raw)) == [a]
    assert (raw / f"{b}.mp4").exists()  # downloads are kept on disk, only the manifest narrows

    download(params([url], max_videos=2), seed=0, out_dir=raw)
    assert server.gets("/v/a.mp4") == server.gets("/v/b.mp4") == 1  # never fetched twice
    rebuilt = manifest(raw)[b]
    assert rebuilt["status"] == "ok" and rebuilt["sha256"] == full[b]["sha256"] == hashlib.sha256(clips["b"]).hexdigest()


def test_a_video_reached_through_two_sources_is_fetched_and_listed_once(server, clips, params, tmp_path):
    server.routes["/v/a.mp4"] = ("file", clips["a"])
    url = server.url("/v/a.mp4")
    raw = tmp_path / "raw"
    download(params([url, url + "?via=playlist"]), seed=0, out_dir=raw)

    a = file_id(server, "/v/a.mp4")  # the query is not part of a media file's id
    assert list(manifest(raw)) == [a] and manifest(raw)[a]["source"] == url
    assert video_files(raw) == [f"{a}.mp4"]


def test_two_files_with_one_name_at_different_paths_are_two_videos(server, clips, params, tmp_path):
    server.routes["/x/clip.mp4"] = ("file", clips["a"])
    server.routes["/y/clip.mp4"] = ("file", clips["b"])
    urls = [server.url("/x/clip.mp4"), server.url("/y/clip.mp4")]
    raw = tmp_path / "raw"
    download(params(urls), seed=0, out_dir=raw)

    m = manifest(raw)
    x, y = file_id(server, "/x/clip.mp4"), file_id(server, "/y/clip.mp4")
    assert x != y and x.startswith("clip-") and y.startswith("clip-")
    assert (raw / f"{x}.mp4").read_bytes() == clips["a"] and (raw / f"{y}.mp4").read_bytes() == clips["b"]
    assert m[x]["status"] == m[y]["status"] == "ok"

    gets = [server.gets("/x/clip.mp4"), server.gets("/y/clip.mp4")]
    download(params(urls), seed=0, out_dir=raw)  # the archive tells them apart too
    # Listing a direct link reads its headers (one GET); a second download would be another.
    assert [server.gets("/x/clip.mp4"), server.gets("/y/clip.mp4")] == [gets[0] + 1, gets[1] + 1]
    assert manifest(raw) == m


def test_only_videos_named_after_their_file_get_a_location_id():
    site = {"id": "dQw4w9WgXcQ", "extractor_key": "Youtube", "webpage_url": "https://www.youtube.com/watch?v=dQw4w9WgXcQ"}
    assert media_file_id(site) is None  # a site's own ids are stable and readable
    direct = {"id": "clip", "extractor_key": "Generic", "formats": [{"url": "https://h/a/clip.mp4?sig=1"}]}
    assert media_file_id(direct) == media_file_id({**direct, "formats": [{"url": "https://h/a/clip.mp4?sig=2"}]})
    assert media_file_id(direct) != media_file_id({**direct, "formats": [{"url": "https://h/b/clip.mp4"}]})


def test_a_ucf101_style_xvid_avi_file_url_lands_as_a_remuxed_mp4(params, tmp_path):
    from pipeline.data.video.ffmpeg import ffmpeg_exe
    from pipeline.data.video.probe import probe_video

    src = tmp_path / "v_Basketball_g01_c01.avi"  # UCF-101's container, codec and size
    subprocess.run([ffmpeg_exe(), "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25",
                    "-frames:v", "25", "-c:v", "mpeg4", "-vtag", "xvid", str(src)], check=True)  # fmt: skip
    raw = tmp_path / "raw"
    download(params([src.as_uri()]), seed=0, out_dir=raw)

    (entry,) = manifest(raw).values()
    assert entry["status"] == "ok" and entry["id"].startswith("v_Basketball_g01_c01-")
    assert (entry["width"], entry["height"], entry["fps"]) == (320, 240, 25.0)
    assert video_files(raw) == [f"{entry['id']}.mp4"]
    landed = probe_video(raw / f"{entry['id']}.mp4")
    assert landed.codec == "mpeg4" and landed.duration == pytest.approx(1.0, abs=0.05)  # remuxed, not re-encoded
