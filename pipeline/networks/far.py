"""FAR and FAR_Long (Gu et al., arXiv 2503.19325) from diffusers blocks, under the official module names so
that the official checkpoints load with ``strict=True`` (docs/benchmark.md#far-as-host-official-weights).
Frames carry their own flow-matching timestep (-1: clean); attention is block-causal with a 3-axis RoPE;
FAR_Long feeds frames older than ``short_term_ctx_winsize`` as coarse patches through ``add_*`` projections."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from diffusers.models.attention import FeedForward
from diffusers.models.attention_processor import Attention
from diffusers.models.embeddings import (
    LabelEmbedding,
    TimestepEmbedding,
    Timesteps,
    apply_rotary_emb,
)
from diffusers.models.transformers.transformer_flux import FluxPosEmbed
from torch import nn

from pipeline.networks.layers import append_index, pack, unpack


@dataclass(frozen=True)
class FARConfig:
    """The official constructor arguments (``FAR(**asdict(cfg))`` in the reference code)."""

    in_channels: int = 32
    out_channels: int = 32
    num_layers: int = 12
    attention_head_dim: int = 64
    num_attention_heads: int = 12
    axes_dims_rope: tuple[int, int, int] = (16, 24, 24)
    patch_size: int = 1
    slope_scale: float = 0.0
    short_term_ctx_winsize: int = 16
    context_patch_size: int | None = None  # set: FAR_Long (long-term context path)
    condition_cfg: dict | None = field(default=None, hash=False)  # {type: label|action, num_classes|num_action_classes}

    @property
    def inner_dim(self) -> int:
        return self.num_attention_heads * self.attention_head_dim

    @property
    def is_long(self) -> bool:
        return self.context_patch_size is not None

    @property
    def condition_type(self) -> str | None:
        return None if self.condition_cfg is None else self.condition_cfg["type"]

    @property
    def null_action(self) -> int:
        if self.condition_type != "action":
            raise ValueError("this FAR has no action conditioning")
        return int(self.condition_cfg["num_action_classes"])


# Presets of the reference code (B/M/L/XL; FAR_Long in B/M); condition_cfg etc. as keyword overrides.
_SIZES = {"B": (12, 12), "M": (12, 16), "L": (24, 16), "XL": (28, 18)}  # (num_layers, heads)


def far_config(size: str, long: bool = False, **overrides) -> FARConfig:
    if size not in _SIZES or (long and size not in ("B", "M")):
        valid = [f"FAR_{s}" for s in _SIZES] + ["FAR_B_Long", "FAR_M_Long"]
        raise ValueError(f"unknown FAR preset {'FAR_' + size + ('_Long' if long else '')!r}; valid: {valid}")
    layers, heads = _SIZES[size]
    base = dict(num_layers=layers, num_attention_heads=heads)
    if long:
        base["context_patch_size"] = 4
    return FARConfig(**{**base, **overrides})


# ----------------------------------------------------------------------------------------------
# blocks
# ----------------------------------------------------------------------------------------------
# diffusers has both adaLN classes, but they chunk the conditioning on dim 1 and so expect one
# vector per sample; FAR conditions every token with its own frame's timestep (``_temb``), so
# these two take (B, N, D). Module names are diffusers' (the checkpoints' keys).
class AdaLayerNormZeroSingle(nn.Module):
    """LayerNorm modulated by (shift, scale) and a residual gate, all from the conditioning."""

    def __init__(self, dim: int):
        super().__init__()
        self.silu = nn.SiLU()
        self.linear = nn.Linear(dim, 3 * dim)
        self.norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        shift, scale, gate = self.linear(self.silu(emb)).chunk(3, dim=-1)
        return self.norm(x) * (1 + scale) + shift, gate


class AdaLayerNormContinuous(nn.Module):
    """Final norm: (scale, shift) from the conditioning (note the order: scale first)."""

    def __init__(self, dim: int):
        super().__init__()
        self.silu = nn.SiLU()
        self.linear = nn.Linear(dim, 2 * dim)
        self.norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        scale, shift = self.linear(self.silu(emb).to(x.dtype)).chunk(2, dim=-1)
        return self.norm(x) * (1 + scale) + shift


@dataclass
class RowLayout:
    """Ragged rows of one FAR call: per row, the key token order over [cached | new] (own cached, own new,
    padding), its queries' rotary tables (cos, sin), each (B, 1, queries, D), and the key tokens the cache keeps."""

    key_order: torch.Tensor
    query_rotary: tuple[torch.Tensor, torch.Tensor]
    keep_tokens: int = 0


