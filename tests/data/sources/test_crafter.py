"""The `crafter` recorder: the real engine, one short episode."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.config import CrafterRecorderParams, RecorderParams
from pipeline.data.sources import crafter, recording
from pipeline.data.sources.crafter_agents import ACTION_MEANINGS, MOVES, NOOP
from tests.data.sources.recorded import assert_a_revisited_pose_shows_the_same_frame, read_recording


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """One 60-frame explorer episode: its entry, frames (decoded mp4), actions and poses."""
    out = tmp_path_factory.mktemp("crafter")
    (entry,) = recording.record(crafter, "", "crafter", 0, RecorderParams(episodes=1, max_frames=60), 1, out)
    return (entry, *read_recording(out, entry))


def test_actions_and_poses_line_up_one_to_one_with_the_frames(recorded):
    entry, frames, actions, poses = recorded
    assert entry.id == "crafter-s0-e000" and entry.source == "crafter"
    assert len(frames) == len(actions) == len(poses) == entry.extra["n_frames"] == 60
    assert frames.shape[1:] == (144, 144, 3) and entry.fps == 20.0  # 9x9 tiles of 16 px, no inventory strip
    assert actions.dtype == np.int64 and 0 <= actions.min() and actions.max() < len(ACTION_MEANINGS)
    assert poses.dtype == np.float32 and poses.shape == (60, 3)
    assert entry.extra["action_meanings"] == list(ACTION_MEANINGS) and entry.extra["agent"] == "explorer"


def test_the_pose_follows_every_move_exactly(recorded):
    """The explorer never bumps into anything: position t+1 = position t + the move of action t,
    and the heading is the facing of the last move (0 right, 90 down, 180 left, 270 up)."""
    _, _, actions, poses = recorded
    heading = {(1, 0): 0.0, (0, 1): 90.0, (-1, 0): 180.0, (0, -1): 270.0}
    for t in range(len(actions) - 1):
        step = MOVES.get(int(actions[t]), (0, 0))
        np.testing.assert_array_equal(poses[t + 1, :2], poses[t, :2] + step)
        if actions[t] != NOOP:
            assert poses[t + 1, 2] == heading[step]
    assert len({tuple(p[:2]) for p in poses}) > 5  # it does walk around


def test_the_explorer_sees_the_same_frame_at_the_same_pose(recorded):
    _, frames, _, poses = recorded
    assert_a_revisited_pose_shows_the_same_frame(frames, poses)  # a static world


def test_the_random_agent_can_be_chosen_and_plays_a_whole_episode():
    rec = RecorderParams(max_frames=30, crafter=CrafterRecorderParams(agent="random"))
    info, steps = crafter.episode("", "crafter", 0, 0, rec)
    assert len(list(steps)) == 30 and info.extra["agent"] == "random"


def test_crafter_takes_no_argument():
    with pytest.raises(ValueError, match=r"crafter:big: the crafter source takes no argument"):
        crafter.check("big")
