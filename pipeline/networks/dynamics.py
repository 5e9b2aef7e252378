"""The dynamics model: a block-causal transformer over latent frames, DreamerV4 style (docs/models.md).

A frame is N = S + R + 2 tokens: [S patch tokens | R registers | (tau, d) token | action token]; spatial
blocks attend within a frame (2D RoPE), temporal blocks causally across frames (1D RoPE on frame time).
x-prediction in a normalised latent space (``normalize``); tau = 0 clean, 1 noise, z_tau = (1 - tau) x0 +
tau eps; d in (0, 1] the shortcut step; ``actions[:, t]`` led to frame t (< 0 or None: no action).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING

import torch
from einops import rearrange, repeat
from torch import nn

from pipeline.networks.kv_cache import KVCache, extend_frames, gather_rows, row_lists
from pipeline.networks.layers import Attention, RMSNorm, SwiGLU, append_index, pack, rope_1d, rope_2d, unpack
from pipeline.networks.pose_memory import POSE_FEATURES, PoseRecall, PoseStats, TemporalBias, pose_features

if TYPE_CHECKING:
    from pipeline.config import ModelParams

KIND = "dynamics"


@dataclass(frozen=True)
class DynamicsConfig:
    """What a dynamics model is built from; its checkpoint stores it as a dict (:func:`dynamics_config`)."""

    latent_channels: int
    latent_height: int
    latent_width: int
    n_actions: int  # 0 = the data has no actions
    dim: int
    depth: int
    heads: int
    kv_heads: int
    patch_size: int
    num_registers: int
    temporal_every: int
    mlp_ratio: float
    logit_softcap: float
    k_max: int
    latent_mean: float  # normalisation of the tokenizer latents (from the train split)
    latent_std: float
    temporal_first: bool  # the first block is temporal (else spatial)
    pose_conditioning: bool  # frames carry the agent's pose (the params ask for it and the data has it)
    pose_center: tuple[float, float]  # mean (x, y) of the train split's poses
    pose_step: float  # the typical distance the agent moves between frames (median of the moves)
    pose_bias: float  # initial rates of the pose bias (0: none)
    clean_bias: float  # initial rate of the clean-context bias (0: none)
    pose_recall: float  # initial rate of the pose recall (0: none; needs poses)

    @property
    def grid(self) -> tuple[int, int]:
        return self.latent_height // self.patch_size, self.latent_width // self.patch_size

    @property
    def tokens_per_frame(self) -> int:
        gh, gw = self.grid
        return gh * gw + self.num_registers + 2


def dynamics_config(model: ModelParams, latent_shape, *, n_actions: int, latent_mean: float = 0.0,
                    latent_std: float = 1.0, poses: PoseStats | None = None) -> DynamicsConfig:
    """The config from the `model` params, the latent shape (C, h, w), the action count, latent statistics
    (mean 0, std 1: none) and pose statistics (None: no poses, so no pose conditioning)."""
    c, h, w = latent_shape
    section = model.model_dump()
    wants_pose = section.pop("pose_conditioning")
    recall_rate = section.pop("pose_recall")
    stats = poses or PoseStats()
    return DynamicsConfig(latent_channels=c, latent_height=h, latent_width=w, n_actions=n_actions,
                          latent_mean=latent_mean, latent_std=latent_std,
                          pose_conditioning=bool(wants_pose and poses is not None),
                          pose_center=tuple(stats.center), pose_step=stats.step,
                          pose_recall=recall_rate if wants_pose and poses is not None else 0.0, **section)


def _check_shapes(cfg: DynamicsConfig) -> None:
    """What the model cannot be built without: whole patches, a positive latent scale."""
    p = cfg.patch_size
    if cfg.latent_height % p or cfg.latent_width % p:
        raise ValueError(f"model.patch_size {p} does not divide the latent grid {cfg.latent_height}x{cfg.latent_width}")
    if not cfg.latent_std > 0:
        raise ValueError(f"latent_std must be > 0, got {cfg.latent_std}")
    if not cfg.pose_step > 0:
        raise ValueError(f"pose_step must be > 0, got {cfg.pose_step}")


def _fourier(values: torch.Tensor, dim: int, scale: float) -> torch.Tensor:
    """Sinusoidal features of scalars (DiT's timestep embedding)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10_000.0) * torch.arange(half, device=values.device) / half)
    args = values.float()[..., None] * scale * freqs
    return torch.cat([args.cos(), args.sin()], dim=-1)


class Block(nn.Module):
    """Pre-norm attention + SwiGLU; attends within a frame (spatial) or across frames (temporal)."""

    def __init__(self, cfg: DynamicsConfig, temporal: bool, first_temporal: bool = False):
        super().__init__()
        self.temporal = temporal
        pose_bias = cfg.pose_bias if cfg.pose_conditioning else 0.0
        wanted = temporal and (pose_bias > 0 or cfg.clean_bias > 0)
        self.bias = TemporalBias(cfg.heads, cfg.pose_step, pose_bias, cfg.clean_bias, first_temporal) if wanted else None
        hidden = 8 * math.ceil(cfg.mlp_ratio * cfg.dim * 2 / 3 / 8)  # SwiGLU: 2/3 of the MLP width
        self.attn_norm = RMSNorm(cfg.dim)
        self.attn = Attention(cfg.dim, cfg.heads, cfg.kv_heads, cfg.logit_softcap)
        self.mlp_norm = RMSNorm(cfg.dim)
        self.mlp = SwiGLU(cfg.dim, hidden)

    def forward(self, h, rope, mask=None, causal=False, past=None, frames=None, attention: list | None = None,
                order: torch.Tensor | None = None):
        """h (B, T, N, D) -> (h, this call's (k, v) for a cache). Temporal blocks take `past` (cached k, v),
        `frames` = (pose_q, pose_k, tau_k) for the memory biases and, for ragged rows, the key `order`
        (B*N, 1, keys, 1) into [cached | new]; an `attention` list gets (B, Tq, Tk), averaged over heads and tokens."""
        b, n = h.shape[0], h.shape[2]
        # Temporal: one sequence per token position, over frames. Spatial: one per frame, over tokens.
        if self.temporal:
            x = rearrange(h, "b t n d -> (b n) t d")
        else:
            x = rearrange(h, "b t n d -> (b t) n d")
        q, k, v = self.attn.project(self.attn_norm(x), rope)
        kv = (k, v)
        if past is not None:  # cached frames come first in time: (B*N, KVH, frames, hd)
            k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)
        if order is not None:  # ragged rows: each row's own frames first, padding last
            k = k.gather(2, order.expand(-1, k.shape[1], -1, k.shape[3]))
            v = v.gather(2, order.expand(-1, v.shape[1], -1, v.shape[3]))
        bias = None if frames is None or self.bias is None else self.bias(*frames)  # (B, H, Tq, Tk)
        if bias is not None:
            bias = repeat(bias, "b h i j -> (b n) h i j", n=n)  # one per temporal sequence
        weights = [] if attention is not None else None
        x = x + self.attn.attend(q, k, v, mask=mask, causal=causal, bias=bias, weights=weights)
        if weights:
            attention.append(rearrange(weights[0], "(b n) i j -> b n i j", b=b).mean(dim=1))
        x = x + self.mlp(self.mlp_norm(x))
        if self.temporal:
            return rearrange(x, "(b n) t d -> b t n d", b=b), kv
        return rearrange(x, "(b t) n d -> b t n d", b=b), kv