def _rotate(x: torch.Tensor, rotary: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """diffusers' ``apply_rotary_emb`` (interleaved pairs) with tables broadcast against x (B, H, S, D) as they are."""
    cos, sin = rotary
    x_real, x_imag = x.reshape(*x.shape[:-1], -1, 2).unbind(-1)
    x_rotated = torch.stack([-x_imag, x_real], dim=-1).flatten(3)
    return (x.float() * cos + x_rotated.float() * sin).to(x.dtype)


@dataclass
class LayerKV:
    """Pre-RoPE keys/values (B, heads, tokens, head_dim) of the cached frames of one layer."""

    key: torch.Tensor | None = None
    value: torch.Tensor | None = None


class FarAttnProcessor:
    """Block-causal attention over [long-term tokens (``add_*`` projections, FAR_Long) | short-term tokens].
    With a layer cache, cached keys/values come first and those of the first ``cache_tokens`` new tokens
    join it; ``rotary_emb`` covers all keys, the queries take its last rows."""

    def __call__(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        rotary_emb: tuple[torch.Tensor, torch.Tensor] | None = None,
        n_long: int = 0,
        layer_cache: LayerKV | None = None,
        cache_tokens: int = 0,
        attention: list | None = None,
        rows: "RowLayout | None" = None,
    ) -> torch.Tensor:
        b = hidden_states.shape[0]

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.view(b, -1, attn.heads, t.shape[-1] // attn.heads).transpose(1, 2)

        long_h, short_h = hidden_states[:, :n_long], hidden_states[:, n_long:]
        q = attn.norm_q(heads(attn.to_q(short_h)))
        k = attn.norm_k(heads(attn.to_k(short_h)))
        v = heads(attn.to_v(short_h))
        if n_long:
            q = torch.cat([attn.norm_added_q(heads(attn.add_q_proj(long_h))), q], dim=2)
            k = torch.cat([attn.norm_added_k(heads(attn.add_k_proj(long_h))), k], dim=2)
            v = torch.cat([heads(attn.add_v_proj(long_h)), v], dim=2)

        if layer_cache is not None and layer_cache.key is not None:
            k = torch.cat([layer_cache.key, k], dim=2)
            v = torch.cat([layer_cache.value, v], dim=2)
        if rows is not None:  # ragged rows: each row's cached frames, its new frames, then padding
            order = rows.key_order[:, None, :, None]
            k = k.gather(2, order.expand(-1, k.shape[1], -1, k.shape[3]))
            v = v.gather(2, order.expand(-1, v.shape[1], -1, v.shape[3]))
            if layer_cache is not None and rows.keep_tokens:
                layer_cache.key, layer_cache.value = k[:, :, : rows.keep_tokens], v[:, :, : rows.keep_tokens]
        elif layer_cache is not None and cache_tokens:
            n_cached = k.shape[2] - q.shape[2] + cache_tokens
            layer_cache.key, layer_cache.value = k[:, :, :n_cached], v[:, :, :n_cached]

        if rows is not None:
            q = _rotate(q, rows.query_rotary)  # each row's queries at its own frame indices
            k = apply_rotary_emb(k, rotary_emb)
        elif rotary_emb is not None:
            cos, sin = rotary_emb
            q = apply_rotary_emb(q, (cos[-q.shape[2]:], sin[-q.shape[2]:]))
            k = apply_rotary_emb(k, rotary_emb)

        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attention_mask)
        out = out.transpose(1, 2).reshape(b, -1, attn.heads * out.shape[-1]).to(q.dtype)
        if attention is not None:  # the probabilities themselves: (B, Lq, Lk), mean over heads
            logits = (q.float() @ k.float().transpose(-2, -1)) / q.shape[-1] ** 0.5
            if attention_mask is not None:
                logits = logits.masked_fill(~attention_mask, float("-inf")) if attention_mask.dtype == torch.bool \
                    else logits + attention_mask
            attention.append(logits.softmax(dim=-1).mean(dim=1))

        long_o, short_o = out[:, :n_long], out[:, n_long:]
        short_o = attn.to_out[1](attn.to_out[0](short_o))
        if n_long and attn.to_add_out is not None:
            long_o = attn.to_add_out(long_o)
        return torch.cat([long_o, short_o], dim=1)


class FARBlock(nn.Module):
    def __init__(self, cfg: FARConfig, last: bool):
        super().__init__()
        dim = cfg.inner_dim
        self.norm1 = AdaLayerNormZeroSingle(dim)
        long_kwargs = dict(added_kv_proj_dim=dim, context_pre_only=False) if cfg.is_long else {}
        self.attn = Attention(
            query_dim=dim,
            dim_head=cfg.attention_head_dim,
            heads=cfg.num_attention_heads,
            out_dim=dim,
            bias=True,
            qk_norm="rms_norm",
            eps=1e-6,
            processor=FarAttnProcessor(),
            **long_kwargs,
        )
        if cfg.is_long and last:
            self.attn.to_add_out = None  # the long-term tokens' last output is never used
        self.norm2 = AdaLayerNormZeroSingle(dim)
        self.mlp = FeedForward(dim=dim, dim_out=dim, activation_fn="gelu-approximate")

    def forward(self, x, temb, rotary_emb, mask, n_long=0, layer_cache=None, cache_tokens=0, attention=None, rows=None):
        h, gate = self.norm1(x, temb)
        # The processor directly: diffusers' Attention.forward inspects its signature on every call.
        x = x + gate * self.attn.processor(
            self.attn,
            h,
            attention_mask=mask,
            rotary_emb=rotary_emb,
            n_long=n_long,
            layer_cache=layer_cache,
            cache_tokens=cache_tokens,
            attention=attention,
            rows=rows,
        )
        h, gate = self.norm2(x, temb)
        return x + gate * self.mlp(h)


# ----------------------------------------------------------------------------------------------
# KV cache
# ----------------------------------------------------------------------------------------------
class FarKVCache:
    """Per layer, pre-RoPE keys/values of clean context frames (short-term tokens only), as the official code:
    RoPE is applied at every call, so evicting frames re-indexes the kept ones as a recompute would."""

    def __init__(self, num_layers: int):
        self.layers = [LayerKV() for _ in range(num_layers)]
        self.n_frames = 0
        self.tokens_per_frame = 0
        self.row_frames: list[int] | None = None  # a stacked cache: frames per batch row (see stack)

    def evict(self, keep: list[int]) -> None:
        """Keep only the cached frames at these indices (0 = oldest), in this order."""
        if any(not 0 <= i < self.n_frames for i in keep):
            raise IndexError(f"evict: indices {keep} out of range for {self.n_frames} cached frames")
        if self.n_frames == 0:
            return
        tpf = self.tokens_per_frame
        idx = torch.tensor([i * tpf + j for i in keep for j in range(tpf)], dtype=torch.long)
        for layer in self.layers:
            idx_d = idx.to(layer.key.device)
            layer.key = layer.key.index_select(2, idx_d)
            layer.value = layer.value.index_select(2, idx_d)
        self.n_frames = len(keep)

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for lk in self.layers for t in (lk.key, lk.value) if t is not None)

    @classmethod
    def stack(cls, caches: list["FarKVCache"], rows: int = 1) -> "FarKVCache":
        """One cache of ``caches``' batch rows in order (``rows`` each, e.g. 2 under CFG), padded to the most
        frames; ``row_frames`` gives each row's real count (for ``FAR.forward(rows=...)``)."""
        out = cls(len(caches[0].layers))
        out.tokens_per_frame = max(c.tokens_per_frame for c in caches)
        out.n_frames = max(c.n_frames for c in caches)
        sizes = [rows] * len(caches)
        out.row_frames = [c.n_frames for c, size in zip(caches, sizes) for _ in range(size)]
        width = out.n_frames * out.tokens_per_frame

        def padded(t, like, size):
            if t is None:
                return like.new_zeros(size, like.shape[1], width, like.shape[3])
            return t if t.shape[2] == width else F.pad(t, (0, 0, 0, width - t.shape[2]))

        for i, layer in enumerate(out.layers):
            held = [c.layers[i] for c in caches]
            like = next((lk.key for lk in held if lk.key is not None), None)
            if like is not None:
                layer.key = torch.cat([padded(lk.key, like, n) for lk, n in zip(held, sizes)])
                layer.value = torch.cat([padded(lk.value, like, n) for lk, n in zip(held, sizes)])
        return out

    def split(self, sizes: list[int]) -> list["FarKVCache"]:
        """Back to one cache per member of :meth:`stack` (``sizes``: its batch rows), each with its own frames."""
        frames = self.row_frames or [self.n_frames] * sum(sizes)
        out, row = [], 0
        for size in sizes:
            cache = FarKVCache(len(self.layers))
            cache.tokens_per_frame, cache.n_frames = self.tokens_per_frame, frames[row]
            keep = cache.n_frames * self.tokens_per_frame
            for mine, layer in zip(cache.layers, self.layers):
                if layer.key is not None and keep:
                    mine.key = layer.key[row : row + size, :, :keep].clone()
                    mine.value = layer.value[row : row + size, :, :keep].clone()
            out.append(cache)
            row += size
        return out


