"""The `atari:<Game>` recorder: ale-py at its native 60 Hz, a seeded sticky random agent whose actions
(indices into the minimal action set) are held for 60/fps emulator frames. No poses."""

from __future__ import annotations

import difflib
import functools
from fractions import Fraction
from typing import Iterable, Iterator

import numpy as np

from pipeline.config import RecorderParams
from pipeline.data.sources.agents import sticky_random_actions
from pipeline.data.sources.recording import EpisodeInfo, Step

ALE_HZ = 60


@functools.cache  # a game name maps to one ROM; listing ale-py's ROMs once is enough
def rom_id(game: str) -> str:
    """ale-py's ROM id for a game name: "Boxing" -> "boxing", "MontezumaRevenge" -> "montezuma_revenge"."""
    from ale_py import roms

    ids = roms.get_all_rom_ids()
    by_key = {i.replace("_", ""): i for i in ids}
    key = game.lower().replace("_", "").replace("-", "")
    if key in by_key:
        return by_key[key]
    close = difflib.get_close_matches(key, list(by_key), n=3)
    hint = f"; did you mean {', '.join(by_key[c] for c in close)}?" if close else ""
    raise ValueError(f"atari:{game}: ale-py ships no such ROM{hint} (see ale_py.roms.get_all_rom_ids())")


def episode_id(game: str, seed: int, episode: int) -> str:
    return f"atari-{rom_id(game).replace('_', '-')}-s{seed}-e{episode:03d}"


def _make_ale(rom: str, ale_seed: int):
    from ale_py import ALEInterface, LoggerMode, roms

    ALEInterface.setLoggerMode(LoggerMode.Error)  # no banner on every episode
    ale = ALEInterface()
    ale.setInt("random_seed", ale_seed)
    ale.setFloat("repeat_action_probability", 0.0)  # our agent is the sticky one
    ale.setInt("frame_skip", 1)  # we hold each action for 60/fps frames ourselves
    ale.loadROM(str(roms.get_rom_path(rom)))
    return ale


class Game:
    """One seeded episode of a ROM, advanced a frame (60/fps emulator frames) per action: what the
    recorder's agent plays, and what a person drives in pipeline.play."""

    def __init__(self, game: str, seed: int, episode: int, fps: int):
        self.rng = np.random.default_rng([seed, episode])  # the ALE seed, then the recorder's agent
        self.ale = _make_ale(rom_id(game), int(self.rng.integers(2**31 - 1)))
        self.action_set = self.ale.getMinimalActionSet()
        self.action_meanings = tuple(a.name for a in self.action_set)
        self.frameskip = ALE_HZ // fps

    @property
    def finished(self) -> bool:
        return self.ale.game_over()

    def observe(self):
        """The current frame (uint8 HxWx3) and its pose (None: Atari games have none)."""
        return self.ale.getScreenRGB(), None

    def act(self, action: int) -> None:
        for _ in range(self.frameskip):
            self.ale.act(self.action_set[action])

    def close(self) -> None:
        pass


def play_episode(
    game: str, seed: int, episode: int, rec: RecorderParams, actions: Iterable[int] | None = None
) -> Iterator[Step]:
    """The steps (frame uint8 HxWx3, action index) of one episode at rec.atari.fps: the seeded agent
    plays, or `actions` are replayed (the same frames again)."""
    env = Game(game, seed, episode, rec.atari.fps)
    policy = iter(actions) if actions is not None else sticky_random_actions(env.rng, len(env.action_set), rec.atari.sticky_prob)
    for _, action in zip(range(rec.max_frames), policy):
        yield Step(env.observe()[0], int(action))
        env.act(action)
        if env.finished:
            return


@functools.cache  # loading a ROM once per game, not once per episode
def _action_names(game: str) -> tuple[str, ...]:
    return tuple(a.name for a in _make_ale(rom_id(game), 0).getMinimalActionSet())


def action_meanings(game: str) -> list[str]:
    return list(_action_names(game))


# -- the Recorder interface (pipeline.data.sources.recording) ------------------------------------
def check(game: str) -> None:
    rom_id(game)


def episode(game: str, source: str, seed: int, episode: int, rec: RecorderParams) -> tuple[EpisodeInfo, Iterator[Step]]:
    info = EpisodeInfo(
        id=episode_id(game, seed, episode),
        source=source,
        title=f"{game} episode {episode} (seed {seed}, sticky random agent)",
        fps=Fraction(rec.atari.fps),
        action_meanings=action_meanings(game),
        has_pose=False,
        extra={"agent": "random", "frameskip": ALE_HZ // rec.atari.fps},
    )
    return info, play_episode(game, seed, episode, rec)
