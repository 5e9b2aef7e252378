"""The `crafter` recorder's action set (moves and noop: the world stays as generated) and its agents,
neither stepping onto lava: an explorer that revisits places on purpose, and the sticky random one."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np

from pipeline.data.sources.agents import sticky_random_actions

ACTION_MEANINGS = ("noop", "move_left", "move_right", "move_up", "move_down")  # crafter's action indices 0..4
NOOP, LEFT, RIGHT, UP, DOWN = range(len(ACTION_MEANINGS))
MOVES = {LEFT: (-1, 0), RIGHT: (1, 0), UP: (0, -1), DOWN: (0, 1)}  # grid steps (y grows downward on screen)
OPPOSITE = {LEFT: RIGHT, RIGHT: LEFT, UP: DOWN, DOWN: UP}
CLOCKWISE = {RIGHT: DOWN, DOWN: LEFT, LEFT: UP, UP: RIGHT}  # on screen
COUNTER_CLOCKWISE = {after: before for before, after in CLOCKWISE.items()}
WALK = -2  # plan token: move on in the current heading, turning when the way is not free

Cell = tuple[int, int]


@dataclass(frozen=True)
class ExplorerConfig:
    """Parameters of the explorer (defaults: the measured best mix). Ranges are inclusive (lo, hi) step
    counts; `weights` choose the next motif whenever the plan is empty."""

    walk: tuple[int, int] = (3, 10)
    outback: tuple[int, int] = (3, 8)
    patrol: tuple[int, int] = (3, 7)
    patrol_legs: tuple[int, int] = (3, 4)
    loop: tuple[int, int] = (2, 4)
    laps: tuple[int, int] = (2, 2)
    pause: tuple[int, int] = (1, 3)
    p_keep_heading: float = 0.6
    weights: dict = field(default_factory=lambda: {"walk": 0.35, "outback": 0.0, "patrol": 0.3, "loop": 0.35, "pause": 0.0})


@dataclass(frozen=True)
class Observation:
    """What an agent knows before choosing the action for a frame."""

    pos: Cell
    free: Callable[[Cell], bool]  # may the player step onto this cell (and survive)?
    lava: Callable[[Cell], bool]  # is this cell lava?


def _step(cell: Cell, move: int) -> Cell:
    dx, dy = MOVES[move]
    return cell[0] + dx, cell[1] + dy


class Explorer:
    """Plans motifs (walk / out-and-back / patrol / loop / pause) and plays them step by step. A motif
    other than walk is taken only when its whole way is free, so positions are the sum of the moves."""

    def __init__(self, rng: np.random.Generator, config: ExplorerConfig = ExplorerConfig()):
        self.rng, self.cfg = rng, config
        self.plan: deque[int] = deque()
        self.heading = DOWN  # crafter's player starts facing down
        names = list(config.weights)
        weights = np.array([config.weights[n] for n in names], float)
        self._motifs, self._motif_p = names, weights / weights.sum()

    def _randint(self, lo_hi: tuple[int, int]) -> int:
        return int(self.rng.integers(lo_hi[0], lo_hi[1] + 1))

    @staticmethod
    def _path_free(obs: Observation, moves: list[int]) -> bool:
        cell = obs.pos
        for move in moves:
            cell = _step(cell, move)
            if not obs.free(cell):
                return False
        return True

    @staticmethod
    def _free_moves(obs: Observation) -> list[int]:
        return [m for m in (LEFT, RIGHT, UP, DOWN) if obs.free(_step(obs.pos, m))]

    def _motif_moves(self, motif: str, d: int) -> list[int] | None:
        """The moves of a revisiting motif starting in direction d; None for walk."""
        cfg = self.cfg
        if motif == "outback":
            n = self._randint(cfg.outback)
            return [d] * n + [OPPOSITE[d]] * n
        if motif == "patrol":
            n, legs = self._randint(cfg.patrol), self._randint(cfg.patrol_legs)
            return [move for leg in range(legs) for move in [d if leg % 2 == 0 else OPPOSITE[d]] * n]
        if motif == "loop":
            a, b = self._randint(cfg.loop), self._randint(cfg.loop)
            d2 = (CLOCKWISE if self.rng.random() < 0.5 else COUNTER_CLOCKWISE)[d]
            lap = [d] * a + [d2] * b + [OPPOSITE[d]] * a + [OPPOSITE[d2]] * b
            return lap * self._randint(cfg.laps)
        return None

    def _new_plan(self, obs: Observation) -> list[int]:
        motif = self._motifs[int(self.rng.choice(len(self._motifs), p=self._motif_p))]
        d = int(self.rng.choice([LEFT, RIGHT, UP, DOWN]))
        if motif == "pause":
            return [NOOP] * self._randint(self.cfg.pause)
        moves = self._motif_moves(motif, d)
        if moves is not None and self._path_free(obs, moves):
            return moves
        if self.rng.random() >= self.cfg.p_keep_heading:  # walk (also when a motif's way is blocked)
            self.heading = d
        return [WALK] * self._randint(self.cfg.walk)

    def act(self, obs: Observation) -> int:
        """The action for this frame: the next one of the plan, a WALK step resolved."""
        if not self.plan:
            self.plan.extend(self._new_plan(obs))
        token = self.plan.popleft()
        if token != WALK:
            return token
        if obs.free(_step(obs.pos, self.heading)):
            return self.heading
        options = [m for m in self._free_moves(obs) if m != OPPOSITE[self.heading]] or self._free_moves(obs)
        if not options:
            return NOOP
        self.heading = int(self.rng.choice(options))
        return self.heading


class RandomAgent:
    """Sticky uniform random actions over ACTION_MEANINGS (the Atari recorder's agent), except that
    a move onto lava becomes a noop; bumping into trees or water is allowed."""

    def __init__(self, rng: np.random.Generator, sticky_prob: float):
        self._actions: Iterator[int] = sticky_random_actions(rng, len(ACTION_MEANINGS), sticky_prob)

    def act(self, obs: Observation) -> int:
        action = next(self._actions)
        if action != NOOP and obs.lava(_step(obs.pos, action)):
            return NOOP
        return action