# ----------------------------------------------------------------------------------------------
# the transformer
# ----------------------------------------------------------------------------------------------
def grid_ids(frames: torch.Tensor, h: int, w: int, stride: int = 1) -> torch.Tensor:
    """RoPE ids (frame, row, col) per token; coarse patches sit on the fine grid (``stride``)."""
    rows, cols = torch.arange(h) * float(stride), torch.arange(w) * float(stride)
    f, r, c = torch.meshgrid(frames.float(), rows, cols, indexing="ij")
    return torch.stack([f, r, c], dim=-1).reshape(-1, 3)


class FAR(nn.Module):
    """FAR (and FAR_Long when ``cfg.context_patch_size`` is set); see the module docstring."""

    def __init__(self, cfg: FARConfig):
        super().__init__()
        self.cfg = cfg
        d, p = cfg.inner_dim, cfg.patch_size
        self.x_embedder = nn.Linear(cfg.in_channels * p * p, d)
        if cfg.is_long:
            self.context_embedder = nn.Linear(cfg.in_channels * cfg.context_patch_size**2, d)
        self.time_proj = Timesteps(num_channels=256, flip_sin_to_cos=True, downscale_freq_shift=1)
        self.timestep_embedder = TimestepEmbedding(in_channels=256, time_embed_dim=d)
        if cfg.condition_type == "label":
            self.label_embedder = LabelEmbedding(cfg.condition_cfg["num_classes"], d, dropout_prob=0.1)
        elif cfg.condition_type == "action":
            self.action_embedder = LabelEmbedding(cfg.condition_cfg["num_action_classes"], d, dropout_prob=0.1)
        elif cfg.condition_cfg is not None:
            raise ValueError(f"condition_cfg.type must be 'label' or 'action', got {cfg.condition_type!r}")
        self.pos_embed = FluxPosEmbed(theta=10000, axes_dim=list(cfg.axes_dims_rope))
        self.transformer_blocks = nn.ModuleList(
            [FARBlock(cfg, last=i == cfg.num_layers - 1) for i in range(cfg.num_layers)]
        )
        self.norm_out = AdaLayerNormContinuous(d)
        self.proj_out = nn.Linear(d, p * p * cfg.out_channels)
        if cfg.is_long:
            self.context_proj_out = nn.Linear(d, cfg.context_patch_size**2 * cfg.out_channels)

    def new_cache(self) -> FarKVCache:
        return FarKVCache(self.cfg.num_layers)

    def _temb(self, timestep: torch.Tensor, cond: torch.Tensor | None, tokens_per_frame: int, dtype) -> torch.Tensor:
        """Per-token conditioning: timestep embedding (+ the frame's action) of the token's frame."""
        b, t = timestep.shape
        emb = self.timestep_embedder(self.time_proj(timestep.reshape(-1).to(dtype)).to(dtype)).view(b, t, -1)
        if self.cfg.condition_type == "action":
            emb = emb + self.action_embedder(cond.reshape(-1)).view(b, t, -1)
        return emb.repeat_interleave(tokens_per_frame, dim=1)

    def _mask(self, frame_idx: torch.Tensor, n_query: int) -> torch.Tensor:
        """Block-causal mask for the last ``n_query`` tokens (an ALiBi-like bias with ``slope_scale``, 0 officially)."""
        rel = frame_idx[None, :] - frame_idx[-n_query:, None]  # key frame - query frame
        allowed = rel <= 0
        if not self.cfg.slope_scale:
            return allowed
        return (self.cfg.slope_scale * rel.float()).masked_fill(~allowed, float("-inf"))

    def _long_term(self, frames: torch.Tensor, timestep: torch.Tensor, actions: torch.Tensor | None):
        """FAR_Long's coarse path for the n_long oldest frames: tokens, conditioning, rotary ids, frame indices."""
        n_long, (h, w) = frames.shape[1], frames.shape[-2:]
        p, cp = self.cfg.patch_size, self.cfg.context_patch_size
        ctpf = (h // cp) * (w // cp)
        tokens = self.context_embedder(pack(frames, cp))
        # long-term frames carry twice their timestep (-1 -> -2): the reference's convention
        temb = self._temb(timestep * 2, actions, ctpf, tokens.dtype)
        ids = grid_ids(torch.arange(n_long), h // cp, w // cp, stride=cp // p)
        return tokens, temb, ids, torch.arange(n_long).repeat_interleave(ctpf)

    def forward(
        self,
        x: torch.Tensor,
        timestep: torch.Tensor,
        *,
        actions: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        cache: FarKVCache | None = None,
        cache_frames: int | list[int] = 0,
        attention: list | None = None,
        rows: list[int] | None = None,
    ) -> torch.Tensor:
        """Flow-matching velocity of every frame: x (B, T, C, H, W), timestep (B, T) (-1 = clean context),
        actions (B, T) or labels (B,) as the model is conditioned -> (B, T, C_out, H, W). With ``cache``, x holds
        the frames after the cached ones and its first ``cache_frames`` (per row with ``rows``) join the cache.
        ``rows``: ragged rows, row b's first ``rows[b]`` frames are real (:meth:`_forward_rows`)."""
        if rows is not None:
            return self._forward_rows(x, timestep, actions, labels, cache, cache_frames, attention, rows)
        cfg = self.cfg
        b, t, _, h, w = x.shape
        p = cfg.patch_size
        tpf = (h // p) * (w // p)
        n_past = cache.n_frames if cache is not None else 0
        total = n_past + t
        if cfg.condition_type == "action" and actions is None:
            raise ValueError("this FAR is action-conditioned: pass actions (null action = num_action_classes)")
        if cfg.condition_type == "label" and labels is None:
            raise ValueError("this FAR is label-conditioned: pass labels (null label = num_classes)")

        # FAR_Long: frames older than the short-term window enter through the coarse path.
        n_long = max(0, total - cfg.short_term_ctx_winsize) if cfg.is_long else 0
        if n_long and cache is not None:
            raise ValueError(
                f"FAR_Long's KV cache covers the short-term window only ({cfg.short_term_ctx_winsize} frames); "
                f"{total} frames need the long-term path: run without a cache"
            )
        short = x[:, n_long:]
        tokens = self.x_embedder(pack(short, p))
        temb = self._temb(timestep[:, n_long:], None if actions is None else actions[:, n_long:], tpf, tokens.dtype)
        # Keys cover cached + new short-term frames, at their indices in the retained history
        # (with a cache n_long is 0, so this starts at the first cached frame).
        ids = grid_ids(torch.arange(n_long, total), h // p, w // p)
        frame_idx = torch.arange(n_long, total).repeat_interleave(tpf)
        n_long_tokens = 0
        if n_long:  # the long-term frames' coarse tokens go first
            long_tokens, long_temb, long_ids, long_idx = self._long_term(
                x[:, :n_long], timestep[:, :n_long], None if actions is None else actions[:, :n_long])
            tokens, temb = torch.cat([long_tokens, tokens], dim=1), torch.cat([long_temb, temb], dim=1)
            ids, frame_idx = torch.cat([long_ids, ids]), torch.cat([long_idx, frame_idx])
            n_long_tokens = long_tokens.shape[1]
        if cfg.condition_type == "label":
            temb = temb + self.label_embedder(labels).unsqueeze(1)

        rotary = self.pos_embed(ids.to(x.device))
        mask = self._mask(frame_idx.to(x.device), tokens.shape[1])

        layers = [] if attention is not None else None
        for i, block in enumerate(self.transformer_blocks):
            tokens = block(
                tokens,
                temb,
                rotary,
                mask,
                n_long=n_long_tokens,
                layer_cache=None if cache is None else cache.layers[i],
                cache_tokens=cache_frames * tpf,
                attention=layers,
            )
        if layers is not None:  # the last frame's queries, per key frame: (B, frames), mean over layers
            weights = torch.stack(layers).mean(dim=0)[:, -tpf:].mean(dim=1)  # (B, keys)
            attention.append(torch.zeros(b, total, device=weights.device).index_add_(1, frame_idx.to(weights.device), weights))
        if cache is not None and cache_frames:
            cache.n_frames, cache.tokens_per_frame, cache.row_frames = n_past + cache_frames, tpf, None

        tokens = self.norm_out(tokens, temb)
        out = unpack(self.proj_out(tokens[:, n_long_tokens:]), t - n_long, h, w, p)
        if n_long:
            cp = cfg.context_patch_size
            ctx_out = unpack(self.context_proj_out(tokens[:, :n_long_tokens]), n_long, h, w, cp)
            out = torch.cat([ctx_out, out], dim=1)
        return out

    def _forward_rows(self, x, timestep, actions, labels, cache, cache_frames, attention, rows):
        """``forward`` for ragged rows (short-term path only): each row attends to its own cached and real frames,
        keys gathered [cached | new | padding], so a row gets its unbatched result to float rounding."""
        cfg = self.cfg
        b, t, _, h, w = x.shape
        p = cfg.patch_size
        gh, gw = h // p, w // p
        tpf = gh * gw
        dev = x.device
        if cfg.condition_type == "action" and actions is None:
            raise ValueError("this FAR is action-conditioned: pass actions (null action = num_action_classes)")
        if cfg.condition_type == "label" and labels is None:
            raise ValueError("this FAR is label-conditioned: pass labels (null label = num_classes)")
        n = torch.tensor(list(rows), device=dev)
        held = [0] * b if cache is None else (cache.row_frames or [cache.n_frames] * b)
        c = torch.tensor(held, device=dev)
        width_c = 0 if cache is None else cache.n_frames
        if cfg.is_long and int((c + n).max()) > cfg.short_term_ctx_winsize:
            raise ValueError(f"ragged FAR_Long rows beyond the short-term window ({cfg.short_term_ctx_winsize} frames)")
        tokens = self.x_embedder(pack(x, p))
        temb = self._temb(timestep, actions, tpf, tokens.dtype)
        if cfg.condition_type == "label":
            temb = temb + self.label_embedder(labels).unsqueeze(1)

        width = width_c + t  # key frames: [cached | new], gathered per row
        frame_order = append_index(held, [t] * b, width_c, width)[0].to(dev)
        key_order = (frame_order[:, :, None] * tpf + torch.arange(tpf, device=dev)).flatten(1)
        key_frame = torch.arange(width, device=dev).repeat_interleave(tpf)  # after the gather: its frame index
        q_frame = (c[:, None] + torch.arange(t, device=dev)[None]).repeat_interleave(tpf, dim=1)
        key_valid = key_frame[None] < (c + n)[:, None]
        mask = ((key_frame[None, None] <= q_frame[:, :, None]) & key_valid[:, None])[:, None]  # (B, 1, Lq, Lk)
        if cfg.slope_scale:
            rel = (key_frame[None, None] - q_frame[:, :, None]).float()[:, None]
            mask = (cfg.slope_scale * rel).masked_fill(~mask, float("-inf"))
        cos, sin = self.pos_embed(grid_ids(torch.arange(width), gh, gw).to(dev))  # (width * tpf, D)
        q_token = q_frame * tpf + torch.arange(t * tpf, device=dev)[None] % tpf  # its row in the tables
        q_index = q_token[:, None, :, None].expand(-1, 1, -1, cos.shape[-1])
        query_rotary = tuple(table[None, None].expand(b, 1, -1, -1).gather(2, q_index) for table in (cos, sin))

        keep, new_frames = 0, torch.as_tensor(cache_frames or 0, device=dev).expand(b)
        if cache is not None and bool((new_frames > 0).any()):  # frames join the cache
            kept = (c + new_frames).tolist()
            keep = max(kept) * tpf
        layout = RowLayout(key_order, query_rotary, keep)
        layers = [] if attention is not None else None
        for i, block in enumerate(self.transformer_blocks):
            tokens = block(tokens, temb, (cos, sin), mask, layer_cache=None if cache is None else cache.layers[i],
                           attention=layers, rows=layout)
        if layers is not None:  # each row's last real frame's queries, per key frame: (B, frames)
            weights = torch.stack(layers).mean(dim=0)  # (B, Lq, Lk)
            last = ((n - 1)[:, None] * tpf + torch.arange(tpf, device=dev)[None])[:, :, None]
            weights = weights.gather(1, last.expand(-1, -1, weights.shape[2])).mean(dim=1)
            attention.append(torch.zeros(b, width, device=dev, dtype=weights.dtype).index_add_(1, key_frame, weights))
        if cache is not None and keep:
            cache.n_frames, cache.tokens_per_frame, cache.row_frames = keep // tpf, tpf, kept

        tokens = self.norm_out(tokens, temb)
        return unpack(self.proj_out(tokens), t, h, w, p)
