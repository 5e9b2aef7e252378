"""The manifest contract: safe ids, round trip, merge on rerun."""

from __future__ import annotations

import json

import pytest

from pipeline.data.sources.manifest import (
    VideoEntry,
    load_manifest,
    safe_id,
    write_manifest,
)


def test_safe_id_keeps_youtube_ids_and_makes_others_distinct_and_safe():
    assert safe_id("dQw4w9WgXcQ") == "dQw4w9WgXcQ"
    assert safe_id("a_b") == "a_b"
    odd = [safe_id(s) for s in ("a.b", "a b", "../../etc/passwd", "ünï")]
    assert len(set(odd + ["a_b"])) == 5
    assert all(i and all(c.isalnum() and c.isascii() or c in "_-" for c in i) for i in odd)


def test_manifest_round_trips_with_extra_fields_flat(tmp_path):
    e = VideoEntry(id="x", source="atari:Boxing", status="ok", fps=20.0, bytes=3, sha256="ab",
                   extra={"actions_file": "x.actions.npy", "n_actions": 18})  # fmt: skip
    f = VideoEntry(id="y", source="http://h/y.mp4", status="failed", error="HTTP Error 404")
    write_manifest(tmp_path, {"y": f, "x": e}, ["atari:Boxing", "http://h/y.mp4"])

    raw = json.loads((tmp_path / "manifest.json").read_text())
    assert [v["id"] for v in raw["videos"]] == ["x", "y"]  # params order of the sources
    assert raw["videos"][0]["actions_file"] == "x.actions.npy" and "extra" not in raw["videos"][0]
    assert raw["counts"] == {"ok": 1, "failed": 1, "skipped": 0}
    for key in ("id", "source", "title", "duration", "fps", "width", "height", "bytes", "sha256", "status", "error"):
        assert key in raw["videos"][1]
    assert load_manifest(tmp_path) == {"x": e, "y": f}
    assert not list(tmp_path.glob("*.tmp-*"))  # written atomically


def test_a_foreign_manifest_is_refused_naming_the_file(tmp_path):
    (tmp_path / "manifest.json").write_text('{"files": []}')
    with pytest.raises(ValueError, match="manifest.json"):
        load_manifest(tmp_path)
