"""One person playing: the game and the world model stepped with the same action, the model's
history managed by a retention policy under a frame budget (the benchmark's loop, kv mode, one
row, its sampler and noise), and what was played kept for a recording.
"""

from __future__ import annotations

import base64
import io
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image

from pipeline.benchmark.clips import Clip, select_clips
from pipeline.benchmark.run import sampling_generator
from pipeline.config import Params
from pipeline.data.stores import list_videos, read_actions
from pipeline.paths import FRAMES, LATENTS
from pipeline.play.game import PlayedGame, PlayError, key_actions
from pipeline.rollout.loop import Rollouts
from pipeline.rollout.policies import load_policy

HORIZON = 10_000  # RolloutState.total_steps of a played rollout: it has no planned end


def to_uint8(pixels: torch.Tensor) -> np.ndarray:
    """float (3, H, W) in [0, 1] -> uint8 (H, W, 3)."""
    return (pixels.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()


def png_data_url(frame: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


@dataclass
class Played:
    """What a recording holds: the clip it started from, and per step the action and the policy and
    budget it ran under, with both frames."""

    clip: int
    steps: list[dict] = field(default_factory=list)  # {"action", "policy", "budget"}
    game: list[np.ndarray] = field(default_factory=list)  # uint8 (H, W, 3), the game after each action
    model: list[np.ndarray] = field(default_factory=list)  # uint8 (H, W, 3), the model's frame


class PlaySession:
    """Reset to a test clip's context, then :meth:`act` per key; :meth:`view` is what the page draws."""

    def __init__(self, params: Params, host, workload: str, policy: str, budget: int | None, sample_seed: int = 0):
        bench = params.benchmark
        if workload not in bench.workloads:
            raise PlayError(f"--workload {workload!r}: no such benchmark workload (have {', '.join(bench.workloads)})")
        w = bench.workloads[workload]
        self.params, self.host, self.sample_seed = params, host, sample_seed
        self.clips: list[Clip] = select_clips(FRAMES, LATENTS, w.context, w.predict, bench.n_clips, params.seed)
        self.attrs = {v.id: v.attrs for v in list_videos(FRAMES, split="test")}
        self.budgets = {name: b for name, b in bench.budgets.items()}
        self.policy_names = list(dict.fromkeys([policy, *bench.policies]))
        self.policy_spec, self.budget = policy, budget
        self.game: PlayedGame | None = None
        self.played: Played | None = None
        self.recording = False
        self.frame_ms = 0.0
        self.reset(0)

    # -- driving ---------------------------------------------------------------------------------------
    def reset(self, clip: int) -> None:
        """The context of test clip `clip` as the model's history, the game at the same frame."""
        if not 0 <= clip < len(self.clips):
            raise PlayError(f"clip {clip}: there are {len(self.clips)} test clips (0..{len(self.clips) - 1})")
        c = self.clips[clip]
        attrs = self.attrs[c.video_id]
        if self.game is not None:
            self.game.close()
            self.game = None
        game = PlayedGame(attrs, self.params)
        try:
            n_ctx = len(c.context_latents)
            last = c.start + n_ctx - 1  # the clip's last context frame, in the video
            game.replay_to(last, read_actions(FRAMES, c.video_id, 0, last), None if c.poses is None else c.poses[n_ctx - 1])
        except BaseException:
            game.close()
            raise
        self.game, self.clip = game, clip
        self.policy = load_policy(self.policy_spec)  # a fresh one: policies may hold state across frames
        self.keys = key_actions(game.action_meanings)
        self.actions = [int(a) for a in c.actions[:n_ctx]] if c.actions is not None else None
        self.poses = [tuple(map(float, p)) for p in c.poses[:n_ctx]] if c.poses is not None else None
        self.rollouts = Rollouts(self.host, [self.policy], [c.context_latents], max_frames=self.budget, mode="kv",
                                 generators=[sampling_generator(self.params.seed, self.sample_seed, clip)],
                                 actions=[self.actions], poses=[self.poses], total_steps=HORIZON)
        self.frames = {t: to_uint8(c.pixels[t]) for t in range(n_ctx)}  # clip time -> what the model saw or made
        self.thumbs: dict[int, str] = {}  # clip time -> its PNG data URL, encoded once
        self.game_frame = game.observe()[0]
        self.model_frame = self.frames[n_ctx - 1]
        self.dropped: list[int] = []
        if self.recording:
            self.played = Played(clip)

    def act(self, action: int) -> None:
        """One frame: the game takes `action`, the model generates the frame it leads to from its
        retained history (the game's pose conditions it), the policy having chosen that history."""
        self.game.act(action)
        self.game_frame, pose = self.game.observe()
        if self.actions is not None:
            self.actions.append(action)
        if self.poses is not None:
            self.poses.append(tuple(map(float, pose)))
        row = self.rollouts.rows[0]
        before = [rec.time for rec in row.kept_rec + row.new_rec]
        t0 = time.perf_counter()
        latent = self.rollouts.step()
        self.model_frame = to_uint8(self.host.decode(latent)[0])
        self.frame_ms = (time.perf_counter() - t0) * 1000
        kept = {rec.time for rec in row.kept_rec}
        self.dropped = ([t for t in before if t not in kept] + self.dropped)[:16]
        t_new = len(row.context) + self.rollouts.steps_done - 1
        self.frames[t_new] = self.model_frame
        shown = {rec.time for rec in row.kept_rec + row.new_rec} | set(self.dropped)
        self.frames = {t: f for t, f in self.frames.items() if t in shown}  # memory stays flat however long one plays
        self.thumbs = {t: url for t, url in self.thumbs.items() if t in shown}
        if self.played is not None:
            self.played.steps.append({"action": action, "policy": self.policy_spec, "budget": self.budget})
            self.played.game.append(self.game_frame)
            self.played.model.append(self.model_frame)

    def press(self, key: str) -> None:
        if key not in self.keys:
            raise PlayError(f"key {key!r} plays nothing here (keys: {', '.join(repr(k) for k in self.keys)})")
        self.act(self.keys[key])

    def configure(self, policy: str | None = None, budget: int | None | str = "unchanged") -> None:
        """Switch the policy and/or the frame budget (None: unlimited) from the next frame on."""
        if policy is not None and policy != self.policy_spec:
            self.policy = load_policy(policy)
            self.policy_spec = policy
            self.rollouts.rows[0].policy, self.rollouts.rows[0].name = self.policy, self.policy.name
        if budget != "unchanged":
            if budget is not None and (not isinstance(budget, int) or budget < 1):
                raise PlayError(f"budget {budget!r}: a number of frames >= 1, or none (unlimited)")
            self.budget = budget
            self.rollouts.rows[0].set_budget(budget)

    def start_recording(self) -> None:
        """Record from a fresh reset of the current clip (so that a replay starts from the same noise)."""
        self.recording = True
        self.reset(self.clip)

    def stop_recording(self) -> Played:
        played, self.played, self.recording = self.played, None, False
        return played

    # -- what the page draws ------------------------------------------------------------------------
    def view(self) -> dict:
        row = self.rollouts.rows[0]
        c = self.clips[self.clip]
        return {
            "clip": self.clip, "n_clips": len(self.clips), "video": c.video_id, "start": c.start,
            "step": self.rollouts.steps_done, "frame_ms": round(self.frame_ms, 1),
            "policy": self.policy_spec, "policies": self.policy_names,
            "budget": self.budget, "budgets": self.budgets,
            "keys": {k: self.game.action_meanings[a] for k, a in self.keys.items()},
            "game": png_data_url(self.game_frame), "model": png_data_url(self.model_frame),
            "retained": [{"t": rec.time, "img": self.thumb(rec.time)} for rec in row.kept_rec],
            "newest": len(row.context) + self.rollouts.steps_done - 1,
            "dropped": [{"t": t, "img": self.thumb(t)} for t in self.dropped],
            "recording": self.recording,
        }

    def thumb(self, t: int) -> str:
        if t not in self.thumbs:
            self.thumbs[t] = png_data_url(self.frames[t])
        return self.thumbs[t]

    def close(self) -> None:
        if self.game is not None:
            self.game.close()
            self.game = None
