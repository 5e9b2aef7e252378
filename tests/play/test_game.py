"""The real game beside the model: put back at a recorded frame by replaying the recording's actions."""

import numpy as np
import pytest

from pipeline.config import load_params
from pipeline.data.sources import atari, vizdoom
from pipeline.play.game import PlayedGame, PlayError, key_actions
from tests.project_clone import PROJECT_ROOT

PARAMS = load_params(PROJECT_ROOT / "params.yaml")
VIZDOOM_ATTRS = {"source": "vizdoom:my_way_home", "source_id": vizdoom.episode_id("my_way_home", 0, 1),
                 "crop_box": [20, 0, 140, 120], "action_meanings": list(vizdoom.ACTION_MEANINGS), "frame_skip": 2}


def recorded(frames: int):
    rec = PARAMS.download.recorder.model_copy(update={"max_frames": frames})
    steps = list(vizdoom.play_episode("my_way_home", 0, 1, rec))
    return np.array([s.action for s in steps]), np.array([s.pose for s in steps], dtype=np.float32)


def test_replaying_the_recorded_actions_puts_the_game_at_the_recorded_pose():
    actions, poses = recorded(80)
    game = PlayedGame(VIZDOOM_ATTRS, PARAMS)
    try:
        game.replay_to(79, actions, poses[79])
        frame, pose = game.observe()
        assert frame.shape == (PARAMS.extract.size, PARAMS.extract.size, 3) and frame.dtype == np.uint8
        assert np.allclose(pose, poses[79], atol=1e-3)
    finally:
        game.close()


def test_a_game_that_does_not_reproduce_the_recording_is_named():
    actions, poses = recorded(40)
    game = PlayedGame(VIZDOOM_ATTRS, PARAMS)
    try:
        with pytest.raises(PlayError, match=r"vizdoom-my-way-home-s0-e001: replaying its actions does not reproduce"):
            game.replay_to(39, np.roll(actions, 7), poses[39])
    finally:
        game.close()


def test_a_downloaded_video_has_no_engine_and_the_message_says_so():
    attrs = {"source": "https://www.youtube.com/@someone/videos", "source_id": "abc123", "crop_box": [0, 0, 640, 360]}
    with pytest.raises(PlayError, match=r"abc123: comes from 'https://www.youtube.com/@someone/videos', a downloaded video"):
        PlayedGame(attrs, PARAMS)


def test_an_atari_game_plays_without_poses_and_its_keys_map_to_its_action_set():
    attrs = {"source": "atari:Boxing", "source_id": atari.episode_id("Boxing", 0, 0), "crop_box": [0, 0, 160, 160],
             "action_meanings": atari.action_meanings("Boxing")}
    game = PlayedGame(attrs, PARAMS)
    try:
        keys = key_actions(game.action_meanings)
        assert {game.action_meanings[keys[k]] for k in ("ArrowUp", "ArrowLeft", " ")} == {"UP", "LEFT", "FIRE"}
        before = game.observe()
        for _ in range(10):
            game.act(keys["ArrowRight"])
        frame, pose = game.observe()
        assert pose is None and before[1] is None
        assert frame.shape == (PARAMS.extract.size, PARAMS.extract.size, 3) and not np.array_equal(frame, before[0])
    finally:
        game.close()


def test_vizdoom_keys_are_the_arrows_and_wasd():
    keys = key_actions(vizdoom.ACTION_MEANINGS)
    meaning = {k: vizdoom.ACTION_MEANINGS[a] for k, a in keys.items()}
    assert meaning["ArrowUp"] == meaning["w"] == "forward" and meaning["a"] == "turn_left" and meaning["s"] == "brake"
