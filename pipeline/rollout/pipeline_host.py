"""The rollout host for this pipeline's own models: the tokenizer and the dynamics transformer.

Generation of one frame is K shortcut Euler steps (``ShortcutEulerSampler``) of the new frame
at its time in the clip, with its action and pose, the retained history attending as context
at noise level tau_ctx:

- ``recompute``: for every generated frame the whole retained history is re-run through the
  model from its latents, each at its own time in the clip (one batched pass that the K
  denoising calls share), as the ar-video-kv-temporal-policy harness re-runs its kept latents
  (it re-indexes them 0..n-1; the model here was trained on gapped histories at their own times);
- ``kv``: each history frame is run once when it enters (``step(..., append=True)`` stores its
  keys/values), denoising calls only run the new frame against the cache, and eviction removes
  keys/values (``KVCache.evict``): nothing is recomputed, and the survivors keep their absolute
  time positions and the keys/values they got while evicted frames were still there.

The model is block-causal, so history frames never see the new frame: under full history the two
modes compute the same thing. Context corruption is drawn once per frame, when it enters the
history, so both modes see identical noisy context.
"""

from __future__ import annotations

from pathlib import Path

import torch

from pipeline.diffusion.sampler import ShortcutEulerSampler
from pipeline.networks.dynamics import KIND as DYNAMICS_KIND
from pipeline.networks.dynamics import build_dynamics
from pipeline.networks.tokenizer import KIND as TOKENIZER_KIND
from pipeline.networks.tokenizer import build_tokenizer
from pipeline.rollout.api import FrameInfo, Mode
from pipeline.training.checkpoint import load_trained


class PipelineHost:
    """``RolloutHost`` over a tokenizer (encode/decode) and a DynamicsTransformer."""

    def __init__(self, tokenizer, dynamics, sampler: ShortcutEulerSampler, device: torch.device | str = "cpu"):
        self.tokenizer = tokenizer.eval()
        self.dynamics = dynamics.eval()
        self.sampler = sampler
        self.device = torch.device(device)
        k_max = int(dynamics.config.k_max)
        if sampler.steps > k_max:
            raise ValueError(f"{sampler.steps} sampling steps need shortcut steps below 1/k_max = 1/{k_max}")
        self.d_context = 1.0 / k_max  # context frames are (nearly) clean: the finest step size
        self.uses_actions = int(getattr(dynamics.config, "n_actions", 0) or 0) > 0
        self.uses_poses = bool(getattr(dynamics.config, "pose_conditioning", False))

    @classmethod
    def load(cls, tokenizer_dir: str | Path, dynamics_dir: str | Path, sampling_steps: int, tau_ctx: float,
             device: torch.device | str = "cpu") -> "PipelineHost":
        tokenizer = load_trained(tokenizer_dir, TOKENIZER_KIND, build_tokenizer, device)
        dynamics = load_trained(dynamics_dir, DYNAMICS_KIND, build_dynamics, device)
        return cls(tokenizer, dynamics, ShortcutEulerSampler(sampling_steps, tau_ctx), device)

    @torch.no_grad()
    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.tokenizer.encode(pixels.to(self.device)).float()

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return self.tokenizer.decode(latents.to(self.device)).float().clamp(0, 1)

    def start(self, mode: Mode, generator: torch.Generator):
        if mode == "recompute":
            return RecomputeSession(self, generator)
        if mode == "kv":
            return KVSession(self, generator)
        raise ValueError(f"unknown rollout mode {mode!r} (expected recompute or kv)")

    def action_tensor(self, infos: list[FrameInfo]) -> torch.Tensor | None:
        """(1, T) long for the model, -1 = no action; None when the model takes no actions."""
        if not self.uses_actions:
            return None
        return torch.tensor([[-1 if f.action is None else f.action for f in infos]], device=self.device, dtype=torch.long)

    def pose_tensor(self, infos: list[FrameInfo]) -> torch.Tensor | None:
        """(1, T, 3) for a pose-conditioned model (NaN rows: no pose); None otherwise."""
        if not self.uses_poses:
            return None
        nan = (float("nan"),) * 3
        return torch.tensor([[nan if f.pose is None else f.pose for f in infos]], device=self.device, dtype=torch.float32)


