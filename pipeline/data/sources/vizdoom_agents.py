"""The `vizdoom:` recorder's action set and agents: an explorer that revisits views on purpose (exact
turns, motifs from standstill, so a pan or spin returns to the bit-identical view), and the sticky
random agent. Why, and measurements: docs/sources.md (Inside the recorders).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

from pipeline.data.sources.agents import sticky_random_actions

ACTION_MEANINGS = ("noop", "forward", "turn_left", "turn_right", "brake")
NOOP, FORWARD, TURN_LEFT, TURN_RIGHT, BRAKE = range(len(ACTION_MEANINGS))

# Plan tokens: placeholders in a plan, resolved into actions when they come up.
STOP = -1  # BRAKE (or NOOP without braking) until the player stands still
WALK = -2  # FORWARD, or stop and look for a way on when a wall is ahead
LOOK = -3  # spin 360 degrees if the panorama of this spot is incomplete
FACE = -4  # turn in place toward the best heading of the panorama

HFOV_DEG = 90.0  # horizontal field of view of a 4:3 ViZDoom screen
DEPTH_UNIT = 8.0  # map units per depth-buffer step (measured: ~7.6-8 at 160x120)
CELL = 96.0  # map units per cell of the visit-count grid
WALK_HALF_DEG = 17.5  # a heading is walkable if nothing is close within +- this many degrees
PANO_BIN = 5.0  # degrees per bin of the panorama (free depth per absolute heading)
MAX_VIEW = 320.0  # map units: farther openings count no more than this

Pose = tuple[float, float, float]  # x, y (map units), angle (degrees, counter-clockwise from +x)


@dataclass(frozen=True)
class ExplorerConfig:
    """Parameters of the explorer (defaults: the measured best mix). Ranges are inclusive (lo, hi) frame
    counts; `weights` choose the next motif (explore, pan, spin, outback, pause) once the plan is empty."""

    turn_deg: float = 22.5  # per frame: 180 degrees = 8 frames, 360 = 16
    walk: tuple[int, int] = (8, 20)
    pan: tuple[int, int] = (3, 8)
    hold: tuple[int, int] = (0, 2)
    spin_extra: tuple[int, int] = (2, 8)
    outback: tuple[int, int] = (4, 8)
    weights: dict = field(default_factory=lambda: {"explore": 0.3, "pan": 0.4, "spin": 0.2, "outback": 0.1, "pause": 0.0})
    brake: bool = True  # False: stop by coasting (NOOP); measured: 13.5 -> 7.9 dB of memory headroom
    look_min_deg: float = 270.0  # spin first when less than this much of the panorama is known
    clear_depth: int = 6  # depth-buffer steps below which "ahead" is a wall
    novelty: float = 1.0  # exponent of the novelty term of a heading's score (0: only openness)


@dataclass(frozen=True)
class Observation:
    """What an agent sees before choosing the action for a frame."""

    pose: Pose
    velocity: tuple[float, float]  # map units per tic
    depth: np.ndarray | None  # (H, W) uint8 depth buffer (~8 map units per step); None if not rendered
    moved: float  # distance moved since the previous frame

    @property
    def still(self) -> bool:
        return self.velocity == (0.0, 0.0)


def depth_profile(depth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(heading offset in degrees, + = left; free depth) per screen column, from the horizon band."""
    h, w = depth.shape
    profile = np.median(depth[int(h * 0.42) : int(h * 0.58)], axis=0).astype(np.float64)
    cols = np.arange(w) + 0.5
    offsets = np.degrees(np.arctan((w / 2 - cols) / (w / 2) * np.tan(np.radians(HFOV_DEG / 2))))
    return offsets, profile


def _free_ahead(depth: np.ndarray | None) -> float:
    """Median free depth (depth-buffer steps) of the 16 central screen columns."""
    if depth is None:
        return 0.0
    profile, mid = depth_profile(depth)[1], depth.shape[1] // 2
    return float(np.median(profile[mid - 8 : mid + 8]))


