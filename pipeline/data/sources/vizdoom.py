"""The `vizdoom:<scenario>` recorder: a shipped scenario, headless at 160x120 without HUD, 35/frame_skip
fps, endless episodes, poses (x, y, angle); bit-identical per (seed, episode, params). docs/sources.md."""

from __future__ import annotations

import contextlib
import difflib
import functools
import os
import re
import tempfile
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import numpy as np

from pipeline.config import RecorderParams
from pipeline.data.sources.recording import EpisodeInfo, Step
from pipeline.data.sources.vizdoom_agents import (
    ACTION_MEANINGS,
    BRAKE,
    FORWARD,
    TURN_LEFT,
    TURN_RIGHT,
    Explorer,
    ExplorerConfig,
    Observation,
    RandomAgent,
)

TICS_PER_SECOND = 35
RESOLUTION = "RES_160X120"
FORWARD_THRUST = 25  # delta units (1/32 map unit per tic each): the thrust of MOVE_FORWARD
MAX_THRUST = 50  # ViZDoom clamps a delta move to +-50
STOPSPEED = 1.0 / 16  # Doom zeroes velocity components below this on a tic without input
ANGLE_UNIT_DEG = 360.0 / 2**16  # Doom's angle resolution as a delta turn sees it
# Shipped scenarios that do not start in ViZDoom 1.3.2 (tried one by one): refused up front, since a
# crashed or hung engine would take the stage down with no message.
UNPLAYABLE = {
    "cig": "the engine crashes starting it (segmentation fault)",
    "multi_duel": "the engine crashes starting it (segmentation fault)",
    "freedoom1": "the engine hangs starting it (its cfg starts map01, which a Doom 1 WAD lacks)",
}


# -- scenarios -------------------------------------------------------------------------------------
def _scenarios_dir() -> Path:
    import vizdoom

    return Path(vizdoom.scenarios_path)


def scenario_names() -> list[str]:
    return sorted(p.stem for p in _scenarios_dir().glob("*.cfg"))


@functools.cache  # resolved once per scenario, before any work and again per episode
def scenario_config(scenario: str) -> Path:
    """The .cfg of a shipped scenario; ValueError naming the source if there is none (with the closest
    names), if it needs a WAD ViZDoom does not ship, or if it is known not to start."""
    cfg = _scenarios_dir() / f"{scenario}.cfg"
    if scenario in UNPLAYABLE:
        raise ValueError(f"vizdoom:{scenario}: cannot be recorded: {UNPLAYABLE[scenario]}")
    if not cfg.is_file():
        names = [n for n in scenario_names() if n not in UNPLAYABLE]
        close = difflib.get_close_matches(scenario, names, n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"vizdoom:{scenario}: no such scenario in vizdoom.scenarios_path{hint} (shipped: {', '.join(names)})")
    for key, wad in re.findall(r"^\s*(doom_game_path|doom_scenario_path)\s*=\s*(\S+)", cfg.read_text(), re.MULTILINE):
        if not any((d / wad).is_file() for d in (cfg.parent, cfg.parent.parent)):
            raise ValueError(f"vizdoom:{scenario}: its cfg needs {wad} ({key}), which ViZDoom does not ship")
    return cfg


def episode_id(scenario: str, seed: int, episode: int) -> str:
    return f"vizdoom-{scenario.replace('_', '-')}-s{seed}-e{episode:03d}"


# -- the game --------------------------------------------------------------------------------------
def make_game(scenario: str, game_seed: int, depth: bool, workdir: Path):
    """A headless, HUD-less game of `scenario` with delta controls, on a new endless episode; its engine
    starts in `workdir`, where it writes `_vizdoom.ini` and `_vizdoom/`."""
    import vizdoom as vzd

    game = vzd.DoomGame()
    game.load_config(str(scenario_config(scenario)))
    game.set_doom_config_path(str(workdir / "_vizdoom.ini"))
    game.set_screen_resolution(getattr(vzd.ScreenResolution, RESOLUTION))
    game.set_screen_format(vzd.ScreenFormat.RGB24)
    game.set_window_visible(False)
    game.set_sound_enabled(False)
    for render in (game.set_render_hud, game.set_render_weapon, game.set_render_crosshair, game.set_render_messages):
        render(False)  # the weapon sprite would bob while walking and cover the bottom of the view
    game.set_depth_buffer_enabled(depth)
    # Delta buttons: exact turns and thrusts (binary TURN_LEFT/RIGHT accelerate, so pans would drift).
    game.set_available_buttons([vzd.Button.MOVE_FORWARD_BACKWARD_DELTA, vzd.Button.MOVE_LEFT_RIGHT_DELTA,
                                vzd.Button.TURN_LEFT_RIGHT_DELTA])  # fmt: skip
    gv = vzd.GameVariable
    game.set_available_game_variables([gv.POSITION_X, gv.POSITION_Y, gv.ANGLE, gv.VELOCITY_X, gv.VELOCITY_Y])
    game.set_episode_timeout(0)  # none (my_way_home: 2100 tics)
    game.add_game_args("+sv_cheats 1")  # for "give bluearmor" below
    game.set_mode(vzd.Mode.PLAYER)  # synchronous: the game waits for every action
    game.set_seed(int(game_seed))
    with _working_directory(workdir):  # the engine process starts here, with this cwd
        game.init()
    game.new_episode()
    game.send_game_command("give bluearmor")  # my_way_home's goal (green armor) can no longer be picked up
    return game


@contextlib.contextmanager
def _working_directory(path: Path) -> Iterator[None]:
    previous = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(previous)


