"""The `vizdoom:` recorder's action set and agents: an explorer that revisits views on purpose (exact
turns, motifs from standstill, so a pan or spin returns to the bit-identical view, and a walk played
backwards leads back to where it started), and the sticky random agent. Why, and measurements:
docs/sources.md (Inside the recorders).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Iterator, NamedTuple

import numpy as np

from pipeline.data.sources.agents import sticky_random_actions

ACTION_MEANINGS = ("noop", "forward", "turn_left", "turn_right", "brake")
NOOP, FORWARD, TURN_LEFT, TURN_RIGHT, BRAKE = range(len(ACTION_MEANINGS))

# Plan tokens: placeholders in a plan, resolved into actions when they come up.
STOP = -1  # BRAKE (or NOOP without braking) until the player stands still
WALK = -2  # FORWARD, or stop and look for a way on when a wall is ahead
LOOK = -3  # spin 360 degrees if the panorama of this spot is incomplete
FACE = -4  # turn in place toward the best heading of the panorama
ANCHOR = -5  # (standing still) remember this pose, then leave and come back to it (the revisit motif)

HFOV_DEG = 90.0  # horizontal field of view of a 4:3 ViZDoom screen
DEPTH_UNIT = 8.0  # map units per depth-buffer step (measured: ~7.6-8 at 160x120)
CELL = 96.0  # map units per cell of the visit-count grid
WALK_HALF_DEG = 17.5  # a heading is walkable if nothing is close within +- this many degrees
PANO_BIN = 5.0  # degrees per bin of the panorama (free depth per absolute heading)
MAX_VIEW = 320.0  # map units: farther openings count no more than this
OFF_COURSE_DEG = 0.15  # a free walk moves within 0.06 degrees of its heading; sliding along a wall more

Pose = tuple[float, float, float]  # x, y (map units), angle (degrees, counter-clockwise from +x)


class Return(NamedTuple):
    """A completed revisit: where and when the explorer left its anchor and where it came back to."""

    anchor_frame: int
    anchor: Pose
    end_frame: int  # the first frame after the way back
    end: Pose


def return_plan(log: list[int], half_turn: int = 8) -> list[int]:
    """The way back to where `log` (the actions played since standing still there) started, facing the
    way it faced: turn half_turn frames (180 degrees), replay the log backwards (its walks forward, each
    braked to a stop, its turns negated), turn 180 degrees again. Exact if the log turns only standing
    still and every walk (a run of consecutive FORWARD) ends in a stop: BRAKE and NOOP frames only end
    walks. Consecutive turns are merged and cut to under half a circle either way."""
    ops: list[list] = []  # ["turn", frames, + = left] or ["walk", frames of FORWARD]
    previous = NOOP
    for action in log:
        if action in (TURN_LEFT, TURN_RIGHT):
            step = 1 if action == TURN_LEFT else -1
            if ops and ops[-1][0] == "turn":
                ops[-1][1] += step
            else:
                ops.append(["turn", step])
        elif action == FORWARD:
            if previous == FORWARD:
                ops[-1][1] += 1
            else:
                ops.append(["walk", 1])
        previous = action
    back = [["turn", half_turn]] + [["turn", -n] if kind == "turn" else [kind, n] for kind, n in reversed(ops)]
    back.append(["turn", half_turn])
    plan: list[int] = []
    turn = 0  # frames still to turn, + = left: consecutive turns are merged
    for kind, n in back:
        if kind == "turn":
            turn += n
            continue
        plan += _turn(turn, half_turn) + [FORWARD] * n + [STOP]
        turn = 0
    return plan + _turn(turn, half_turn)


def _turn(frames: int, half_turn: int) -> list[int]:
    """A turn of `frames` (+ = left) the short way round."""
    frames = half_turn - (half_turn - frames) % (2 * half_turn)  # in (-half_turn, half_turn]
    return [TURN_LEFT if frames > 0 else TURN_RIGHT] * abs(frames)


@dataclass(frozen=True)
class ExplorerConfig:
    """Parameters of the explorer (defaults: the measured best mix). Ranges are inclusive (lo, hi) frame
    counts; `weights` choose the next motif (explore, pan, spin, outback, pause, revisit) once the plan is
    empty."""

    turn_deg: float = 22.5  # per frame: 180 degrees = 8 frames, 360 = 16
    walk: tuple[int, int] = (8, 20)
    pan: tuple[int, int] = (3, 8)
    hold: tuple[int, int] = (0, 2)
    spin_extra: tuple[int, int] = (2, 8)
    outback: tuple[int, int] = (4, 8)
    # Revisit: frames from leaving the anchor (with the other motifs) to standing on it again; the walk
    # back starts once the frames away so far plus its own length reach the drawn number.
    away: tuple[int, int] = (100, 140)
    # revisit 2 (2/3 of the motifs begun outside a revisit): ~2.2 returns per 500 frames (measured)
    weights: dict = field(default_factory=lambda: {"explore": 0.3, "pan": 0.4, "spin": 0.2, "outback": 0.1, "pause": 0.0,
                                                   "revisit": 2.0})  # fmt: skip
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
        leaving = np.where(np.array(names) == "revisit", 0.0, weights)  # no revisit within a revisit
        if leaving.sum() <= 0:
            raise ValueError("the revisit motif leaves with the other motifs: give one of them a weight")
        self._leave_p = leaving / leaving.sum()
        # The revisit motif: anchor (frame, pose), the frame by which to stand there again, the actions
        # played since the anchor (None unless leaving), whether walking back; completed and abandoned returns.
        self.frame = 0  # frames acted on so far
        self._anchor: tuple[int, Pose] | None = None
        self._back_by = 0
        self._log: list[int] | None = None
        self._returning = False
        self.returns: list[Return] = []
        self.abandoned = 0
        self._previous: tuple[Pose, float, int] | None = None  # the last frame's pose, moved, and what moved it

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

    def _off_course(self, obs: Observation) -> bool:
        """Whether the last frame moved other than a free walk does: sideways off its heading (a slide
        along a wall), or, walking on, less far than the frame before (a bump; < 1 map unit: stuck).
        Played backwards, such a frame would not lead back."""
        if self._previous is None:
            return False
        (px, py, _), before, moved_by = self._previous
        x, y, angle = obs.pose
        a = np.radians(angle)
        sideways = (y - py) * np.cos(a) - (x - px) * np.sin(a)  # (braking may overshoot by ~0.01 backwards)
        if abs(sideways) > 0.01 + obs.moved * np.tan(np.radians(OFF_COURSE_DEG)):
            return True
        return self.last_action == FORWARD and obs.moved < max(1.0, before - 0.1 if moved_by == FORWARD else 0.0)

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

    def _next_plan(self, obs: Observation) -> list[int]:
        """The plan once the current one is done: the revisit's way back when it is time, else a motif."""
        if self._returning:  # the way back is done
            self.returns.append(Return(*self._anchor, self.frame, obs.pose))
            self._returning = False
        if self._log is None:
            return self._new_plan(obs, self._motif_p)
        plan = return_plan(self._log, self._frames_for(180))
        # Its frames: a frame per turn or step, and each walk's stop as long as the mirrored one out.
        if self.frame + len(plan) - plan.count(STOP) + self._log.count(BRAKE) < self._back_by:
            return self._new_plan(obs, self._leave_p)
        if not obs.still:
            return [STOP]  # the last walk must end in a stop to be walked back exactly
        self._log = None
        if not plan:  # never left (or only turned full circles)
            self.returns.append(Return(*self._anchor, self.frame, obs.pose))
            return self._new_plan(obs, self._motif_p)
        self._returning = True
        return plan

    def _new_plan(self, obs: Observation, p: np.ndarray) -> list[int]:
        cfg = self.cfg
        motif = self._motifs[int(self.rng.choice(len(self._motifs), p=p))]
        if motif == "revisit":
            return [STOP, ANCHOR]
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
        if (self._log is not None or self._returning) and self._off_course(obs):
            # A wall touched: the walk would not lead back exactly. Give the revisit up; the plan of a
            # motif leaving goes on, a way back is dropped (it would run into walls again).
            if self._returning:
                self.plan.clear()
            self._log, self._returning = None, False
            self.abandoned += 1
        self._previous = (obs.pose, obs.moved, self.last_action)
        replans = 0  # times a blocked walk was re-planned without acting
        while True:
            if not self.plan:
                self.plan.extend(self._next_plan(obs))
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
            elif token == ANCHOR:
                self._anchor, self._log = (self.frame, obs.pose), []
                self._back_by = self.frame + self._randint(self.cfg.away)
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
            elif self._log is not None and token in (TURN_LEFT, TURN_RIGHT, NOOP) and not obs.still:
                self.plan.extendleft([token, STOP])  # turning or coasting while moving would not walk back exactly
                continue
            else:
                action = token
            break
        if self._log is not None:
            self._log.append(action)
        self.last_action = action
        self.frame += 1
        return action


class RandomAgent:
    """Sticky uniform random actions over ACTION_MEANINGS (the Atari recorder's agent)."""

    def __init__(self, rng: np.random.Generator, sticky_prob: float):
        self._actions: Iterator[int] = sticky_random_actions(rng, len(ACTION_MEANINGS), sticky_prob)

    def act(self, obs: Observation) -> int:
        return next(self._actions)
