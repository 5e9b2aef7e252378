"""FAR as a rollout host: the official FAR / FAR_Long transformers with their DCAE.

Generation of one frame is FAR's next-frame protocol (``FARPipeline.generate`` of the
reference): the new frame starts from Gaussian noise and takes ``sampling_steps`` Euler steps of
diffusers' ``FlowMatchEulerDiscreteScheduler``; at every step the model sees the retained
history as clean context (timestep -1) and predicts the velocity of the new frame.

- ``recompute``: every denoising call re-runs the whole retained history (as the
  ar-video-kv-temporal-policy harness);
- ``kv``: history frames enter the KV cache once, together with the first denoising call of the
  next frame (as the reference's cache step), later calls run only the new frame, and eviction
  drops the frames' keys/values: nothing is recomputed.

FAR_Long sends frames older than its short-term window (16) through the coarse long-term path,
which the reference has no KV cache for: while history + new frame fit the window, ``kv`` works
as above; beyond it the session recomputes that frame from the kept latents (warned once).

Actions (FAR_Long on DMLab): each frame carries the action recorded at that frame (the loop
passes the actions of the frames it actually keeps); ``None`` or -1 becomes the null action.
``guidance_scale``: 1 = conditioned on the actions, -1 = every action null (the reference's
unconditional mode), > 1 = classifier-free guidance against the null actions.
"""

from __future__ import annotations

import warnings

import torch
from diffusers import FlowMatchEulerDiscreteScheduler

from pipeline.far.model import FAR
from pipeline.far.weights import (
    SCHEDULER_CONFIG,
    VARIANTS,
    FarVariant,
    load_dcae,
    load_transformer,
)
from pipeline.rollout.api import FrameInfo, Mode


