"""The `vizdoom:` recorder: the real engine (ViZDoom my_way_home), tiny episodes."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio as psnr

from pipeline.config import RecorderParams, VizdoomRecorderParams
from pipeline.data.sources import recording, vizdoom
from pipeline.data.sources.vizdoom_agents import (
    ACTION_MEANINGS,
    BRAKE,
    FORWARD,
    NOOP,
    STOP,
    TURN_LEFT,
    TURN_RIGHT,
    Explorer,
    ExplorerConfig,
    return_plan,
)
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


@pytest.fixture(scope="module")
def revisiting():
    """A 200-frame episode of an explorer that only revisits, leaving with exploration walks: the agent
    (its completed returns) and the steps."""
    agents = []

    def explorer(rng, config):
        agents.append(Explorer(rng, ExplorerConfig(weights={"explore": 1.0, "revisit": 1.0})))
        return agents[-1]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(vizdoom, "Explorer", explorer)
        steps = list(vizdoom.play_episode("my_way_home", 0, 3, RecorderParams(max_frames=200)))
    return agents[0], steps


def test_the_revisit_motif_leaves_and_comes_back_to_its_anchor_facing_the_same_way(revisiting):
    agent, steps = revisiting
    poses = np.array([s.pose for s in steps])
    assert agent.returns and agent.abandoned == 0
    for anchor_frame, anchor, end_frame, end in agent.returns:
        assert tuple(poses[anchor_frame]) == anchor and tuple(poses[end_frame]) == end
        assert 100 <= end_frame - anchor_frame <= 300
        away = np.hypot(*(poses[anchor_frame:end_frame, :2] - anchor[:2]).T)
        assert away.max() > 200  # it really left (map units)
        assert away[-1] > 0 and np.hypot(end[0] - anchor[0], end[1] - anchor[1]) <= 1.0  # measured: <= 0.04
        assert end[2] == anchor[2]  # turns are exact: the same heading, bit for bit
        # The same view again (a few hundredths of a map unit off), unlike the views in between.
        with np.errstate(divide="ignore"):  # an identical frame: infinite PSNR
            again = psnr(steps[anchor_frame].frame, steps[end_frame].frame)
            between = [psnr(steps[anchor_frame].frame, s.frame) for s in steps[anchor_frame + 1 : end_frame]]
        assert again > 40 and again > np.median(between) + 20, (again, np.median(between))


def _walk(actions: list[int], heading: int = 0) -> tuple[float, float, int]:
    """Where exact turns (16 a circle) and unit steps lead from (0, 0) facing `heading`; STOP and BRAKE
    stand still. The reversal's arithmetic, without Doom's momentum."""
    x = y = 0.0
    for a in actions:
        heading += {TURN_LEFT: 1, TURN_RIGHT: -1}.get(a, 0)
        if a == FORWARD:
            x, y = x + np.cos(heading * np.pi / 8), y + np.sin(heading * np.pi / 8)
    return x, y, heading % 16


def test_return_plan_turns_round_walks_the_log_backwards_and_turns_round_again():
    L, R, F = TURN_LEFT, TURN_RIGHT, FORWARD
    log = [L] * 2 + [F] * 3 + [BRAKE] * 2 + [R] * 3 + [NOOP] + [F] * 2 + [BRAKE]
    assert return_plan(log) == [L] * 8 + [F] * 2 + [STOP] + [L] * 3 + [F] * 3 + [STOP] + [L] * 6
    assert return_plan([F, BRAKE, F, F, NOOP, F]) == [L] * 8 + [F, STOP, F, F, STOP, F, STOP] + [L] * 8  # a stop ends a walk
    assert return_plan([]) == [] and return_plan([L] * 16 + [NOOP]) == []  # full circles cut
    assert return_plan([L] * 3 + [R] * 8) == [L] * 5  # turns merged, the short way round
    rng = np.random.default_rng(0)
    for _ in range(200):
        log = list(rng.choice([NOOP, FORWARD, TURN_LEFT, TURN_RIGHT, BRAKE], size=int(rng.integers(0, 60))))
        x, y, heading = _walk(log)
        x2, y2, heading2 = _walk(return_plan(log), heading)
        assert heading2 == 0 and abs(x + x2) < 1e-9 and abs(y + y2) < 1e-9


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
