"""Parsing `download.sources` entries."""

from __future__ import annotations

import pytest

from pipeline.data.sources import parse_source


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
    with pytest.raises(ValueError, match=f"download.sources: '{spec}'"):
        parse_source(spec)
