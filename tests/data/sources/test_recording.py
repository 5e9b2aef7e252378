"""The one recording mechanism of the embedded recorders: synthetic episodes (no engine) for its
contract, and the real engines for bit-exactness in a fresh process."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from pipeline.config import RecorderParams
from pipeline.data.sources import crafter, recording, vizdoom
from pipeline.data.sources.recording import EpisodeInfo, Step, rate_arg, record_episode
from pipeline.data.video.probe import probe_video
from tests.data.video.synth import decode_native

REPO = Path(__file__).resolve().parents[3]


def synthetic(n: int = 12, pose: bool = True):
    """Frames whose grey level encodes the frame index, action t = t % 3, pose t = (t, -t, 22.5 t)."""
    for t in range(n):
        yield Step(np.full((24, 32, 3), 16 * t, np.uint8), t % 3, (t, -t, 22.5 * t) if pose else None)


def info(fps=Fraction(35, 2), has_pose=True) -> EpisodeInfo:
    return EpisodeInfo(id="synth-s0-e000", source="synth", title="synthetic", fps=fps,
                       action_meanings=("a", "b", "c"), has_pose=has_pose, extra={"agent": "test"})  # fmt: skip


def test_an_episode_becomes_a_video_with_actions_and_poses_and_its_entry(tmp_path):
    entry = record_episode(synthetic(), info(), tmp_path, crf=0, max_frames=12)

    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "synth-s0-e000.actions.npy", "synth-s0-e000.mp4", "synth-s0-e000.pose.npy"]  # fmt: skip
    actions = np.load(tmp_path / entry.extra["actions_file"], allow_pickle=False)
    poses = np.load(tmp_path / entry.extra["pose_file"], allow_pickle=False)
    frames = decode_native(tmp_path / entry.file_name)
    assert actions.dtype == np.int64 and list(actions) == [t % 3 for t in range(12)]
    assert poses.dtype == np.float32 and poses.shape == (12, 3)
    np.testing.assert_array_equal(poses[:, 2], 22.5 * np.arange(12))
    assert len(frames) == 12 and np.abs(frames.mean(axis=(1, 2, 3)) - 16 * np.arange(12)).max() < 2
    # The exact recorder rate, declared in the mp4 and in the entry.
    assert entry.fps == 17.5 == probe_video(tmp_path / entry.file_name).fps
    assert entry.duration == pytest.approx(12 / 17.5, abs=0.01)
    assert entry.extra == {
        "actions_file": "synth-s0-e000.actions.npy", "pose_file": "synth-s0-e000.pose.npy",
        "pose_fields": ["x", "y", "heading_deg"], "n_frames": 12, "n_actions": 3,
        "action_meanings": ["a", "b", "c"], "agent": "test",
    }  # fmt: skip
    assert json.loads(json.dumps(entry.to_json()))["pose_file"] == "synth-s0-e000.pose.npy"


def test_a_game_without_pose_writes_no_pose_file(tmp_path):
    entry = record_episode(synthetic(pose=False), info(fps=Fraction(20), has_pose=False), tmp_path, crf=18, max_frames=12)
    assert "pose_file" not in entry.extra and entry.fps == 20.0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["synth-s0-e000.actions.npy", "synth-s0-e000.mp4"]


@pytest.mark.parametrize("steps, match", [
    (lambda: synthetic(pose=False), "frame 0 lacks a pose"),
    (lambda: (s if t < 5 else 1 / 0 for t, s in enumerate(synthetic())), "division by zero"),
    (lambda: iter(()), "ended before its first frame"),
])  # fmt: skip
def test_a_failed_episode_leaves_no_file_at_all(tmp_path, steps, match):
    with pytest.raises((ValueError, RuntimeError, ZeroDivisionError), match=match):
        record_episode(steps(), info(), tmp_path, crf=18, max_frames=12)
    assert list(tmp_path.iterdir()) == []  # neither the files nor their temporaries


def test_exact_rates_are_spelt_as_ffmpeg_fractions():
    assert [rate_arg(Fraction(20)), rate_arg(Fraction(35, 2)), rate_arg(Fraction(35, 4))] == ["20", "35/2", "35/4"]


ENGINES = {"vizdoom": (vizdoom, "my_way_home", 3), "crafter": (crafter, "", 2)}  # module, target, episodes
RECORD_ALL = """
import sys
from pathlib import Path
from pipeline.config import RecorderParams
from pipeline.data.sources import crafter, recording, vizdoom
for name, module, target, episodes in [("vizdoom", vizdoom, "my_way_home", 3), ("crafter", crafter, "", 2)]:
    out = Path(sys.argv[1]) / name
    out.mkdir()
    list(recording.record(module, target, name, 0, RecorderParams(episodes=episodes, max_frames=32), episodes, out))
"""


def digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_vizdoom_and_crafter_record_the_same_bytes_in_a_fresh_process_and_nothing_in_cwd(tmp_path, monkeypatch):
    here, there, cwd = tmp_path / "here", tmp_path / "there", tmp_path / "cwd"
    for d in (here, there, cwd):
        d.mkdir()
    monkeypatch.chdir(cwd)
    for name, (module, target, episodes) in ENGINES.items():
        (here / name).mkdir()
        list(recording.record(module, target, name, 0, RecorderParams(episodes=episodes, max_frames=32), episodes, here / name))
    subprocess.run([sys.executable, "-c", RECORD_ALL, str(there)], cwd=cwd, check=True, capture_output=True, timeout=300,
                   env={"PYTHONPATH": str(REPO), "PYTHONHASHSEED": "123", "PATH": ""})  # fmt: skip

    assert list(cwd.iterdir()) == []  # ViZDoom's _vizdoom.ini and _vizdoom/ went to a temporary directory
    for name, (_, _, episodes) in ENGINES.items():
        ours, theirs = digests(here / name), digests(there / name)
        assert ours == theirs, name  # mp4, actions and poses, byte for byte
        assert len(ours) == 3 * episodes  # <id>.mp4, <id>.actions.npy, <id>.pose.npy per episode
        videos = [v for k, v in ours.items() if k.endswith(".mp4")]
        assert len(set(videos)) == episodes  # episodes differ
