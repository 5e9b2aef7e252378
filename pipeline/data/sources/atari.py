"""The embedded replay recorder: `atari:<Game>` sources, recorded offline with ale-py.

A seeded "sticky" random agent plays; each episode becomes `<id>.mp4` plus `<id>.actions.npy`
(int64 indices into the game's minimal action set, one per video frame). actions[t] is the action
the agent chose on seeing frame t; it is held for the 60/fps emulator frames that lead to frame t+1.

The emulator runs at its native 60 Hz with no stickiness of its own (repeat_action_probability 0):
the agent is the only source of randomness, and it is seeded from (seed, episode). The encode is
bit-exact (x264 on one thread, no metadata), so the same params give the same bytes.
"""

from __future__ import annotations

import difflib
import functools
import subprocess
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
from tqdm.auto import tqdm

from pipeline.atomic import atomic_file
from pipeline.config import RecorderParams
from pipeline.data.sources.manifest import ACTIONS_SUFFIX, VideoEntry, entry_for_file
from pipeline.data.video.ffmpeg import ffmpeg_exe

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


def sticky_agent(rng: np.random.Generator, n_actions: int, sticky_prob: float) -> Iterator[int]:
    """Uniform random actions, each repeated with probability sticky_prob (so moves last a while)."""
    action = int(rng.integers(n_actions))
    while True:
        yield action
        if rng.random() >= sticky_prob:
            action = int(rng.integers(n_actions))


def play_episode(
    game: str, seed: int, episode: int, rec: RecorderParams, actions: Iterable[int] | None = None
) -> Iterator[tuple[np.ndarray, int]]:
    """Yield (frame uint8 HxWx3, action index) pairs of one episode at rec.fps.

    The seeded sticky agent plays, or, given `actions`, they are replayed (the same frames again).
    """
    rng = np.random.default_rng([seed, episode])
    ale = _make_ale(rom_id(game), int(rng.integers(2**31 - 1)))
    action_set = ale.getMinimalActionSet()
    policy = iter(actions) if actions is not None else sticky_agent(rng, len(action_set), rec.sticky_prob)
    frameskip = ALE_HZ // rec.fps
    for _, action in zip(range(rec.max_frames), policy):
        yield ale.getScreenRGB(), int(action)
        for _ in range(frameskip):
            ale.act(action_set[action])
        if ale.game_over():
            return


@functools.cache  # loading a ROM once per game, not once per episode
def _action_names(game: str) -> tuple[str, ...]:
    return tuple(a.name for a in _make_ale(rom_id(game), 0).getMinimalActionSet())


def action_meanings(game: str) -> list[str]:
    return list(_action_names(game))


def _encode_command(out: Path, width: int, height: int, rec: RecorderParams) -> list[str]:
    return [
        ffmpeg_exe(), "-v", "error", "-y", "-nostdin",
        "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-r", str(rec.fps), "-i", "pipe:0",
        "-vf", "pad=ceil(iw/2)*2:ceil(ih/2)*2",  # yuv420p needs even sides
        "-c:v", "libx264", "-preset", "veryfast", "-crf", str(rec.crf), "-pix_fmt", "yuv420p",
        "-threads", "1",  # x264 with several threads is not bit-exact run to run
        "-fflags", "+bitexact", "-flags:v", "+bitexact", "-map_metadata", "-1",
        "-f", "mp4", str(out),
    ]  # fmt: skip


def record_episode(game: str, source: str, seed: int, episode: int, rec: RecorderParams, out_dir: Path) -> VideoEntry:
    """Record one episode to out_dir/<id>.mp4 and <id>.actions.npy (both appear complete or not at all)."""
    vid = episode_id(game, seed, episode)
    video, actions_path = out_dir / f"{vid}.mp4", out_dir / f"{vid}{ACTIONS_SUFFIX}"
    actions: list[int] = []
    with atomic_file(video) as tmp_video, atomic_file(actions_path) as tmp_actions:
        proc = None
        try:
            for frame, action in tqdm(
                play_episode(game, seed, episode, rec), total=rec.max_frames, desc=vid, unit="frame", leave=False
            ):
                if proc is None:
                    h, w = frame.shape[:2]
                    proc = subprocess.Popen(
                        _encode_command(tmp_video, w, h, rec), stdin=subprocess.PIPE, stderr=subprocess.PIPE
                    )
                proc.stdin.write(frame.tobytes())
                actions.append(action)
            proc.stdin.close()
            err = proc.stderr.read().decode(errors="replace")
            if proc.wait() != 0:
                raise RuntimeError(f"{vid}: ffmpeg failed to encode the recording: {err.strip()}")
        finally:
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
        with open(tmp_actions, "wb") as f:
            np.save(f, np.asarray(actions, dtype=np.int64), allow_pickle=False)
    meanings = action_meanings(game)
    return entry_for_file(
        video,
        id=vid,
        source=source,
        title=f"{game} episode {episode} (seed {seed}, sticky random agent)",
        extra={
            "actions_file": actions_path.name,
            "n_frames": len(actions),
            "n_actions": len(meanings),
            "action_meanings": meanings,
        },
    )


def record(game: str, source: str, seed: int, rec: RecorderParams, max_videos: int, out_dir: Path) -> Iterator[VideoEntry]:
    """Record min(rec.episodes, max_videos) episodes, yielding one manifest entry per episode."""
    rom_id(game)  # fail on an unknown game before any work
    for episode in range(min(rec.episodes, max_videos)):
        yield record_episode(game, source, seed, episode, rec, out_dir)