class Explorer:
    """Plans motifs and plays them frame by frame. Memory: visits per CELL grid cell, and the free depth
    per PANO_BIN-degree heading seen from the current spot (filled standing still, cleared on moving)."""

    def __init__(self, rng: np.random.Generator, config: ExplorerConfig = ExplorerConfig()):
        self.rng = rng
        self.cfg = config
        self.plan: deque[int] = deque()
        self.last_action = NOOP
        self.visits: dict[tuple[int, int], int] = {}
        self.pano = np.full(int(360 / PANO_BIN), np.nan)
        self._pano_xy: tuple[float, float] | None = None
        self._stuck: Pose | None = None  # pose where walking got stuck without a wall in view
        names = list(config.weights)
        weights = np.array([config.weights[n] for n in names], float)
        self._motifs, self._motif_p = names, weights / weights.sum()

    # -- small helpers ---------------------------------------------------------------------------
    def _randint(self, lo_hi: tuple[int, int]) -> int:
        return int(self.rng.integers(lo_hi[0], lo_hi[1] + 1))

    def _random_turn(self) -> int:
        return TURN_LEFT if self.rng.random() < 0.5 else TURN_RIGHT

    @staticmethod
    def _opposite(turn: int) -> int:
        return TURN_RIGHT if turn == TURN_LEFT else TURN_LEFT

    def _frames_for(self, degrees: float) -> int:
        return int(round(degrees / self.cfg.turn_deg))

    # -- memory ----------------------------------------------------------------------------------
    def _update_memory(self, obs: Observation) -> None:
        x, y, angle = obs.pose
        cell = (int(x // CELL), int(y // CELL))
        self.visits[cell] = self.visits.get(cell, 0) + 1
        if self._pano_xy != (x, y):
            self.pano[:] = np.nan
            self._pano_xy = (x, y)
        if obs.still and obs.depth is not None:
            offsets, profile = depth_profile(obs.depth)
            bins = ((angle + offsets) % 360 // PANO_BIN).astype(int)
            for b in np.unique(bins):
                self.pano[b] = np.median(profile[bins == b])

    def _blocked(self, depth: np.ndarray | None) -> bool:
        """A wall closer than clear_depth within +-WALK_HALF_DEG of straight ahead."""
        if depth is None:
            return False
        offsets, profile = depth_profile(depth)
        return float(profile[np.abs(offsets) < WALK_HALF_DEG].min()) < self.cfg.clear_depth

    def _best_heading(self, obs: Observation) -> float | None:
        """Absolute heading (degrees) of the best known direction from here, None if none is open. Score:
        free distance (min within +-WALK_HALF_DEG) x novelty**cfg.novelty, novelty = 1 / (1 + visits)."""
        n = len(self.pano)
        half = int(round(WALK_HALF_DEG / PANO_BIN))
        stack = np.stack([np.roll(self.pano, k) for k in range(-half, half + 1)])
        known = ~np.isnan(stack).any(axis=0)
        if not known.any():
            return None
        free = np.where(known, np.nanmin(np.where(np.isnan(stack), np.inf, stack), axis=0), 0.0)
        dist = np.minimum(free * DEPTH_UNIT, MAX_VIEW)
        x, y, _ = obs.pose
        heading = (np.arange(n) + 0.5) * PANO_BIN
        tx, ty = x + dist * np.cos(np.radians(heading)), y + dist * np.sin(np.radians(heading))
        novelty = np.array([1.0 / (1 + self.visits.get((int(u // CELL), int(v // CELL)), 0)) for u, v in zip(tx, ty)])
        score = np.where(free >= self.cfg.clear_depth + 2, dist * novelty**self.cfg.novelty, -1.0)
        if self._stuck is not None and np.hypot(x - self._stuck[0], y - self._stuck[1]) < 16:
            near = np.abs((heading - self._stuck[2] + 180.0) % 360.0 - 180.0) < 30.0
            score[near] = -1.0  # walking this way got stuck here before
        i = int(np.argmax(score + 1e-6 * self.rng.random(n)))  # random tie-break
        return None if score[i] < 0 else float(heading[i])

    # -- planning --------------------------------------------------------------------------------
    def _face(self, obs: Observation) -> list[int]:
        """Turn frames toward the best known heading; 90 or 180 degrees if nothing is open."""
        target = self._best_heading(obs)
        if target is None:
            return [self._random_turn()] * self._frames_for(float(self.rng.choice([90.0, 180.0])))
        delta = (target - obs.pose[2] + 180.0) % 360.0 - 180.0  # + = left
        return [TURN_LEFT if delta > 0 else TURN_RIGHT] * self._frames_for(abs(delta))

    def _look(self) -> list[int]:
        seen = np.count_nonzero(~np.isnan(self.pano)) * PANO_BIN
        return [self._random_turn()] * self._frames_for(360) if seen < self.cfg.look_min_deg else []

    def _explore(self) -> list[int]:
        return [STOP, LOOK, FACE] + [WALK] * self._randint(self.cfg.walk)

    def _out_and_back(self, obs: Observation) -> list[int]:
        n = self._randint(self.cfg.outback)
        # A walked frame covers ~13 map units (1.6 depth steps): explore instead without the room.
        if self._blocked(obs.depth) or _free_ahead(obs.depth) < 1.6 * n + self.cfg.clear_depth:
            return self._explore()
        half, turn = self._frames_for(180), self._random_turn()
        return ([STOP] + [FORWARD] * n + [STOP] + [turn] * half + [FORWARD] * n + [STOP]
                + [self._opposite(turn)] * half + [FORWARD] * n)  # fmt: skip

    def _new_plan(self, obs: Observation) -> list[int]:
        cfg = self.cfg
        motif = self._motifs[int(self.rng.choice(len(self._motifs), p=self._motif_p))]
        if motif == "explore":
            return self._explore()
        if motif == "pan":
            k, hold, turn = self._randint(cfg.pan), self._randint(cfg.hold), self._random_turn()
            return [STOP] + [turn] * k + [NOOP] * hold + [self._opposite(turn)] * k
        if motif == "spin":
            n = self._frames_for(360) + self._randint(cfg.spin_extra)
            return [STOP] + [self._random_turn()] * n
        if motif == "outback":
            return self._out_and_back(obs)
        return [NOOP] * max(1, self._randint(cfg.hold))  # pause

    # -- policy ----------------------------------------------------------------------------------
    def act(self, obs: Observation) -> int:
        """The action for this frame: the next one of the plan, plan tokens resolved."""
        self._update_memory(obs)
        replans = 0  # times a blocked walk was re-planned without acting
        while True:
            if not self.plan:
                self.plan.extend(self._new_plan(obs))
            token = self.plan.popleft()
            if token == STOP:
                if obs.still:
                    continue
                self.plan.appendleft(STOP)  # keep braking until the velocity is exactly zero
                action = BRAKE if self.cfg.brake else NOOP
            elif token == LOOK:
                self.plan.extendleft(reversed(self._look()))
                continue
            elif token == FACE:
                self.plan.extendleft(reversed(self._face(obs)))
                continue
            elif token == WALK:
                stuck = self.last_action == FORWARD and obs.moved < 1.0
                if stuck or self._blocked(obs.depth):  # stop, look, face the best way, walk on
                    if stuck:  # the depth buffer saw no wall here: rule this heading out
                        self._stuck = obs.pose
                    replans += 1
                    if replans > 2:  # facing found nothing better than this heading: turn away
                        self.plan.extendleft([WALK] + [self._random_turn()] * self._frames_for(90))
                    else:
                        self.plan.extendleft([WALK, FACE, LOOK, STOP])
                    continue
                action = FORWARD
            else:
                action = token
            break
        self.last_action = action
        return action


class RandomAgent:
    """Sticky uniform random actions over ACTION_MEANINGS (the Atari recorder's agent)."""

    def __init__(self, rng: np.random.Generator, sticky_prob: float):
        self._actions: Iterator[int] = sticky_random_actions(rng, len(ACTION_MEANINGS), sticky_prob)

    def act(self, obs: Observation) -> int:
        return next(self._actions)
