"""The embedded Atari recorder: real ale-py ROMs and a real ffmpeg encode."""

from __future__ import annotations

import json

import imageio_ffmpeg
import numpy as np
import pytest

from pipeline.config import AtariRecorderParams, DownloadParams, RecorderParams
from pipeline.data.sources import atari, download, recording
from pipeline.data.sources.atari import play_episode, rom_id

TINY = RecorderParams(episodes=2, max_frames=48, crf=18, atari=AtariRecorderParams(fps=20, sticky_prob=0.8))


def record(game, source, seed, rec, max_videos, out_dir):
    return recording.record(atari, game, source, seed, rec, max_videos, out_dir)


def decode(path) -> np.ndarray:
    frames = imageio_ffmpeg.read_frames(str(path))
    w, h = next(frames)["size"]
    return np.stack([np.frombuffer(f, np.uint8).reshape(h, w, 3) for f in frames])


def test_same_seed_gives_the_same_bytes_and_actions(tmp_path):
    one, two, other = (tmp_path / n for n in ("one", "two", "other"))
    for d in (one, two, other):
        d.mkdir()
    a = list(record("Boxing", "atari:Boxing", 3, TINY, 2, one))
    b = list(record("Boxing", "atari:Boxing", 3, TINY, 2, two))
    c = list(record("Boxing", "atari:Boxing", 4, TINY, 2, other))

    assert [e.sha256 for e in a] == [e.sha256 for e in b]
    for e in a:
        assert (one / e.file_name).read_bytes() == (two / e.file_name).read_bytes()
        assert (one / e.extra["actions_file"]).read_bytes() == (two / e.extra["actions_file"]).read_bytes()
    assert a[0].sha256 != a[1].sha256  # episodes differ
    assert not np.array_equal(np.load(one / a[0].extra["actions_file"]), np.load(other / c[0].extra["actions_file"]))


def test_actions_line_up_one_to_one_with_the_video_frames(tmp_path):
    (entry,) = record("Boxing", "atari:Boxing", 0, TINY, 1, tmp_path)
    actions = np.load(tmp_path / entry.extra["actions_file"], allow_pickle=False)
    video = decode(tmp_path / entry.file_name)

    assert actions.dtype == np.int64 and actions.shape == (TINY.max_frames,) == (entry.extra["n_frames"],)
    assert len(video) == len(actions)
    assert 0 <= actions.min() and actions.max() < entry.extra["n_actions"] == 18
    # Replaying the saved actions reproduces frame t at video frame t, not at t +- 1.
    replay = np.stack([step.frame for step in play_episode("Boxing", 0, 0, TINY, actions=actions)])
    video, replay = video.astype(float), replay.astype(float)
    err = np.abs(video - replay).mean(axis=(1, 2, 3))[1:-1]
    late = np.abs(video[1:] - replay[:-1]).mean(axis=(1, 2, 3))[:-1]  # video frame t vs replay t-1
    early = np.abs(video[:-1] - replay[1:]).mean(axis=(1, 2, 3))[1:]  # video frame t vs replay t+1
    assert err.max() < 3.0  # lossy x264 (yuv420p chroma on saturated Atari colours), nothing more
    assert (err < late).mean() > 0.9 and (err < early).mean() > 0.9


def test_action_t_acts_after_frame_t():
    actions = np.array([step.action for step in play_episode("Boxing", 0, 0, TINY)])
    k = 20
    changed = actions.copy()
    changed[k:] = np.where(actions[k:] == 3, 4, 3)  # RIGHT <-> anything else: LEFT / RIGHT from k on
    base = np.stack([step.frame for step in play_episode("Boxing", 0, 0, TINY, actions=actions)])
    alt = np.stack([step.frame for step in play_episode("Boxing", 0, 0, TINY, actions=changed)])
    assert np.array_equal(base[: k + 1], alt[: k + 1])  # frame k was shown before action k
    assert not np.array_equal(base[k + 1 :], alt[k + 1 :])


def test_video_has_the_recorder_rate_and_even_size(tmp_path):
    (entry,) = record("Boxing", "atari:Boxing", 0, TINY, 1, tmp_path)
    assert entry.fps == TINY.atari.fps and entry.duration == pytest.approx(TINY.max_frames / TINY.atari.fps, abs=0.06)
    assert (entry.width, entry.height) == (160, 210)


def test_max_videos_caps_the_episodes(tmp_path):
    assert len(list(record("Boxing", "atari:Boxing", 0, TINY, 1, tmp_path))) == 1


def test_unknown_game_is_named_with_a_suggestion():
    with pytest.raises(ValueError, match=r"atari:Boxin.*boxing"):
        rom_id("Boxin")
    assert rom_id("MontezumaRevenge") == "montezuma_revenge"


def test_rerun_with_fewer_episodes_removes_the_stale_recordings(tmp_path):
    raw = tmp_path / "raw"
    download(DownloadParams(sources=["atari:Boxing"], recorder=TINY), seed=0, out_dir=raw)
    assert len(list(raw.glob("*.mp4"))) == 2
    download(DownloadParams(sources=["atari:Boxing"], recorder=TINY, max_videos=1), seed=0, out_dir=raw)

    videos = json.loads((raw / "manifest.json").read_text())["videos"]
    assert [v["id"] for v in videos] == ["atari-boxing-s0-e000"]
    assert sorted(p.name for p in raw.iterdir()) == [
        "atari-boxing-s0-e000.actions.npy", "atari-boxing-s0-e000.mp4", "manifest.json"
    ]  # fmt: skip
