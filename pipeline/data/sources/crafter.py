"""The `crafter` recorder: a static Crafter world, so that a revisit with the same facing gives the
identical frame; frames are the 9x9-tile local view (144x144), poses grid x, y and facing in degrees
from +x toward +y (y down). Why each choice: docs/sources.md (Inside the recorders).
"""

from __future__ import annotations

from fractions import Fraction
from typing import Iterator

import numpy as np

from pipeline.config import RecorderParams
from pipeline.data.sources.crafter_agents import ACTION_MEANINGS, Cell, Explorer, Observation, RandomAgent
from pipeline.data.sources.recording import EpisodeInfo, Step

FPS = 20  # nominal: one env step per frame, Crafter has no real time
VIEW_TILES = 9  # the local view is VIEW_TILES x VIEW_TILES tiles, the player in the centre
TILE_PX = 16
AREA = (64, 64)  # world size in tiles (crafter's default)
WALKABLE = ("grass", "sand", "path")  # lava is walkable for crafter's player, but kills it


def episode_id(seed: int, episode: int) -> str:
    return f"crafter-s{seed}-e{episode:03d}"


def make_env(world_seed: int):
    """A reset crafter.Env with a static world (see the module doc), seeded with world_seed."""
    import crafter

    # view=(w, h + 2): crafter keeps the bottom 2 rows of its view for the inventory, so the map is w x h.
    env = crafter.Env(area=AREA, view=(VIEW_TILES, VIEW_TILES + 2), size=(TILE_PX * VIEW_TILES, TILE_PX * (VIEW_TILES + 2)),
                      reward=False, length=None, seed=int(world_seed))  # fmt: skip
    env.reset()
    for obj in list(env._world.objects):
        if obj is not env._player:
            env._world.remove(obj)
    env._balance_chunk = lambda chunk, objs: None  # no creature spawns or despawns
    env._update_time = lambda: setattr(env._world, "daylight", 1.0)  # always full day
    env._update_time()
    # step() renders an observation (map + inventory) that is never used: a third of the time. At
    # daylight 1 rendering draws nothing from the world RNG, so skipping it changes no frame.
    env._obs = lambda: None
    return env


def render_local_view(env) -> np.ndarray:
    """The map part of crafter's observation, uint8 (H, W, 3), without the inventory strip."""
    view = env._local_view(env._player, np.array([TILE_PX, TILE_PX]))  # (W, H, 3), float after lighting
    return np.asarray(view).transpose(1, 0, 2).astype(np.uint8)


def _keep_alive(player) -> None:
    for stat in ("health", "food", "drink", "energy"):
        player.inventory[stat] = 9
    player._hunger = player._thirst = player._fatigue = 0
    player._recover = 0
    player.sleeping = False


def heading_deg(facing) -> float:
    """The angle of a facing vector in the grid's axes: (1, 0) -> 0, (0, 1) -> 90, (-1, 0) -> 180."""
    return float(np.degrees(np.arctan2(facing[1], facing[0])) % 360.0)


class _World:
    """Walkability queries on a crafter world (the agents' view of it)."""

    def __init__(self, env):
        self.env = env

    def free(self, cell: Cell) -> bool:
        """Walkable and safe material, and no object (the player's own cell counts as free)."""
        material, obj = self.env._world[cell]
        return material in WALKABLE and (obj is None or obj is self.env._player)

    def lava(self, cell: Cell) -> bool:
        return self.env._world[cell][0] == "lava"


def play_episode(seed: int, episode: int, rec: RecorderParams) -> Iterator[Step]:
    """The steps (frame, action, pose) of one seeded episode, up to rec.max_frames frames."""
    world_seed, agent_seed = np.random.SeedSequence([seed, episode]).generate_state(2)
    rng = np.random.default_rng(agent_seed)
    env = make_env(int(world_seed) % (2**31 - 1))
    world = _World(env)
    params = rec.crafter
    agent = Explorer(rng) if params.agent == "explorer" else RandomAgent(rng, params.sticky_prob)
    player = env._player
    for _ in range(rec.max_frames):
        pos = (int(player.pos[0]), int(player.pos[1]))
        frame = render_local_view(env)
        action = agent.act(Observation(pos, world.free, world.lava))
        yield Step(frame, action, (float(pos[0]), float(pos[1]), heading_deg(player.facing)))
        _, _, done, _ = env.step(action)
        _keep_alive(player)
        if done:  # cannot happen while the player is kept alive and the episode has no length
            return


# -- the Recorder interface (pipeline.data.sources.recording) --------------------------------------
def check(target: str) -> None:
    if target:
        raise ValueError(f"crafter:{target}: the crafter source takes no argument (write `crafter`)")


def episode(target: str, source: str, seed: int, episode: int, rec: RecorderParams) -> tuple[EpisodeInfo, Iterator[Step]]:
    info = EpisodeInfo(
        id=episode_id(seed, episode),
        source=source,
        title=f"Crafter episode {episode} (seed {seed}, {rec.crafter.agent} agent)",
        fps=Fraction(FPS),
        action_meanings=ACTION_MEANINGS,
        has_pose=True,
        extra={"agent": rec.crafter.agent, "view_tiles": VIEW_TILES},
    )
    return info, play_episode(seed, episode, rec)
