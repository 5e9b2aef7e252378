"""The dynamics model: a block-causal transformer over latent frames (DreamerV4 style).

Each frame becomes N = S + R + 2 tokens::

    [ S spatial tokens (linear projection of p x p latent patches) | R learned registers |
      1 token carrying (tau, d) | 1 action token ]

Blocks alternate between *spatial* attention (all N tokens of one frame, 2D RoPE on the patch
grid) and *causal temporal* attention (one token position across frames, 1D RoPE on the frame's
time in its clip), the latter every `temporal_every` blocks (`temporal_first`: starting with
the first block). Pre-RMSNorm, SwiGLU, QK-norm, optional GQA and logit soft-cap
(pipeline.networks.layers). The model predicts the clean latent x0 (x-prediction).

**Memory.** What a model can recall from frames long gone by depends on finding them. Two
learned biases on the temporal attention logits make that cheap (:class:`TemporalBias`):

- *pose*: when the data records the agent's pose (x, y, heading) per frame, every token of a
  frame gets a pose embedding, and each temporal head adds ``-(a * |dxy / s|^2 + b * (1 - cos
  dheading))`` for the pose difference between the querying and the attended frame (a, b
  learned per head; s = 8 typical steps). A head that starts with large rates looks at frames
  seen from where the new frame is seen from, as camera-conditioned memory models do (WorldMem,
  Context-as-Memory); the first temporal layer starts with all heads so, later ones with half.
- *clean*: each head adds ``-c * tau_key``: prefer clean context over noisy frames (a frame's own
  noisy self included), which a frame cannot tell from its keys before any spatial layer has
  mixed in its noise level.

Both start at `model.pose_bias` and `model.clean_bias` (0 disables either) and are learned.

*Pose recall* (`model.pose_recall`, with poses): attention per token position can only find a
view again slowly, so each frame is also handed the view it is seen from, recalled outright
(:class:`PoseRecall`): the clean latents of the earlier frames it may see, averaged with weights
``softmax(-(a |dxy / s|^2 + b (1 - cos dheading)))``. The recalled latent is an input beside the
frame's own noisy latent, and the output blends it in through a learned gate per patch (a copy
mechanism, as pointer-generator networks copy words): ``x0 = (1 - g) head(h) + g recalled`` with
``g = sigmoid(gate(h))``, starting at 0.88. Where the view was seen before, the model copies it
sharp; where it was not, the gate closes and the head generates.
Only retained frames can be recalled, so what a retention policy keeps decides what the model
can copy (WorldMem and Context-as-Memory condition on frames retrieved by camera pose). Observed
frames are recalled before generated ones (``observed``; see :class:`PoseRecall`), and a host
may shift the gate toward copying when it generates (``step(..., copy_gate_shift=)``).

Conventions: tau = 0 clean, tau = 1 pure noise, z_tau = (1 - tau) x0 + tau eps;
d is the shortcut step size in (0, 1]. ``actions[:, t]`` is the action *that led to frame t*
(recorded at frame t-1); a negative value, or ``actions=None``, means "no action" and uses a
learned embedding (also what models trained on action-free data always see).

**Latent space.** The model works on *normalised* latents ``(x - latent_mean) / latent_std``
(scalars from the train split, stored in the config, like a latent-diffusion VAE's scaling
factor): the flow-matching noise has unit variance, so data of std 0.4 would be drowned far
earlier along tau than the schedule intends. Noise is added in this normalised space, so the
map cannot live inside `forward`; callers cross it once with :meth:`DynamicsTransformer.normalize`
(tokenizer latents in: training batches, context frames) and :meth:`~DynamicsTransformer.denormalize`
(generated frames out, before decoding).

Generation goes frame by frame through a :class:`KVCache` that holds the temporal layers' keys
and values (and each frame's pose and noise level, for the biases); `step` with the cache equals
`forward` on the whole sequence (tested), and frames can be evicted from it (the benchmark's
``kv`` mode); `prefill` appends many context frames in one batched pass. Time positions are the
frames' times in their clip (given, or after the newest frame ever appended), so they persist
across evictions: a history with gaps keeps its frames' own times, as in training with history
dropout (``visible`` masks).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import nn

from pipeline.networks.layers import (
    Attention,
    RMSNorm,
    SwiGLU,
    append_index,
    pack,
    rope_1d,
    rope_2d,
    unpack,
)

if TYPE_CHECKING:
    from pipeline.config import ModelParams

KIND = "dynamics"


@dataclass(frozen=True)
class DynamicsConfig:
    """What a dynamics model is built from, and what its checkpoint stores (as a dict). Data only:
    the values come from the `model` params section (validated there) and the latents, through
    :func:`dynamics_config`; a checkpoint's dict must name every field (:func:`build_dynamics`)."""

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


