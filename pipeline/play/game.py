"""The real game beside the model: the engine that recorded a test video, put back at a frame of that
video by replaying the recorded actions, then stepped by a person's keys.

A recorder's episode is a pure function of (seed, episode, actions), so replaying the actions up to
a frame puts the engine where the recording was; the pose there is checked against the store's.
"""

from __future__ import annotations

import re

import numpy as np
from PIL import Image

from pipeline.config import Params


class PlayError(RuntimeError):
    """The play session cannot do what was asked; the message names the video, source, key or file."""


# Keys a person presses -> the action meanings they stand for, first match in the game's action set.
KEYS = {
    "ArrowUp": ("forward", "UP"), "w": ("forward", "UP"),
    "ArrowLeft": ("turn_left", "LEFT"), "a": ("turn_left", "LEFT"),
    "ArrowRight": ("turn_right", "RIGHT"), "d": ("turn_right", "RIGHT"),
    "ArrowDown": ("brake", "DOWN"), "s": ("brake", "DOWN"),
    " ": ("FIRE", "noop", "NOOP"), ".": ("noop", "NOOP"),
}
EPISODE = re.compile(r"-s(\d+)-e(\d+)$")  # recorder video ids end in -s<seed>-e<episode>


def key_actions(action_meanings) -> dict[str, int]:
    """Key -> action index for a game's action meanings (keys whose meanings it lacks are left out)."""
    index = {name: i for i, name in enumerate(action_meanings)}
    table = {}
    for key, names in KEYS.items():
        found = next((index[n] for n in names if n in index), None)
        if found is not None:
            table[key] = found
    return table


class PlayedGame:
    """A recorder's engine at a video's frame, stepped one recorded frame per action; frames come back
    cropped and resized as extract stored the video's."""

    def __init__(self, attrs: dict, params: Params):
        self.video_id = attrs.get("source_id", "?")
        source = str(attrs.get("source", ""))
        kind, _, target = source.partition(":")
        match = EPISODE.search(self.video_id)
        if kind not in ("vizdoom", "atari") or match is None:
            what = "a downloaded video" if kind not in ("vizdoom", "atari", "crafter") else f"the {kind} recorder"
            raise PlayError(f"{self.video_id}: comes from {source!r}, {what}: play steps a game engine beside the "
                            f"model, which only the vizdoom:<scenario> and atari:<Game> recorders have")
        seed, episode = int(match.group(1)), int(match.group(2))
        rec = params.download.recorder
        if kind == "vizdoom":
            from pipeline.data.sources.vizdoom import Game

            self.engine = Game(target, seed, episode, int(attrs.get("frame_skip", rec.vizdoom.frame_skip)))
        else:
            from pipeline.data.sources.atari import Game

            self.engine = Game(target, seed, episode, rec.atari.fps)
        self.action_meanings = tuple(attrs.get("action_meanings") or self.engine.action_meanings)
        self.crop_box = tuple(attrs["crop_box"])  # (left, top, right, bottom) in the source frame
        self.size = int(params.extract.size)
        self.frame_index = 0

    def observe(self) -> tuple[np.ndarray, tuple[float, float, float] | None]:
        """The current frame at the store's size (uint8 HxWx3) and its pose (None: the game has none)."""
        screen, pose = self.engine.observe()[:2]
        image = Image.fromarray(screen).crop(self.crop_box).resize((self.size, self.size), Image.Resampling.BOX)
        return np.asarray(image), pose

    def act(self, action: int) -> None:
        if self.engine.finished:
            raise PlayError(f"{self.video_id}: the episode has ended: press reset")
        if not 0 <= action < len(self.action_meanings):
            raise PlayError(f"action {action} is not one of the game's {len(self.action_meanings)} actions")
        self.engine.act(action)
        self.frame_index += 1

    def replay_to(self, frame: int, recorded_actions: np.ndarray, recorded_pose=None) -> None:
        """Replay the video's actions (recorded_actions[t]: taken on frame t) up to `frame`; with
        `recorded_pose`, PlayError unless the game's pose there equals it (float32, as stored)."""
        for t in range(self.frame_index, frame):
            self.act(int(recorded_actions[t]))
        if recorded_pose is not None:
            pose = np.asarray(self.observe()[1], dtype=np.float32)
            if not np.allclose(pose, np.asarray(recorded_pose, dtype=np.float32), atol=1e-3):
                raise PlayError(f"{self.video_id}: replaying its actions does not reproduce its recording (pose at "
                                f"frame {frame}: {pose.tolist()} vs recorded {list(recorded_pose)}); record it again "
                                f"with this version (`dvc repro download`)")

    def close(self) -> None:
        self.engine.close()