class RecomputeSession:
    """History kept as (corrupted) latents; every generated frame re-runs them all as context.

    The context pass is shared by the K denoising calls of one frame: the model is block-causal,
    so context frames never see the noisy frame and re-running them per call would compute the
    same keys/values K times (the ar-video-kv-temporal-policy harness did; the result is
    identical, K times slower).
    """

    def __init__(self, host: PipelineHost, generator: torch.Generator):
        self.host, self.generator = host, generator
        self.latents: list[torch.Tensor] = []
        self.infos: list[FrameInfo] = []
        self.last_attention: list[float] | None = None

    def append(self, latent: torch.Tensor, info: FrameInfo) -> None:
        x = self.host.dynamics.normalize(latent.to(self.host.device, torch.float32))  # the model's latent space
        self.latents.append(self.host.sampler.corrupt(x, self.generator))
        self.infos.append(info)

    def evict(self, keep: list[int]) -> None:
        self.latents = [self.latents[i] for i in keep]
        self.infos = [self.infos[i] for i in keep]

    @torch.no_grad()
    def generate(self, info: FrameInfo) -> torch.Tensor:
        # A fresh cache from the kept latents, at their own times: nothing survives from the
        # previous frame, so evicted frames leave no trace in the survivors' keys/values.
        host = self.host
        context = KVSession(host, self.generator)
        n = len(self.latents)
        host.dynamics.prefill(  # one batched pass, the same keys/values as n appends (tested)
            context.cache, torch.stack(self.latents)[None],
            torch.full((1, n), host.sampler.tau_ctx, device=host.device),
            torch.full((1, n), host.d_context, device=host.device),
            host.action_tensor(self.infos), host.pose_tensor(self.infos), [f.time for f in self.infos],
        )
        context.shape = tuple(self.latents[0].shape)
        out = context.generate(info)
        self.last_attention = context.last_attention
        return out

    def attention_mass(self) -> list[float] | None:
        """As :meth:`KVSession.attention_mass`, for the history just re-run."""
        return self.last_attention

    def retained_bytes(self) -> int:
        return sum(x.numel() * x.element_size() for x in self.latents)


class KVSession:
    """History kept as the dynamics model's KV cache; eviction removes keys/values."""

    def __init__(self, host: PipelineHost, generator: torch.Generator):
        self.host, self.generator = host, generator
        self.cache = host.dynamics.new_cache(1)
        self.shape: tuple[int, ...] = ()  # (C, h, w) of the frames, known once one is appended
        self.last_attention: list[float] | None = None  # see attention_mass

    def _vec(self, value: float) -> torch.Tensor:
        return torch.full((1,), value, device=self.host.device)

    def _conditioning(self, info: FrameInfo) -> dict:
        """The model's per-frame inputs besides the latent: action, pose, time."""
        acts, poses = self.host.action_tensor([info]), self.host.pose_tensor([info])
        return {"action": None if acts is None else acts[0], "pose": None if poses is None else poses[0, 0],
                "time": info.time}

    def append(self, latent: torch.Tensor, info: FrameInfo) -> None:
        x = self.host.dynamics.normalize(latent.to(self.host.device, torch.float32))  # the model's latent space
        self.append_corrupted(self.host.sampler.corrupt(x, self.generator), info)

    @torch.no_grad()
    def append_corrupted(self, x: torch.Tensor, info: FrameInfo) -> None:
        """Run one context frame (already at tau_ctx) and keep its keys/values."""
        host = self.host
        self.shape = tuple(x.shape)
        host.dynamics.step(self.cache, x[None], self._vec(host.sampler.tau_ctx), self._vec(host.d_context),
                           append=True, **self._conditioning(info))

    def evict(self, keep: list[int]) -> None:
        self.cache.evict(keep)

    @torch.no_grad()
    def generate(self, info: FrameInfo) -> torch.Tensor:
        host = self.host
        conditioning = self._conditioning(info)
        calls = iter(range(host.sampler.steps, 0, -1))

        def denoise(z: torch.Tensor, tau: float, d: float) -> torch.Tensor:
            final = next(calls) == 1
            layers = [] if final else None  # where the final call's queries looked, for attention_mass
            x0 = host.dynamics.step(self.cache, z[None], self._vec(tau), self._vec(d), append=False,
                                    attention=layers, **conditioning)[0]
            if final:
                self.last_attention = torch.stack(layers).mean(dim=0)[0, :-1].tolist()  # mean over layers, without itself
            return x0

        return host.dynamics.denormalize(host.sampler.sample(denoise, self.shape, self.generator, host.device))

    def attention_mass(self) -> list[float] | None:
        """Per retained frame (oldest first): the share of the temporal attention of the last
        generated frame's final denoising call that landed on it, mean over layers and heads
        (and token positions); the rest went to the new frame itself. None before a generation."""
        return self.last_attention

    def retained_bytes(self) -> int:
        return int(self.cache.nbytes())