POSE_FEATURES = 32  # 6 octaves of sin/cos for x and y, 4 harmonics of the heading
POSE_BIAS_STEPS = 8.0  # the pose bias measures distance in units of 8 typical steps
STILL_MOVE = 1e-3  # a move shorter than this (per frame) is standing still: not a typical step


def pose_features(poses: torch.Tensor, center, step: float) -> torch.Tensor:
    """(..., 3) poses (x, y, heading in degrees) -> (..., POSE_FEATURES); zeros where unknown (NaN).
    Positions in units of 32 typical steps from the train split's centre, at 6 octaves (the finest
    half a step); the heading at harmonics 1..4."""
    known = ~torch.isnan(poses).any(dim=-1, keepdim=True)
    poses = torch.nan_to_num(poses.float())
    xy = (poses[..., :2] - torch.as_tensor(center, dtype=torch.float32, device=poses.device)) / (32 * step)
    octaves = math.pi * 2.0 ** torch.arange(6, dtype=torch.float32, device=poses.device)
    angles = torch.cat([(xy[..., :, None] * octaves).flatten(-2),
                        torch.deg2rad(poses[..., 2:]) * torch.arange(1, 5, device=poses.device)], dim=-1)
    return torch.cat([angles.sin(), angles.cos()], dim=-1) * known


class TemporalBias(nn.Module):
    """The memory biases of one temporal attention layer (see the module docstring), learned
    per head: pose rates (H, 2) for the squared position distance and the heading difference,
    and a clean-context rate (H,). Stored as softplus pre-activations, so rates stay >= 0."""

    def __init__(self, cfg: DynamicsConfig, first: bool):
        super().__init__()
        self.scale = POSE_BIAS_STEPS * cfg.pose_step
        self.pose_rate = self.clean_rate = None
        if cfg.pose_conditioning and cfg.pose_bias > 0:
            focused = cfg.heads if first else cfg.heads // 2  # the others start free to look elsewhere
            rates = torch.tensor([cfg.pose_bias if h < focused else 0.0 for h in range(cfg.heads)])
            self.pose_rate = nn.Parameter(_inverse_softplus(rates)[:, None].repeat(1, 2))
        if cfg.clean_bias > 0:
            self.clean_rate = nn.Parameter(_inverse_softplus(torch.full((cfg.heads,), cfg.clean_bias)))

    @staticmethod
    def wanted(cfg: DynamicsConfig) -> bool:
        return (cfg.pose_conditioning and cfg.pose_bias > 0) or cfg.clean_bias > 0

    def forward(self, pose_q, pose_k, tau_k):
        """pose_q (B, Tq, 3), pose_k (B, Tk, 3) or None; tau_k (B, Tk) -> (B, H, Tq, Tk) or None."""
        bias = None
        if self.pose_rate is not None and pose_q is not None:
            a, b = F.softplus(self.pose_rate).unbind(-1)  # (H,), (H,)
            dist, turn = pose_distance(pose_q, pose_k, self.scale)  # (B, Tq, Tk) each
            pose = -(a[:, None, None] * dist[:, None] + b[:, None, None] * turn[:, None])
            bias = torch.nan_to_num(pose, nan=0.0)  # frames without a pose: no pose bias
        if self.clean_rate is not None:
            clean = -(F.softplus(self.clean_rate)[:, None, None] * tau_k.float()[:, None, None, :])
            bias = clean if bias is None else bias + clean
        return bias