def turn_per_tic(turn_deg: float, frame_skip: int) -> float:
    """The delta turn of one tic; it must be a whole number of Doom angle units, or turns drift."""
    per_tic = turn_deg / frame_skip
    if abs(per_tic / ANGLE_UNIT_DEG - round(per_tic / ANGLE_UNIT_DEG)) > 1e-9:
        raise ValueError(f"a turn of {turn_deg} degrees over {frame_skip} tics is not a whole number of "
                         f"Doom angle units per tic: turns would drift")  # fmt: skip
    return per_tic


def tic_inputs(action: int, tic_turn_deg: float, angle_deg: float, velocity: tuple[float, float]) -> list[float]:
    """[forward, right, turn] delta inputs for one tic of `action`. BRAKE thrusts against the velocity;
    below STOPSPEED it sends nothing and the engine zeroes it, so the player stops exactly."""
    if action == FORWARD:
        return [FORWARD_THRUST, 0.0, 0.0]
    if action == TURN_LEFT:
        return [0.0, 0.0, -tic_turn_deg]  # a positive TURN_LEFT_RIGHT_DELTA turns right
    if action == TURN_RIGHT:
        return [0.0, 0.0, tic_turn_deg]
    vx, vy = velocity
    if action == BRAKE and (abs(vx) >= STOPSPEED or abs(vy) >= STOPSPEED):
        a = np.deg2rad(angle_deg)
        forward = vx * np.cos(a) + vy * np.sin(a)
        right = vx * np.sin(a) - vy * np.cos(a)
        return [float(np.clip(np.round(-32 * forward), -MAX_THRUST, MAX_THRUST)),
                float(np.clip(np.round(-32 * right), -MAX_THRUST, MAX_THRUST)), 0.0]  # fmt: skip
    return [0.0, 0.0, 0.0]  # NOOP, or BRAKE when already (almost) still


def _advance(game, action: int, frame_skip: int, tic_turn_deg: float) -> None:
    """Hold `action` for the frame_skip tics that lead to the next frame."""
    import vizdoom as vzd

    gv = vzd.GameVariable
    for tic in range(frame_skip):
        if game.is_episode_finished():
            return
        velocity = (game.get_game_variable(gv.VELOCITY_X), game.get_game_variable(gv.VELOCITY_Y))
        game.set_action(tic_inputs(action, tic_turn_deg, game.get_game_variable(gv.ANGLE), velocity))
        # Game variables are refreshed only with the state: BRAKE reads the velocity on every tic,
        # so it updates the state on every tic (a stale velocity made it oscillate forever).
        game.advance_action(1, action == BRAKE or tic == frame_skip - 1)


class Game:
    """One seeded episode of a scenario, advanced a frame (frame_skip tics) per action: what the
    recorder's agent plays, and what a person drives in pipeline.play."""

    action_meanings = ACTION_MEANINGS

    def __init__(self, scenario: str, seed: int, episode: int, frame_skip: int, depth: bool = False):
        self.game_seed, self.agent_seed = np.random.SeedSequence([seed, episode]).generate_state(2)
        self.frame_skip = frame_skip
        self.tic_turn_deg = turn_per_tic(ExplorerConfig().turn_deg, frame_skip)
        self._workdir = tempfile.TemporaryDirectory(prefix="vizdoom-")
        try:
            self.game = make_game(scenario, self.game_seed, depth=depth, workdir=Path(self._workdir.name))
        except BaseException:
            self._workdir.cleanup()
            raise

    @property
    def finished(self) -> bool:
        return self.game.is_episode_finished()

    def observe(self):
        """The current frame's state: screen (uint8 HxWx3), pose (x, y, angle), velocity, depth."""
        state = self.game.get_state()
        x, y, angle, vx, vy = (float(v) for v in state.game_variables)
        return state.screen_buffer.copy(), (x, y, angle), (vx, vy), state.depth_buffer

    def act(self, action: int) -> None:
        _advance(self.game, action, self.frame_skip, self.tic_turn_deg)

    def close(self) -> None:
        self.game.close()
        self._workdir.cleanup()


def play_episode(scenario: str, seed: int, episode: int, rec: RecorderParams) -> Iterator[Step]:
    """The steps (frame, action, pose) of one seeded episode, up to rec.max_frames frames."""
    params = rec.vizdoom
    explore = params.agent == "explorer"
    game = Game(scenario, seed, episode, params.frame_skip, depth=explore)
    rng = np.random.default_rng(game.agent_seed)
    agent = Explorer(rng, ExplorerConfig()) if explore else RandomAgent(rng, params.sticky_prob)
    try:
        previous_xy = None
        for _ in range(rec.max_frames):
            if game.finished:
                return
            screen, pose, velocity, depth = game.observe()
            moved = 0.0 if previous_xy is None else float(np.hypot(pose[0] - previous_xy[0], pose[1] - previous_xy[1]))
            previous_xy = pose[:2]
            action = agent.act(Observation(pose, velocity, depth, moved))
            yield Step(screen, action, pose)
            game.act(action)
    finally:
        game.close()


# -- the Recorder interface (pipeline.data.sources.recording) --------------------------------------
def check(scenario: str) -> None:
    scenario_config(scenario)


def episode(scenario: str, source: str, seed: int, episode: int, rec: RecorderParams) -> tuple[EpisodeInfo, Iterator[Step]]:
    params = rec.vizdoom
    info = EpisodeInfo(
        id=episode_id(scenario, seed, episode),
        source=source,
        title=f"ViZDoom {scenario} episode {episode} (seed {seed}, {params.agent} agent)",
        fps=Fraction(TICS_PER_SECOND, params.frame_skip),
        action_meanings=ACTION_MEANINGS,
        has_pose=True,
        extra={"scenario": scenario, "agent": params.agent, "frame_skip": params.frame_skip},
    )
    return info, play_episode(scenario, seed, episode, rec)
