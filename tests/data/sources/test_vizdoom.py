"""The `vizdoom:` recorder: the real engine (ViZDoom my_way_home), tiny episodes."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.config import RecorderParams, VizdoomRecorderParams
from pipeline.data.sources import recording, vizdoom
from pipeline.data.sources.vizdoom_agents import ACTION_MEANINGS, TURN_LEFT, TURN_RIGHT
from tests.data.sources.recorded import assert_a_revisited_pose_shows_the_same_frame, read_recording

REVISIT = RecorderParams(episodes=1, max_frames=120)


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """One 120-frame explorer episode: its entry, frames (decoded mp4), actions and poses."""
    out = tmp_path_factory.mktemp("vizdoom")
    (entry,) = recording.record(vizdoom, "my_way_home", "vizdoom:my_way_home", 0, REVISIT, 1, out)
    return (entry, *read_recording(out, entry))


def test_actions_and_poses_line_up_one_to_one_with_the_frames_at_17_5_fps(recorded):
    entry, frames, actions, poses = recorded
    assert entry.id == "vizdoom-my-way-home-s0-e000" and entry.source == "vizdoom:my_way_home"
    assert len(frames) == len(actions) == len(poses) == entry.extra["n_frames"] == 120
    assert frames.shape[1:] == (120, 160, 3) and (entry.width, entry.height) == (160, 120)
    assert entry.fps == 17.5 and entry.duration == pytest.approx(120 / 17.5, abs=0.01)
    assert actions.dtype == np.int64 and 0 <= actions.min() and actions.max() < len(ACTION_MEANINGS)
    assert poses.dtype == np.float32 and poses.shape == (120, 3)
    assert entry.extra["action_meanings"] == list(ACTION_MEANINGS) and entry.extra["n_actions"] == 5
    assert (entry.extra["scenario"], entry.extra["agent"], entry.extra["frame_skip"]) == ("my_way_home", "explorer", 2)
    assert entry.extra["pose_fields"] == ["x", "y", "heading_deg"]


def test_a_turn_changes_the_heading_by_exactly_22_5_degrees(recorded):
    _, _, actions, poses = recorded
    turn = (poses[1:, 2].astype(np.float64) - poses[:-1, 2] + 180) % 360 - 180
    left, right = actions[:-1] == TURN_LEFT, actions[:-1] == TURN_RIGHT
    assert left.any() and right.any()
    np.testing.assert_allclose(turn[left], 22.5, atol=1e-3)
    np.testing.assert_allclose(turn[right], -22.5, atol=1e-3)


def test_the_explorer_returns_to_earlier_poses_and_sees_the_same_frame_again(recorded):
    _, frames, _, poses = recorded
    assert_a_revisited_pose_shows_the_same_frame(frames, poses)


def test_the_random_agent_can_be_chosen():
    rec = RecorderParams(max_frames=24, vizdoom=VizdoomRecorderParams(agent="random"))
    info, steps = vizdoom.episode("my_way_home", "vizdoom:my_way_home", 0, 0, rec)
    steps = list(steps)
    assert len(steps) == 24 and info.extra["agent"] == "random"
    assert len({s.action for s in steps}) > 1


def test_an_unknown_scenario_is_named_with_the_closest_ones():
    with pytest.raises(ValueError, match=r"vizdoom:my_way_hom: no such scenario.*did you mean my_way_home"):
        vizdoom.check("my_way_hom")
    with pytest.raises(ValueError, match=r"vizdoom:doom: its cfg needs doom.wad"):
        vizdoom.check("doom")  # shipped cfg, but for the commercial WAD
    with pytest.raises(ValueError, match=r"vizdoom:cig: cannot be recorded: the engine crashes"):
        vizdoom.check("cig")  # shipped, but ViZDoom 1.3.2 does not start it
    vizdoom.check("health_gathering")