def pose_distance(pose_q: torch.Tensor, pose_k: torch.Tensor, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, Tq, 3), (B, Tk, 3) -> the squared position distance in units of `scale` and 1 - cos of
    the heading difference, each (B, Tq, Tk); NaN where a pose is unknown."""
    dxy = (pose_q[:, :, None, :2] - pose_k[:, None, :, :2]).float() / scale
    turn = 1 - torch.cos(torch.deg2rad(pose_q[:, :, None, 2] - pose_k[:, None, :, 2]).float())
    return dxy.pow(2).sum(-1), turn


class PoseRecall(nn.Module):
    """The view a frame is seen from, recalled from the clean latents of the earlier frames it
    may see: their average with weights ``softmax(-(a |dxy / s|^2 + b (1 - cos dheading)))`` (a, b
    learned, starting at `model.pose_recall`; s as in :class:`TemporalBias`). A frame with nothing
    to recall (the first one, or no pose) recalls zeros. The rates are learned as logarithms:
    an optimiser's steps then change them by a factor, so a few hundred steps can sharpen or
    soften the recall (a softplus pre-activation of 50 would barely move).

    *Observed first*: where a frame may see any *observed* frame (one from the data, not one
    the model generated), it recalls from those alone. A rollout's own frames are blurred
    estimates; recalling them, each generated frame copies the blur of the one before and
    the blur compounds. They are recalled only when a policy has kept no observed frame."""

    def __init__(self, cfg: DynamicsConfig):
        super().__init__()
        self.scale = POSE_BIAS_STEPS * cfg.pose_step
        self.log_rate = nn.Parameter(torch.full((2,), math.log(cfg.pose_recall)))

    def forward(self, memory, pose_q, pose_k, allowed, observed=None):
        """memory (B, Tk, C, h, w), pose_q (B, Tq, 3), pose_k (B, Tk, 3), allowed (B, Tq, Tk) bool,
        observed (B, Tk) bool or None (all observed) -> recalled (B, Tq, C, h, w)."""
        a, b = self.log_rate.exp()
        dist, turn = pose_distance(pose_q, pose_k, self.scale)
        logits = -(a * dist + b * turn)
        allowed = allowed & ~torch.isnan(logits)  # frames without a pose recall nothing, and are not recalled
        if observed is not None:
            seen = allowed & observed[:, None, :]
            allowed = torch.where(seen.any(dim=-1, keepdim=True), seen, allowed)
        weights = torch.nan_to_num(logits.masked_fill(~allowed, float("-inf")).softmax(dim=-1))  # none allowed: 0
        return torch.einsum("bqk,bkchw->bqchw", weights.to(memory.dtype), memory)


def _inverse_softplus(rate: torch.Tensor) -> torch.Tensor:
    rate = rate.clamp(min=1e-4)
    return rate + torch.log(-torch.expm1(-rate))  # log(exp(rate) - 1), finite for large rates too


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
        self.bias = TemporalBias(cfg, first_temporal) if temporal and TemporalBias.wanted(cfg) else None
        hidden = 8 * math.ceil(cfg.mlp_ratio * cfg.dim * 2 / 3 / 8)  # SwiGLU: 2/3 of the MLP width
        self.attn_norm = RMSNorm(cfg.dim)
        self.attn = Attention(cfg.dim, cfg.heads, cfg.kv_heads, cfg.logit_softcap)
        self.mlp_norm = RMSNorm(cfg.dim)
        self.mlp = SwiGLU(cfg.dim, hidden)

    def forward(self, h, rope, mask=None, causal=False, past=None, frames=None, attention: list | None = None,
                order: torch.Tensor | None = None):
        """h (B, T, N, D). Temporal blocks may get `past` = cached (k, v) of earlier frames and
        `frames` = (pose_q, pose_k, tau_k) for the memory biases (keys: cached frames first, or
        in `order`: (B * N, 1, keys, 1) indices into [cached | new] frames, per sequence);
        with an `attention` list they append their probabilities, averaged over heads and token
        positions, (B, Tq, Tk). Returns the new h and this call's (k, v), for a cache."""
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


