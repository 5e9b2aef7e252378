"""FAR as a rollout host: the official FAR / FAR_Long transformers with their DCAE.

One frame is FAR's next-frame protocol: ``sampling_steps`` flow-matching Euler steps from noise, the
retained history as clean context (timestep -1). ``kv`` caches history frames during the next frame's
first denoising call; FAR_Long beyond its short-term window recomputes (no long-term cache).
``guidance_scale``: 1 = actions, -1 = null actions, > 1 = CFG. Details: docs/benchmark.md (FAR as host).
"""

from __future__ import annotations

import warnings

import torch
from diffusers import FlowMatchEulerDiscreteScheduler

from pipeline.hosts.far_weights import (
    SCHEDULER_CONFIG,
    VARIANTS,
    FarVariant,
    load_dcae,
    load_transformer,
)
from pipeline.networks.far import FAR, FarKVCache
from pipeline.rollout.api import FrameInfo, Mode
from pipeline.rollout.batch import OneRow


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

    def start_batch(self, mode: Mode, generators: list[torch.Generator]) -> "FarBatchSession":
        if mode not in ("recompute", "kv"):
            raise ValueError(f"unknown rollout mode {mode!r} (expected recompute or kv)")
        return FarBatchSession(self, mode, generators)


class FarBatchSession:
    """The retained histories of B rollouts (rows): latents and actions, plus one KV cache per row
    in kv mode. Per generated frame the rows' caches are stacked into one padded, masked cache
    (``FarKVCache.stack``); FAR_Long rows past their window run as separate groups."""

    def __init__(self, host: FarHost, mode: Mode, generators: list[torch.Generator]):
        self.host, self.mode, self.generators = host, mode, list(generators)
        self.rows = len(self.generators)
        self.cfg = host.model.cfg
        self.latents: list[list[torch.Tensor | None]] = [[] for _ in range(self.rows)]  # None: held as keys/values only
        self.actions: list[list[int]] = [[] for _ in range(self.rows)]
        self.caches = [host.model.new_cache() if mode == "kv" else None for _ in range(self.rows)]
        self.frame_shape: torch.Size | None = None
        self._warned = False
        self.last_attention: list[list[float] | None] = [None] * self.rows  # see attention_mass

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

    def append(self, frames) -> None:
        for b, row in enumerate(frames):
            for latent, info in row:
                self.latents[b].append(latent.to(self.host.device, self.host.dtype))
                self.frame_shape = latent.shape
                self.actions[b].append(self._action(info.action))

    def evict(self, keep) -> None:
        for b, k in enumerate(keep):
            if k is None:
                continue
            n = len(self.latents[b])
            if any(not 0 <= i < n for i in k) or sorted(set(k)) != list(k):
                raise IndexError(f"evict: keep={k} must be ascending indices of the {n} retained frames")
            cache = self.caches[b]
            if cache is not None:
                cache.evict([i for i in k if i < cache.n_frames])
            self.latents[b] = [self.latents[b][i] for i in k]
            self.actions[b] = [self.actions[b][i] for i in k]

    def attention_mass(self) -> list[list[float] | None]:
        """Per row, per retained frame: its share of the last frame's final denoising call's attention
        (mean over layers and heads); None before a generation."""
        return list(self.last_attention)

    def retained_bytes(self) -> list[int]:
        """Per row: latents held plus KV bytes (frames waiting for the cache count at their KV size;
        FAR_Long also keeps cached frames' latents, for its recompute fallback)."""
        def latent_bytes(frames):
            return sum(x.numel() * x.element_size() for x in frames if x is not None)

        out = []
        for b, cache in enumerate(self.caches):
            if cache is None or not self._fits_window(b):  # recompute (FAR_Long beyond its window too)
                out.append(latent_bytes(self.latents[b]))
                continue
            n = cache.n_frames
            pending = len(self.latents[b]) - n
            pending_kv = pending * self._kv_bytes_per_frame() if pending else 0
            out.append(latent_bytes(self.latents[b][:n]) + cache.nbytes() + pending_kv)
        return out

    def _kv_bytes_per_frame(self) -> int:
        h, w = self.frame_shape[-2:]
        tokens = (h // self.cfg.patch_size) * (w // self.cfg.patch_size)
        batch = 2 if self.host.guidance_scale > 1 else 1
        itemsize = torch.empty((), dtype=self.host.dtype).element_size()
        return 2 * self.cfg.num_layers * batch * tokens * self.cfg.inner_dim * itemsize

    # --- generation ---------------------------------------------------------------------------
    def _fits_window(self, b: int) -> bool:
        """Row b's history + the new frame fit the short-term window (always true for plain FAR)."""
        return not self.cfg.is_long or len(self.latents[b]) + 1 <= self.cfg.short_term_ctx_winsize

    def _use_cache(self, b: int) -> bool:
        if self.caches[b] is None:
            return False
        if self._fits_window(b):
            return True
        # FAR_Long past its window: the reference has no cache for the long-term path. Recompute
        # this frame; the frames go back to "pending" and re-enter the cache once the history fits.
        if not self._warned:
            warnings.warn(
                f"FAR_Long kv mode: history of {len(self.latents[b])} frames + the new one exceeds the short-term "
                f"window ({self.cfg.short_term_ctx_winsize}); those steps are recomputed (no long-term KV cache)",
                stacklevel=4,
            )
            self._warned = True
        if self.caches[b].n_frames:
            self.caches[b] = self.host.model.new_cache()
        return False

    @torch.no_grad()
    def generate(self, infos, noise: torch.Tensor | None = None) -> torch.Tensor:
        """Sample every row's next latent (B, C, h, w) from its retained history; ``noise``
        (B, C, h, w) overrides the draws. FAR positions its kept frames by their order (as the
        reference does), not by their time."""
        infos = list(infos)
        if any(not frames for frames in self.latents):
            raise ValueError("generate: the history is empty (append at least one context frame)")
        use_cache = [self._use_cache(b) for b in range(self.rows)]
        shape = self.frame_shape
        if noise is None:
            noise = torch.stack([torch.randn(shape, generator=g, dtype=torch.float32) for g in self.generators])
        groups: dict[tuple[bool, int], list[int]] = {}
        for b in range(self.rows):  # rows that share a path run together
            n_long = 0 if use_cache[b] or not self.cfg.is_long else max(
                0, len(self.latents[b]) + 1 - self.cfg.short_term_ctx_winsize)
            groups.setdefault((use_cache[b], n_long), []).append(b)
        out: list[torch.Tensor | None] = [None] * self.rows
        for (cached, _), members in groups.items():
            for b, z in zip(members, self._generate_group(members, cached, noise[members], infos)):
                out[b] = z
        return torch.stack(out)

    def _generate_group(self, members: list[int], use_cache: bool, noise: torch.Tensor, infos) -> list[torch.Tensor]:
        host, dev = self.host, self.host.device
        cfg_batch = host.guidance_scale > 1
        copies = 2 if cfg_batch else 1  # CFG: each row runs [null actions, actions], adjacent
        g = len(members)
        z = noise.reshape(g, 1, *self.frame_shape).to(dev, host.dtype)
        cache = None
        if use_cache:  # one row updates its own cache in place; several share a stacked copy
            cache = self.caches[members[0]] if g == 1 else FarKVCache.stack([self.caches[b] for b in members], copies)
        n_cached = [self.caches[b].n_frames for b in members] if use_cache else [0] * g
        actions = [self.actions[b] + [self._action(infos[b].action)] for b in members]
        null = self.cfg.null_action if host.uses_actions else 0
        scheduler = host.new_scheduler()
        final = len(scheduler.timesteps) - 1
        for i, t in enumerate(scheduler.timesteps):
            layers = [] if i == final else None  # where the final call's queries looked
            if use_cache:  # the first call also caches the frames appended since the last one
                frames = [self.latents[b][c:] if i == 0 else [] for b, c in zip(members, n_cached)]
            else:
                frames = [self.latents[b] for b in members]
            counts = [len(f) + 1 for f in frames]  # + the noisy frame, last
            length = max(counts)
            pad = z.new_zeros(self.frame_shape)
            x = torch.stack([torch.stack(f + [z[j, 0]] + [pad] * (length - counts[j])) for j, f in enumerate(frames)])
            ts = torch.full((g, length), -1.0, device=dev)
            ts[torch.arange(g), torch.tensor(counts) - 1] = t
            a = None
            if host.uses_actions:  # each frame's own action, then padding as the null action
                a = torch.tensor([acts[len(acts) - c:] + [null] * (length - c) for acts, c in zip(actions, counts)],
                                 device=dev)
                if cfg_batch:  # [null actions, actions] per row, as the reference's CFG
                    a = torch.stack([torch.full_like(a, null), a], dim=1).flatten(0, 1)
            if cfg_batch:
                x, ts = x.repeat_interleave(2, dim=0), ts.repeat_interleave(2, dim=0)
            ragged = len(set(counts)) > 1 or (cache is not None and len(set(cache.row_frames or [0])) > 1)
            rows = [c for c in counts for _ in range(copies)] if ragged else None
            cache_frames = [c - 1 for c in counts for _ in range(copies)] if use_cache and i == 0 else 0
            v = host.model(
                x, ts, actions=a,
                cache=cache,
                cache_frames=(cache_frames if ragged else (counts[0] - 1 if use_cache and i == 0 else 0)),
                attention=layers,
                rows=rows,
            ).float()
            last = torch.tensor([c - 1 for c in counts for _ in range(copies)], device=v.device)
            v = v[torch.arange(len(last), device=v.device), last][:, None]  # each row's noisy frame
            if layers:
                shares = layers[0].reshape(g, copies, -1)[:, -1].cpu()  # the conditioned copy
                for j, b in enumerate(members):
                    self.last_attention[b] = shares[j, : len(self.latents[b])].tolist()  # without the new frame
            if cfg_batch:
                v = v.reshape(g, 2, *v.shape[1:])
                v = v[:, 0] + host.guidance_scale * (v[:, 1] - v[:, 0])
            z = scheduler.step(v.to(z.dtype), t, z).prev_sample
        if use_cache:
            for b, mine in zip(members, [cache] if g == 1 else cache.split([copies] * g)):
                self.caches[b] = mine
                if not self.cfg.is_long:
                    # cached frames live on as keys/values only (FAR_Long keeps latents for its fallback)
                    self.latents[b] = [None] * mine.n_frames + self.latents[b][mine.n_frames:]
        return list(z[:, 0].float())


class FarSession(OneRow):
    """One rollout's session: a batch of one, exposing its latents, actions and cache."""

    def __init__(self, host: FarHost, mode: Mode, generator: torch.Generator):
        super().__init__(FarBatchSession(host, mode, [generator]))

    @property
    def cache(self):
        return self.batch.caches[0]

    @property
    def latents(self) -> list:
        return self.batch.latents[0]

    @property
    def actions(self) -> list[int]:
        return self.batch.actions[0]

    def generate(self, info: FrameInfo, noise: torch.Tensor | None = None) -> torch.Tensor:
        return self.batch.generate([info], None if noise is None else noise[None])[0]


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