class FarHost:
    """``RolloutHost`` over a FAR transformer and an ``AutoencoderDC``."""

    def __init__(self, transformer: FAR, vae, *, sampling_steps: int = 20, guidance_scale: float = 1.0,
                 resolution: int | None = None, encode_batch: int = 16):
        self.model = transformer.eval()
        self.vae = vae.eval()
        self.sampling_steps = sampling_steps
        self.guidance_scale = float(guidance_scale)
        self.resolution = resolution
        self.encode_batch = encode_batch
        self.scaling = float(vae.config.scaling_factor)
        p = next(self.model.parameters())
        self.device, self.dtype = p.device, p.dtype
        self.uses_actions = self.model.cfg.condition_type == "action"
        if self.guidance_scale != 1.0 and not self.uses_actions:
            raise ValueError(f"guidance_scale {guidance_scale} needs an action-conditioned FAR (FAR_Long on DMLab)")
        if not (self.guidance_scale in (1.0, -1.0) or self.guidance_scale > 1.0):
            raise ValueError(f"guidance_scale must be 1, -1 (null actions) or > 1 (CFG), got {guidance_scale}")

    def new_scheduler(self) -> FlowMatchEulerDiscreteScheduler:
        scheduler = FlowMatchEulerDiscreteScheduler.from_config(SCHEDULER_CONFIG)
        scheduler.set_timesteps(self.sampling_steps)
        return scheduler

    @torch.no_grad()
    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """(T, 3, H, W) in [0, 1] -> scaled latents (T, C, H/8, W/8), float32 on the host device."""
        h, w = pixels.shape[-2:]
        if self.resolution is not None and (h, w) != (self.resolution, self.resolution):
            raise ValueError(
                f"FAR host expects {self.resolution}x{self.resolution} frames (its DCAE and transformer were "
                f"trained at that size), got {h}x{w}: extract at extract.size: {self.resolution}"
            )
        out = []
        for chunk in pixels.split(self.encode_batch):
            x = chunk.to(self.device, self.dtype) * 2 - 1
            out.append(self.vae.encode(x).latent.float() * self.scaling)
        return torch.cat(out)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Scaled latents (T, C, h, w) -> pixels (T, 3, H, W) in [0, 1], float32."""
        out = []
        for chunk in latents.split(self.encode_batch):
            x = self.vae.decode((chunk / self.scaling).to(self.device, self.dtype)).sample
            out.append((x.float() / 2 + 0.5).clamp(0, 1))
        return torch.cat(out)

    def start(self, mode: Mode, generator: torch.Generator) -> "FarSession":
        if mode not in ("recompute", "kv"):
            raise ValueError(f"unknown rollout mode {mode!r} (expected recompute or kv)")
        return FarSession(self, mode, generator)


class FarSession:
    """The retained history of one rollout: latents and actions, plus the KV cache in kv mode."""

    def __init__(self, host: FarHost, mode: Mode, generator: torch.Generator):
        self.host, self.mode, self.generator = host, mode, generator
        self.cfg = host.model.cfg
        self.latents: list[torch.Tensor | None] = []  # None: held only as keys/values in the cache
        self.actions: list[int] = []
        self.cache = host.model.new_cache() if mode == "kv" else None
        self.frame_shape: torch.Size | None = None
        self._warned = False
        self.last_attention: list[float] | None = None  # see attention_mass

    # --- history ------------------------------------------------------------------------------
    def _action(self, action: int | None) -> int:
        if not self.host.uses_actions:
            return 0
        null = self.cfg.null_action
        if action is None or action < 0 or self.host.guidance_scale == -1.0:  # -1: no recorded action
            return null
        if not 0 <= int(action) < null:
            raise ValueError(f"action {action} outside 0..{null - 1} of {self.cfg.condition_cfg}")
        return int(action)

    def append(self, latent: torch.Tensor, info: FrameInfo) -> None:
        self.latents.append(latent.to(self.host.device, self.host.dtype))
        self.frame_shape = latent.shape
        self.actions.append(self._action(info.action))

    def evict(self, keep: list[int]) -> None:
        n = len(self.latents)
        if any(not 0 <= i < n for i in keep) or sorted(set(keep)) != list(keep):
            raise IndexError(f"evict: keep={keep} must be ascending indices of the {n} retained frames")
        if self.cache is not None:
            self.cache.evict([i for i in keep if i < self.cache.n_frames])
        self.latents = [self.latents[i] for i in keep]
        self.actions = [self.actions[i] for i in keep]

    def attention_mass(self) -> list[float] | None:
        """Per retained frame (oldest first): the share of the attention of the last generated
        frame's final denoising call (its queries, mean over layers and heads) that landed on
        the frame's tokens; None before a generation."""
        return self.last_attention

    def retained_bytes(self) -> int:
        """Latents held plus KV bytes; frames waiting for the cache count at their KV size.

        In kv mode plain FAR holds cached frames as keys/values only; FAR_Long also keeps their
        latents (for the recompute beyond its window), and they count.
        """
        def latent_bytes(frames):
            return sum(x.numel() * x.element_size() for x in frames if x is not None)

        if self.cache is None or not self._fits_window():  # recompute (FAR_Long beyond its window too)
            return latent_bytes(self.latents)
        n = self.cache.n_frames
        pending = len(self.latents) - n
        pending_kv = pending * self._kv_bytes_per_frame() if pending else 0
        return latent_bytes(self.latents[:n]) + self.cache.nbytes() + pending_kv

    def _kv_bytes_per_frame(self) -> int:
        h, w = self.frame_shape[-2:]
        tokens = (h // self.cfg.patch_size) * (w // self.cfg.patch_size)
        batch = 2 if self.host.guidance_scale > 1 else 1
        itemsize = torch.empty((), dtype=self.host.dtype).element_size()
        return 2 * self.cfg.num_layers * batch * tokens * self.cfg.inner_dim * itemsize

    # --- generation ---------------------------------------------------------------------------
    def _fits_window(self) -> bool:
        """History + the new frame fit the short-term window (always true for plain FAR)."""
        return not self.cfg.is_long or len(self.latents) + 1 <= self.cfg.short_term_ctx_winsize

    def _use_cache(self) -> bool:
        if self.cache is None:
            return False
        if self._fits_window():
            return True
        # FAR_Long past its window: the reference has no cache for the long-term path. Recompute
        # this frame; the frames go back to "pending" and re-enter the cache once the history fits.
        if not self._warned:
            warnings.warn(
                f"FAR_Long kv mode: history of {len(self.latents)} frames + the new one exceeds the short-term "
                f"window ({self.cfg.short_term_ctx_winsize}); those steps are recomputed (no long-term KV cache)",
                stacklevel=4,
            )
            self._warned = True
        if self.cache.n_frames:
            self.cache = self.host.model.new_cache()
        return False

    @torch.no_grad()
    def generate(self, info: FrameInfo, noise: torch.Tensor | None = None) -> torch.Tensor:
        """Sample the next latent (C, h, w) from the retained history; ``noise`` overrides the draw.
        FAR positions its kept frames by their order (as the reference does), not by their time."""
        action = info.action
        if not self.latents:
            raise ValueError("generate: the history is empty (append at least one context frame)")
        host, dev = self.host, self.host.device
        shape = self.frame_shape
        use_cache = self._use_cache()
        if noise is None:
            noise = torch.randn(shape, generator=self.generator, dtype=torch.float32)
        z = noise.reshape(1, 1, *shape).to(dev, host.dtype)
        actions = self.actions + [self._action(action)]

        cfg_batch = host.guidance_scale > 1
        scheduler = host.new_scheduler()
        n_cached = self.cache.n_frames if use_cache else 0
        # The actions are those of the whole frame: on the device once, not once per step.
        all_actions = torch.tensor([actions], device=dev) if host.uses_actions else None
        if cfg_batch and all_actions is not None:  # [null actions, actions], as the reference's CFG
            all_actions = torch.cat([torch.full_like(all_actions, self.cfg.null_action), all_actions])
        final = len(scheduler.timesteps) - 1
        for i, t in enumerate(scheduler.timesteps):
            layers = [] if i == final else None  # where the final call's queries looked
            if use_cache:  # the first call also caches the frames appended since the last one
                frames = self.latents[n_cached:] if i == 0 else []
                acts = slice(n_cached, None) if i == 0 else slice(-1, None)
            else:
                frames, acts = self.latents, slice(None)
            x = torch.stack(frames + [z[0, 0]])[None]
            ts = torch.full((1, x.shape[1]), -1.0, device=dev)
            ts[:, -1] = t
            a = None if all_actions is None else all_actions[:, acts]
            if cfg_batch:
                x, ts = x.repeat(2, 1, 1, 1, 1), ts.repeat(2, 1)
            v = host.model(
                x, ts, actions=a,
                cache=self.cache if use_cache else None,
                cache_frames=len(frames) if use_cache else 0,
                attention=layers,
            )[:, -1:].float()
            if layers:
                self.last_attention = layers[0][-1, :-1].tolist()  # the conditioned row; without the new frame
            if cfg_batch:
                v_null, v_cond = v.chunk(2)
                v = v_null + host.guidance_scale * (v_cond - v_null)
            z = scheduler.step(v.to(z.dtype), t, z).prev_sample
        if use_cache and not self.cfg.is_long:
            # cached frames live on as keys/values only (FAR_Long keeps latents for its fallback)
            self.latents = [None] * self.cache.n_frames + self.latents[self.cache.n_frames:]
        return z[0, 0].float()


def load_far_host(far_params, device: torch.device | str = "cpu", variant: FarVariant | None = None) -> FarHost:
    """The FAR host of ``benchmark.far`` params (variant, weights_dir, sampling_steps, ...)."""
    variant = variant or VARIANTS[far_params.variant]
    kwargs = dict(weights_dir=far_params.weights_dir, allow_hub_download=far_params.allow_hub_download, device=device)
    transformer = load_transformer(variant, **kwargs)
    vae = load_dcae(variant, **kwargs)
    return FarHost(
        transformer,
        vae,
        sampling_steps=far_params.sampling_steps,
        guidance_scale=far_params.guidance_scale,
        resolution=variant.resolution,
    )