class KVCache:
    """Keys and values of the temporal layers for the frames appended so far, and the pose and
    noise level of each frame (the memory biases of later frames read them), and with pose
    recall each frame's clean latent (what later frames recall) and whether it was observed.

    Per temporal layer k, v have shape (B * N, kv_heads, frames, head_dim), already rotated at
    their absolute time positions, so evicting frames never changes the survivors.

    **Rows.** Each batch row is its own history (a batch of rollouts): row b holds
    ``lengths[b]`` frames at its own time positions, left-aligned on the frame axis; the slots
    past a row's length are padding (NaN poses, tau 0) that attention masks out (the cache is
    then *ragged*). Rows that share every length take the plain path: no mask, no gather.
    """

    # The per-frame values kept beside the keys/values, and what a padding slot holds.
    FRAME_FIELDS = {"poses": float("nan"), "taus": 0.0, "memory": 0.0, "observed": False}

    def __init__(self, batch_size: int, n_layers: int):
        self.batch_size = batch_size
        self.keys: list[torch.Tensor | None] = [None] * n_layers
        self.values: list[torch.Tensor | None] = [None] * n_layers
        self.row_positions: list[list[int]] = [[] for _ in range(batch_size)]  # per row, oldest first
        self.next_positions: list[int] = [0] * batch_size  # per row: after the newest frame ever appended
        self.poses: torch.Tensor | None = None  # (B, frames, 3)
        self.taus: torch.Tensor | None = None  # (B, frames)
        self.memory: torch.Tensor | None = None  # (B, frames, C, h, w): pose recall only
        self.observed: torch.Tensor | None = None  # (B, frames) bool: from the data, not generated (pose recall)

    def __len__(self) -> int:
        """The frame axis: the longest row."""
        return max((len(p) for p in self.row_positions), default=0)

    @property
    def lengths(self) -> list[int]:
        return [len(p) for p in self.row_positions]

    @property
    def ragged(self) -> bool:
        """Rows of different lengths: the shorter ones are padded."""
        return len(set(self.lengths)) > 1

    @property
    def positions(self) -> list[int]:
        """The time positions of the cached frames, when every row has the same (else ValueError)."""
        if any(p != self.row_positions[0] for p in self.row_positions):
            raise ValueError("KVCache.positions: the rows hold different frames (see row_positions)")
        return list(self.row_positions[0])

    def append(self, kvs: list[tuple[torch.Tensor, torch.Tensor]], positions: int | list,
               poses: torch.Tensor | None = None, taus: torch.Tensor | None = None,
               counts: list[int] | None = None, memory: torch.Tensor | None = None,
               observed: torch.Tensor | None = None) -> None:
        """Add the keys/values of T frames per row (B * N, kv_heads, T, head_dim), with their
        poses (B, T, 3), noise levels (B, T), clean latents (B, T, C, h, w) and observed flags
        (B, T) or None.
        ``positions``: an int (one frame), a list of T ints (every row) or B lists (per row);
        ``counts[b]``: how many of the T frames are real in row b (the rest are padding and are
        not kept; default all)."""
        t = kvs[0][0].shape[2] if kvs else len(positions) if isinstance(positions, list) else 1
        rows = _row_lists(positions, self.batch_size, t)
        counts = [t] * self.batch_size if counts is None else list(counts)
        lengths = self.lengths
        plain = not self.ragged and all(c == t for c in counts)
        index = None if plain else append_index(lengths, counts, len(self))  # over [held | new]
        for i, (k, v) in enumerate(kvs):
            k_all = k if self.keys[i] is None else torch.cat([self.keys[i], k], dim=2)
            v_all = v if self.values[i] is None else torch.cat([self.values[i], v], dim=2)
            if index is not None:
                k_all, v_all = _gather_frames(k_all, index[0]), _gather_frames(v_all, index[0])
            self.keys[i], self.values[i] = k_all, v_all
        for (name, pad), new in zip(self.FRAME_FIELDS.items(), (poses, taus, memory, observed), strict=True):
            setattr(self, name, _extended(getattr(self, name), new, index, pad))
        for b, (row, c) in enumerate(zip(rows, counts)):
            if c:
                self.row_positions[b].extend(row[:c])
                self.next_positions[b] = row[c - 1] + 1

    def past(self, layer: int):
        return None if self.keys[layer] is None else (self.keys[layer], self.values[layer])

    def evict(self, keep: list[int]) -> None:
        """Keep only the cached frames at these indices (0 = oldest held), in this order, in every row."""
        self.evict_rows([list(keep)] * self.batch_size)

    def evict_rows(self, keeps: list[list[int]]) -> None:
        """Per row b, keep only its frames at ``keeps[b]`` (increasing indices, 0 = oldest)."""
        keeps = [list(k) for k in keeps]
        if len(keeps) != self.batch_size:
            raise ValueError(f"KVCache.evict_rows: {len(keeps)} keep lists for {self.batch_size} rows")
        for keep, n in zip(keeps, self.lengths):
            if any(not 0 <= i < n for i in keep) or len(set(keep)) != len(keep) or keep != sorted(keep):
                raise IndexError(f"KVCache.evict: keep must be increasing indices in [0, {n}), got {keep}")
        width = max(len(k) for k in keeps)
        if width == 0:
            self.keys = [None] * len(self.keys)
            self.values = [None] * len(self.values)
            self._each_frame_field(lambda values, pad: None)
        elif not self.ragged and all(k == keeps[0] for k in keeps):  # every row alike: one index
            index = torch.tensor(keeps[0], dtype=torch.long)
            for i, k in enumerate(self.keys):
                if k is not None:
                    self.keys[i] = k.index_select(2, index.to(k.device))
                    self.values[i] = self.values[i].index_select(2, index.to(k.device))
            self._each_frame_field(lambda values, pad: values[:, index.to(values.device)])
        else:
            index = torch.tensor([k + [0] * (width - len(k)) for k in keeps], dtype=torch.long)
            valid = torch.arange(width)[None] < torch.tensor([len(k) for k in keeps])[:, None]
            for i, k in enumerate(self.keys):
                if k is not None:
                    self.keys[i] = _gather_frames(k, index)
                    self.values[i] = _gather_frames(self.values[i], index)
            self._each_frame_field(lambda values, pad: _gather_rows(values, index, valid, pad))
        self.row_positions = [[p[i] for i in keep] for p, keep in zip(self.row_positions, keeps)]

    def _each_frame_field(self, fn) -> None:
        """Replace each per-frame field that is set by ``fn(values, padding value)``."""
        for name, pad in self.FRAME_FIELDS.items():
            values = getattr(self, name)
            if values is not None:
                setattr(self, name, fn(values, pad))

    def nbytes(self) -> int:
        """Bytes the cache holds (keys, values and recall latents), padding included."""
        return sum(t.numel() * t.element_size() for t in [*self.keys, *self.values, self.memory] if t is not None)

    def row_nbytes(self) -> list[int]:
        """Per row: the bytes of its own frames (what the row would hold alone, padding excluded)."""
        per_frame = sum(t.numel() * t.element_size() // t.shape[2] // self.batch_size
                        for t in self.keys + self.values if t is not None and t.shape[2])
        if self.memory is not None and self.memory.shape[1]:
            per_frame += self.memory[0, 0].numel() * self.memory.element_size()
        return [n * per_frame for n in self.lengths]


