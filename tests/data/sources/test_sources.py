"""Parsing `download.sources` entries."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pipeline.data.sources import DownloadFailed, SourceError, check_sources, download, parse_source
from pipeline.data.sources.manifest import entry_for_file, write_manifest
from tests.data.sources.conftest import make_mp4

REPO = Path(__file__).resolve().parents[3]


def test_channel_handle_means_the_channels_videos_tab():
    s = parse_source("@domisumReplay-Garen")
    assert (s.kind, s.target) == ("url", "https://www.youtube.com/@domisumReplay-Garen/videos")
    assert s.spec == "@domisumReplay-Garen"


@pytest.mark.parametrize(
    "spec", ["https://www.youtube.com/watch?v=dQw4w9WgXcQ", "http://127.0.0.1:8000/a.mp4", "file:///data/a.mp4"]
)
def test_urls_go_to_ytdlp_unchanged(spec):
    assert (parse_source(spec).kind, parse_source(spec).target) == ("url", spec)


def test_atari_spec_names_the_game():
    assert (parse_source("atari:Boxing").kind, parse_source("atari:Boxing").target) == ("atari", "Boxing")


@pytest.mark.parametrize("spec", ["ftp://x/y.mp4", "atari:", "@a/b", "Boxing"])
def test_bad_sources_are_rejected_naming_the_key(spec):
    with pytest.raises(ValueError, match="download.sources"):
        parse_source(spec)


@pytest.mark.parametrize("spec, kind, target", [
    ("vizdoom:my_way_home", "vizdoom", "my_way_home"), ("crafter", "crafter", ""), ("atari:Pong", "atari", "Pong"),
])  # fmt: skip
def test_recorder_specs_name_their_recorder_and_target(spec, kind, target):
    assert (parse_source(spec).kind, parse_source(spec).target) == (kind, target)


@pytest.mark.parametrize("spec", ["vizdoom:", "crafter:", "crafters", "doom:my_way_home"])
def test_malformed_recorder_specs_are_rejected_naming_the_key(spec):
    with pytest.raises(SourceError, match=f"download.sources: '{spec}'"):
        parse_source(spec)


@pytest.mark.parametrize("spec, match", [
    ("atari:NoSuchGame", r"atari:NoSuchGame: ale-py ships no such ROM"),
    ("vizdoom:my_way_hom", r"vizdoom:my_way_hom: no such scenario.*did you mean my_way_home"),
    ("crafter:big", r"crafter:big: the crafter source takes no argument"),
])  # fmt: skip
def test_every_source_is_checked_up_front_with_a_one_line_error_naming_it(spec, match):
    with pytest.raises(SourceError, match=match) as exc:
        check_sources(["atari:Boxing", spec, "https://example.com/a.mp4"])
    assert "\n" not in str(exc.value)


def fake_recordings(raw: Path) -> dict[str, bytes]:
    """A data/raw of an earlier run: one recorded video, its actions, and a manifest listing it."""
    raw.mkdir(parents=True)
    make_mp4(raw / "atari-boxing-s0-e000.mp4")
    np.save(raw / "atari-boxing-s0-e000.actions.npy", np.zeros(10, dtype=np.int64))
    entry = entry_for_file(raw / "atari-boxing-s0-e000.mp4", id="atari-boxing-s0-e000", source="atari:Boxing",
                           title="Boxing", extra={"actions_file": "atari-boxing-s0-e000.actions.npy"})  # fmt: skip
    write_manifest(raw, {entry.id: entry}, ["atari:Boxing"])
    return {p.name: p.read_bytes() for p in raw.iterdir()}


def test_an_unknown_source_fails_before_any_work_and_leaves_the_manifest_alone(params, tmp_path):
    raw = tmp_path / "raw"
    before = fake_recordings(raw)
    with pytest.raises(SourceError, match="atari:NoSuchGame"):
        download(params(["atari:NoSuchGame"]), seed=0, out_dir=raw)
    assert {p.name: p.read_bytes() for p in raw.iterdir()} == before


def test_a_run_that_obtains_nothing_keeps_the_manifest_and_the_recordings_it_could_not_replace(params, tmp_path):
    raw = tmp_path / "raw"
    before = fake_recordings(raw)
    with pytest.raises(DownloadFailed, match="no usable video"):
        download(params([(tmp_path / "missing.mp4").as_uri()]), seed=0, out_dir=raw)
    assert {p.name: p.read_bytes() for p in raw.iterdir() if p.name != "archive.txt"} == before


def test_the_stage_names_an_unknown_source_in_one_line_without_a_traceback(tmp_path):
    params = (REPO / "params.yaml").read_text().replace("    - vizdoom:my_way_home", "    - atari:NoSuchGame")
    assert "atari:NoSuchGame" in params
    (tmp_path / "params.yaml").write_text(params)
    (tmp_path / "settings.yaml").write_text((REPO / "settings.yaml").read_text())
    before = fake_recordings(tmp_path / "data" / "raw")
    proc = subprocess.run([sys.executable, "-m", "stages.download"], cwd=tmp_path, capture_output=True, text=True,
                          env={"PYTHONPATH": str(REPO), "PATH": ""}, timeout=120)  # fmt: skip
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]  # one line
    assert proc.stderr.startswith("download: download.sources: atari:NoSuchGame: ale-py ships no such ROM")
    assert {p.name: p.read_bytes() for p in (tmp_path / "data" / "raw").iterdir()} == before