class DynamicsTransformer(nn.Module):
    def __init__(self, config: DynamicsConfig):
        super().__init__()
        _check_shapes(config)
        self.config = cfg = config
        patch_dim = cfg.latent_channels * cfg.patch_size**2
        self.recall = PoseRecall(cfg.pose_step, cfg.pose_recall) if cfg.pose_recall > 0 else None
        self.patch_in = nn.Linear(patch_dim * (2 if self.recall else 1), cfg.dim)  # [own | recalled] patches
        self.registers = nn.Parameter(torch.randn(cfg.num_registers, cfg.dim) * 0.02)
        self.noise_embed = nn.Sequential(nn.Linear(2 * 64, cfg.dim), nn.SiLU(), nn.Linear(cfg.dim, cfg.dim))
        self.action_embed = nn.Embedding(cfg.n_actions + 1, cfg.dim)  # last row = "no action"
        if cfg.pose_conditioning:  # added to every token of a frame
            self.pose_embed = nn.Sequential(nn.Linear(POSE_FEATURES, cfg.dim), nn.SiLU(), nn.Linear(cfg.dim, cfg.dim))
        offset = 0 if cfg.temporal_first else 1
        temporal = [(i + offset) % cfg.temporal_every == 0 for i in range(cfg.depth)]
        self.blocks = nn.ModuleList(
            Block(cfg, temporal=t, first_temporal=t and not any(temporal[:i])) for i, t in enumerate(temporal)
        )
        self.out_norm = RMSNorm(cfg.dim)
        self.patch_out = nn.Linear(cfg.dim, patch_dim)
        self.copy_gate = nn.Linear(cfg.dim, 1) if self.recall else None  # per patch: copy the recalled view
        self._space_rope_tables: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}  # not state
        self._init_weights()

    def _init_weights(self) -> None:
        # nanoGPT: N(0, 0.02), residual projections scaled by depth; zero output head, so the
        # untrained model predicts x0 = 0 (the data mean, after normalisation) instead of noise.
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Embedding):
                nn.init.normal_(m.weight, std=0.02)
        for block in self.blocks:
            nn.init.normal_(block.attn.out.weight, std=0.02 / math.sqrt(2 * self.config.depth))
            nn.init.normal_(block.mlp.down.weight, std=0.02 / math.sqrt(2 * self.config.depth))
        nn.init.zeros_(self.patch_out.weight)
        nn.init.zeros_(self.patch_out.bias)
        if self.copy_gate is not None:  # the untrained model mostly copies the recalled view (gate 0.88)
            nn.init.constant_(self.copy_gate.bias, 2.0)

    def normalize(self, latents: torch.Tensor) -> torch.Tensor:
        """Tokenizer latents -> the model's unit-scale latent space."""
        return (latents - self.config.latent_mean) / self.config.latent_std

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        """The model's latent space -> tokenizer latents."""
        return x * self.config.latent_std + self.config.latent_mean

    @property
    def temporal_layers(self) -> int:
        return sum(b.temporal for b in self.blocks)

    # ------------------------------------------------------------------ tokens in and out
    def _space_rope(self, device):
        """The spatial RoPE table: fixed by the config, so built once per device."""
        table = self._space_rope_tables.get(device)
        if table is None:
            with torch.inference_mode(False):  # built in a caller's inference mode, still usable in training
                gh, gw = self.config.grid
                rows = torch.arange(gh, device=device).repeat_interleave(gw)
                cols = torch.arange(gw, device=device).repeat(gh)
                table = rope_2d(rows, cols, self.config.dim // self.config.heads, self.config.num_registers + 2)
            self._space_rope_tables[device] = table
        return table

    def _tokens(self, x, tau, d, actions, poses, recalled=None):
        """x (B, T, C, h, w), tau/d (B, T), actions (B, T) or None, poses (B, T, 3) or None,
        recalled (B, T, C, h, w) with pose recall -> (B, T, N, D)."""
        cfg = self.config
        b, t, c, hh, ww = x.shape
        if (c, hh, ww) != (cfg.latent_channels, cfg.latent_height, cfg.latent_width):
            raise ValueError(
                f"latent frames of shape {(c, hh, ww)}, model built for "
                f"{(cfg.latent_channels, cfg.latent_height, cfg.latent_width)}"
            )
        if self.recall is not None:
            x = torch.cat([x, recalled.to(x.dtype)], dim=2)  # (B, T, 2C, h, w)
        patches = rearrange(pack(x, cfg.patch_size), "b (t s) e -> b t s e", t=t)  # (B, T, S, C*p*p)
        spatial = self.patch_in(patches.to(self.patch_in.weight.dtype))  # (B, T, S, D)
        registers = repeat(self.registers, "r d -> b t r d", b=b, t=t)  # (B, T, R, D)
        # log2(1/d) in [0, log2 k_max]: the shortcut level. Scales chosen so features vary.
        feats = torch.cat([_fourier(tau, 64, 1000.0), _fourier(torch.log2(1.0 / d), 64, 100.0)], dim=-1)
        noise = rearrange(self.noise_embed(feats.to(spatial.dtype)), "b t d -> b t 1 d")
        action = rearrange(self.action_embed(self._action_index(actions, b, t, x.device)), "b t d -> b t 1 d")
        h = torch.cat([spatial, registers, noise, action], dim=2)  # (B, T, S + R + 2, D)
        if cfg.pose_conditioning and poses is not None:
            poses = poses.reshape(b, t, 3)
            known = ~torch.isnan(poses).any(dim=-1, keepdim=True)  # a frame without a pose gets no embedding
            pose = self.pose_embed(pose_features(poses, cfg.pose_center, cfg.pose_step).to(h.dtype)) * known
            h = h + rearrange(pose, "b t d -> b t 1 d")
        return h

    def _action_index(self, actions, b, t, device):
        n = self.config.n_actions
        if actions is None:
            return torch.full((b, t), n, dtype=torch.long, device=device)
        actions = torch.as_tensor(actions, device=device).long().reshape(b, t)
        if (actions >= n).any():
            raise ValueError(f"action {int(actions.max())} out of range: the model knows {n} actions (n_actions)")
        return torch.where(actions < 0, torch.full_like(actions, n), actions)

    def _frames(self, h, recalled=None, copy_gate_shift: float = 0.0):
        """(B, T, N, D) -> x0 (B, T, C, h, w); with pose recall, blended per patch with `recalled` by the
        copy gate, whose logit a rollout may shift (``copy_gate_shift``; 0 in training)."""
        cfg = self.config
        t, (gh, gw) = h.shape[1], cfg.grid
        spatial = self.out_norm(h[:, :, : gh * gw])
        out = self.patch_out(spatial)  # (B, T, S, C*p*p)
        if self.recall is not None:
            copied = rearrange(pack(recalled, cfg.patch_size), "b (t s) e -> b t s e", t=t)  # (B, T, S, C*p*p)
            # Trained by MSE, the gate hedges between head and recall; in a rollout the head works
            # from the model's own, blurrier frames, so a host may shift it toward copying.
            gate = torch.sigmoid(self.copy_gate(spatial) + copy_gate_shift)  # (B, T, S, 1)
            out = (1 - gate) * out + gate * copied.to(out.dtype)
        return unpack(rearrange(out, "b t s e -> b (t s) e"), t, cfg.latent_height, cfg.latent_width, cfg.patch_size)

    # ------------------------------------------------------------------ whole sequences
    def forward(self, x, tau, d, actions=None, poses=None, visible: torch.Tensor | None = None, memory=None,
                observed: torch.Tensor | None = None, times: torch.Tensor | None = None):
        """Whole sequences: x (B, T, C, h, w) noisy normalised latents, tau, d, actions (B, T), poses (B, T, 3);
        `visible` (B, T, T): frame i may see j (None: causal); `memory` (B, T, C, h, w) clean latents for pose
        recall, `observed` (B, T) which are data; `times` (B, T) each frame's time for the temporal RoPE (None:
        0..T-1, e.g. a gapped batch's offsets in its window). Returns x0 (B, T, C, h, w)."""
        b, t = x.shape[:2]
        recalled = None
        if self.recall is not None:
            seen = torch.ones(t, t, dtype=torch.bool, device=x.device).tril() if visible is None else visible.to(x.device)
            earlier = seen & ~torch.eye(t, dtype=torch.bool, device=x.device)
            recalled = self._recall(x, memory, poses, poses, earlier.expand(b, t, t), observed)
        h = self._tokens(x, tau, d, actions, poses, recalled)
        n = h.shape[2]
        space_rope = self._space_rope(x.device)
        time_rope = self._time_rope(times, b, t, n, x.device)
        mask, causal = None, True
        if visible is not None:
            mask, causal = repeat(visible.to(x.device), "b i j -> (b n) 1 i j", n=n), False  # one per temporal sequence
        frames = (poses, poses, tau)
        for block in self.blocks:
            if block.temporal:
                h, _ = block(h, time_rope, mask=mask, causal=causal, frames=frames)
            else:
                h, _ = block(h, space_rope)
        return self._frames(h, recalled)

    def _time_rope(self, times, b: int, t: int, n: int, device):
        """The temporal RoPE table: frames 0..T-1 (``times`` None), else one table per temporal sequence
        ((B*N, 1, T, hd), as ``_extend`` builds for rows at their own times) from (B, T) times."""
        head_dim = self.config.dim // self.config.heads
        if times is None:
            return rope_1d(torch.arange(t, device=device), head_dim)
        times = torch.as_tensor(times, device=device)
        if times.shape != (b, t):
            raise ValueError(f"times of shape {tuple(times.shape)}, expected (B, T) = {(b, t)}")
        cos, sin = rope_1d(times.flatten(), head_dim)
        return tuple(repeat(c.view(b, t, -1), "b t e -> (b n) 1 t e", n=n) for c in (cos, sin))

    def _recall(self, x, memory, pose_q, pose_k, allowed, observed=None):
        """What frames x recall from ``memory`` (B, Tk, C, h, w): zeros without poses, an error without memory."""
        if pose_q is None:
            return torch.zeros_like(x)
        if memory is None:
            raise ValueError("this model recalls views by pose (model.pose_recall): pass the frames' clean "
                             "latents as `memory`")
        return self.recall(memory.to(x.dtype), pose_q.float(), pose_k, allowed, observed)

    # ------------------------------------------------------------------ frame by frame
    def new_cache(self, batch_size: int) -> KVCache:
        return KVCache(batch_size, self.temporal_layers)

    def step(self, cache: KVCache, x, tau, d, action=None, *, append: bool, pose=None, time=None,
             attention: list | None = None, memory=None, copy_gate_shift: float = 0.0):
        """One frame x (B, C, h, w) at ``time`` (default: after the newest cached frame), attending to the
        cache; returns its x0. ``append`` adds its keys/values (and clean latent ``memory``) to the cache;
        an ``attention`` list gets, per temporal layer, (B, cached + 1) weights, each row's frames first."""
        b = x.shape[0]
        as_col = lambda v, dtype: torch.as_tensor(v, dtype=dtype, device=x.device).expand(b).reshape(b, 1)  # noqa: E731
        action = None if action is None else as_col(action, torch.long)
        tau, d = as_col(tau, torch.float32), as_col(d, torch.float32)
        poses = None if pose is None else torch.as_tensor(pose, dtype=torch.float32, device=x.device).expand(b, 3)[:, None]
        if time is None:
            times = None
        elif isinstance(time, int) or torch.is_tensor(time) and time.ndim == 0:
            times = [int(time)]
        else:
            times = [[int(v)] for v in time]
        layers = [] if attention is not None else None
        memory = None if memory is None else memory[:, None]
        out = self._extend(cache, x[:, None], tau, d, action, poses, times, append=append, attention=layers,
                           memory=memory, copy_gate_shift=copy_gate_shift)[:, 0]
        if layers is not None:
            attention.extend(w[:, -1] for w in layers)
        return out

    def prefill(self, cache: KVCache, x, tau, d, actions=None, poses=None, times: list | None = None,
                counts: list[int] | None = None, memory=None, observed: torch.Tensor | None = None):
        """Append T context frames x (B, T, C, h, w) in one pass (= T ``step(append=True)`` calls).
        ``times``: T ints or B lists; ``counts[b]``: row b's real frames; ``observed`` (B, T): False if generated."""
        return self._extend(cache, x, tau, d, actions, poses, times, append=True, counts=counts, memory=memory,
                            observed=observed)

    def _extend(self, cache: KVCache, x, tau, d, actions, poses, times, *, append: bool, attention: list | None = None,
                counts: list[int] | None = None, memory=None, observed: torch.Tensor | None = None,
                copy_gate_shift: float = 0.0):
        """T frames x (B, T, C, h, w) after each row's cached frames; returns their x0. Ragged rows attend
        through a per-row key order [own cached | new | padding], so each row computes what it would alone."""
        b, t = x.shape[:2]
        if b != cache.batch_size:
            raise ValueError(f"cache built for batch {cache.batch_size}, got a frame batch of {b}")
        if self.recall is not None and append and poses is not None and memory is None:
            raise ValueError("this model recalls views by pose (model.pose_recall): frames appended to its cache "
                             "need their clean latents as `memory`")
        n = self.config.tokens_per_frame
        if times is None:
            rows = [list(range(p, p + t)) for p in cache.next_positions]
        else:
            rows = row_lists(list(times), b, t)
        counts = [t] * b if counts is None else list(counts)
        space_rope = self._space_rope(x.device)
        head_dim = self.config.dim // self.config.heads
        if all(r == rows[0] for r in rows):
            time_rope = rope_1d(torch.tensor(rows[0], device=x.device), head_dim)
        else:  # each row at its own times: one table per temporal sequence
            cos, sin = rope_1d(torch.tensor(rows, device=x.device).flatten(), head_dim)
            time_rope = tuple(repeat(c.view(b, t, -1), "b t e -> (b n) 1 t e", n=n) for c in (cos, sin))
        held = len(cache)
        order = None
        index = valid = None  # plain rows: keys are [cached | new] as they stand
        if not cache.ragged and all(c == t for c in counts):
            # one new frame sees everything: no mask
            mask = None if t == 1 else torch.ones(t, held + t, dtype=torch.bool, device=x.device).tril(diagonal=held)
            earlier = torch.ones(t, held + t, dtype=torch.bool, device=x.device).tril(diagonal=held - 1).expand(b, t, held + t)
        else:
            lengths = torch.tensor(cache.lengths, device=x.device)
            index, _ = append_index(cache.lengths, [t] * b, held, held + t)  # [own frames | new frames | padding]
            index = index.to(x.device)
            order = repeat(index, "b w -> (b n) 1 w 1", n=n)
            slots = torch.arange(held + t, device=x.device)[None, None]
            own = lengths[:, None, None] + torch.arange(t, device=x.device)[None, :, None]  # new frame i's key slot
            sees, earlier = slots <= own, slots < own
            mask = repeat(sees, "b i j -> (b n) 1 i j", n=n)
            valid = torch.ones_like(sees[:, 0])  # what the mask hides needs no padding value

        def keys_of(held_values, new):
            """Per-frame values (B, keys, ...) in key order: cached frames, then the new ones."""
            values = extend_frames(held_values, new)
            return values if index is None else gather_rows(values, index, valid, 0.0)

        pose_k = None if poses is None else keys_of(cache.poses, poses.float())
        tau_k = keys_of(cache.taus, tau.float())
        recalled, new_memory, new_observed = None, None, None
        if self.recall is not None:
            # a frame being generated has no clean latent yet; it cannot recall itself anyway
            new_memory = torch.zeros_like(x) if memory is None else memory.to(x.dtype)
            new_observed = torch.ones(b, t, dtype=torch.bool, device=x.device) if observed is None else observed.to(x.device)
            recalled = self._recall(x, keys_of(cache.memory, new_memory), poses, pose_k, earlier,
                                    keys_of(cache.observed, new_observed))
        h = self._tokens(x, tau, d, actions, poses, recalled)
        frames = (poses, pose_k, tau_k)
        new_kv, layer = [], 0
        for block in self.blocks:
            if block.temporal:
                h, kv = block(h, time_rope, mask=mask, past=cache.past(layer), frames=frames, attention=attention,
                              order=order)
                new_kv.append(kv)
                layer += 1
            else:
                h, _ = block(h, space_rope)
        if append:
            cache.append(new_kv, rows, None if poses is None else poses.float(), tau.float(), counts, new_memory,
                         new_observed)
        return self._frames(h, recalled, copy_gate_shift)


def build_dynamics(config: dict) -> DynamicsTransformer:
    """The model a checkpoint's config dict describes; every field named, no other key."""
    names = {f.name for f in fields(DynamicsConfig)}
    missing, unexpected = sorted(names - set(config)), sorted(set(config) - names)
    if missing or unexpected:
        raise ValueError(f"dynamics config: missing keys {missing}, unexpected keys {unexpected}")
    return DynamicsTransformer(DynamicsConfig(**config))


def config_dict(config: DynamicsConfig) -> dict:
    return asdict(config)