def _row_lists(positions, batch: int, t: int) -> list[list[int]]:
    """An int, a list of T ints or B lists -> B lists (per row)."""
    if isinstance(positions, int):
        return [[positions]] * batch
    positions = list(positions)
    if positions and isinstance(positions[0], (list, tuple)):
        if len(positions) != batch:
            raise ValueError(f"{len(positions)} rows of positions for a batch of {batch}")
        return [[int(p) for p in row] for row in positions]
    return [[int(p) for p in positions]] * batch


def _gather_frames(t: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """t (B * N, H, F, D) -> (B * N, H, F', D): row b's frames ``index[b]`` (B, F')."""
    rows = index.shape[0]
    idx = index.to(t.device).repeat_interleave(t.shape[0] // rows, dim=0)[:, None, :, None]
    return t.gather(2, idx.expand(-1, t.shape[1], -1, t.shape[3]))


def _gather_rows(t: torch.Tensor | None, index: torch.Tensor, valid: torch.Tensor, pad: float) -> torch.Tensor | None:
    """t (B, F, ...) -> (B, F', ...) at ``index`` (B, F'), ``pad`` where not ``valid``."""
    if t is None:
        return None
    idx, ok = index.to(t.device), valid.to(t.device)
    shape = (*idx.shape, *t.shape[2:])
    idx = idx.reshape(*idx.shape, *[1] * (t.ndim - 2)).expand(shape)
    ok = ok.reshape(*ok.shape, *[1] * (t.ndim - 2))
    return t.gather(1, idx).masked_fill(~ok, pad)


def _extended(held: torch.Tensor | None, new: torch.Tensor | None,
              index: tuple[torch.Tensor, torch.Tensor] | None = None, pad: float = 0.0) -> torch.Tensor | None:
    """Per-frame values (B, F, ...) of the held frames followed by the new ones; with ``index``
    = (indices, valid) of :func:`append_index`, each row's frames then its new ones, ``pad``
    in the padding."""
    out = new if held is None else held if new is None else torch.cat([held, new], dim=1)
    if out is None or index is None:
        return out
    return _gather_rows(out, *index, pad)


@dataclass(frozen=True)
class PoseStats:
    """Where the train split's agent goes: the centre of its positions and its typical step."""

    center: tuple[float, float] = (0.0, 0.0)
    step: float = 1.0


def dynamics_config(model: ModelParams, latent_shape, *, n_actions: int, latent_mean: float = 0.0,
                    latent_std: float = 1.0, poses: PoseStats | None = None) -> DynamicsConfig:
    """The config of a dynamics model: the `model` params section, the latent frame shape
    (C, h, w) and the data's action count, latent statistics (mean 0, std 1: no normalisation)
    and pose statistics (None: the data has no poses, so no pose conditioning)."""
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


class DynamicsTransformer(nn.Module):
    def __init__(self, config: DynamicsConfig):
        super().__init__()
        _check_shapes(config)
        self.config = cfg = config
        patch_dim = cfg.latent_channels * cfg.patch_size**2
        self.recall = PoseRecall(cfg) if cfg.pose_recall > 0 else None
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
        """(B, T, N, D) -> x0 prediction (B, T, C, h, w) from the spatial tokens; with pose recall,
        blended with the recalled view (B, T, C, h, w) by each patch's copy gate (its logit plus
        ``copy_gate_shift``, 0 in training)."""
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
                observed: torch.Tensor | None = None):
        """x (B, T, C, h, w) noisy (normalised) latents, tau and d (B, T), actions (B, T) or None,
        poses (B, T, 3) or None. `visible` (B, T, T) bool: frame i may attend to frame j (None:
        causal, j <= i); training hides frames with it (single-frame rows, history dropout), and
        time positions stay the frames' own. `memory` (B, T, C, h, w): the frames' clean latents,
        which pose recall needs (a frame recalls from the earlier frames it sees, never itself);
        `observed` (B, T) bool: which of them count as observed (None: all; see :class:`PoseRecall`).
        Returns the x0 prediction (B, T, C, h, w)."""
        b, t = x.shape[:2]
        recalled = None
        if self.recall is not None:
            seen = torch.ones(t, t, dtype=torch.bool, device=x.device).tril() if visible is None else visible.to(x.device)
            earlier = seen & ~torch.eye(t, dtype=torch.bool, device=x.device)
            recalled = self._recall(x, memory, poses, poses, earlier.expand(b, t, t), observed)
        h = self._tokens(x, tau, d, actions, poses, recalled)
        n = h.shape[2]
        space_rope = self._space_rope(x.device)
        time_rope = rope_1d(torch.arange(t, device=x.device), self.config.dim // self.config.heads)
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

    def _recall(self, x, memory, pose_q, pose_k, allowed, observed=None):
        """What the frames x (B, Tq, ...) recall from ``memory`` (B, Tk, C, h, w) at ``pose_k``:
        zeros without poses; an error without memory (a recall model must be given it)."""
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
        """One frame x (B, C, h, w) at time `time` (an int, or one per row; default: after the
        newest cached frame), attending to the cached frames; `pose` (3,) or (B, 3). Returns its
        x0 prediction (B, C, h, w); with `append` its keys/values join the cache as a new frame
        (use append=True for context frames). With an `attention` list, each temporal layer
        appends where the frame's queries looked: (B, cached frames + 1), row b's own frames
        first (``cache.lengths[b]`` of them, as before the call), then the frame itself.
        ``memory`` (B, C, h, w): the frame's clean latent, which a pose-recall model keeps for
        later frames when the frame is appended. ``copy_gate_shift``: added to the copy gate's
        logit (pose recall; a rollout's choice, see :meth:`_frames`)."""
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
        """Append T frames x (B, T, C, h, w) in one batched pass: the same keys/values and
        predictions as T calls of ``step(..., append=True)`` (tested), for context frames.
        ``times``: T ints for every row or B lists (per row); ``counts[b]``: row b's first
        ``counts[b]`` frames are real, the rest padding (not kept, predictions meaningless).
        ``memory`` (B, T, C, h, w): the frames' clean latents (pose recall); ``observed`` (B, T)
        bool: False for frames the model generated, which later frames recall only when no
        observed frame is kept (None: all observed)."""
        return self._extend(cache, x, tau, d, actions, poses, times, append=True, counts=counts, memory=memory,
                            observed=observed)

    def _extend(self, cache: KVCache, x, tau, d, actions, poses, times, *, append: bool, attention: list | None = None,
                counts: list[int] | None = None, memory=None, observed: torch.Tensor | None = None,
                copy_gate_shift: float = 0.0):
        """T frames x (B, T, C, h, w) at `times` (default: after each row's newest cached frame):
        frame i sees every cached frame of its row and the new frames up to itself. Returns the
        x0 predictions.

        Rows of different lengths (a ragged cache, or ``counts`` below T) attend through a
        per-row key order: each row's cached frames, then its new frames, then padding, which
        the mask hides; so each row computes what it would compute alone (to float rounding)."""
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
            rows = _row_lists(list(times), b, t)
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
            values = _extended(held_values, new)
            return values if index is None else _gather_rows(values, index, valid, 0.0)

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
