"""Transformer building blocks: RMSNorm, SwiGLU, rotary position embeddings, and attention with
QK-norm, grouped-query heads and an optional logit soft-cap."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Normalise in fp32: bf16 sums of squares lose too much precision.
        xf = x.float()
        y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return y.type_as(x) * self.weight


class SwiGLU(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.gate_up = nn.Linear(dim, 2 * hidden, bias=False)
        self.down = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up(x).chunk(2, dim=-1)
        return self.down(F.silu(gate) * up)


# ---------------------------------------------------------------------------------------------
# Patches: latent frames <-> token sequences (FAR and the dynamics model share the layout).
# ---------------------------------------------------------------------------------------------
def pack(x: torch.Tensor, p: int) -> torch.Tensor:
    """(B, T, C, H, W) -> (B, T*(H/p)*(W/p), C*p*p): frame-major, then row, then column."""
    return rearrange(x, "b t c (gh p1) (gw p2) -> b (t gh gw) (c p1 p2)", p1=p, p2=p)


def unpack(x: torch.Tensor, t: int, h: int, w: int, p: int) -> torch.Tensor:
    """The inverse of :func:`pack`: (B, T*(H/p)*(W/p), C*p*p) -> (B, T, C, H, W)."""
    return rearrange(x, "b (t gh gw) (c p1 p2) -> b t c (gh p1) (gw p2)", t=t, gh=h // p, gw=w // p, p1=p, p2=p)


# ---------------------------------------------------------------------------------------------
# Rotary embeddings. A table is (cos, sin), each (L, head_dim); positions may be fractional.
# ---------------------------------------------------------------------------------------------
def rope_angles(positions: torch.Tensor, dim: int, base: float = 10_000.0) -> torch.Tensor:
    """Angles (L, dim/2) for 1D positions (L,)."""
    freqs = base ** (-torch.arange(0, dim, 2, dtype=torch.float32, device=positions.device) / dim)
    return positions.float()[:, None] * freqs[None, :]


def rope_table(angles: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(cos, sin) of shape (L, 2 * angles.shape[1]) for the rotate-half convention."""
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos(), angles.sin()


def rope_1d(positions: torch.Tensor, head_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    return rope_table(rope_angles(positions, head_dim))


def rope_2d(rows: torch.Tensor, cols: torch.Tensor, head_dim: int, n_plain: int) -> tuple[torch.Tensor, torch.Tensor]:
    """2D RoPE: half of each head rotates with the row, half with the column. `n_plain` extra
    tokens (registers, tau/d, action) follow the grid and get no rotation (angle 0)."""
    quarter = head_dim // 4
    grid = torch.cat([rope_angles(rows, 2 * quarter), rope_angles(cols, 2 * quarter)], dim=-1)
    pad = head_dim // 2 - grid.shape[1]  # head_dim not divisible by 4: leave the rest unrotated
    grid = F.pad(grid, (0, pad))
    plain = torch.zeros(n_plain, grid.shape[1], device=grid.device)
    return rope_table(torch.cat([grid, plain], dim=0))


def apply_rope(x: torch.Tensor, table: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """x (..., L, head_dim) rotated by a table of (L, head_dim)."""
    cos, sin = table
    x1, x2 = x.chunk(2, dim=-1)
    rotated = torch.cat([-x2, x1], dim=-1)
    return (x.float() * cos + rotated.float() * sin).type_as(x)


class Attention(nn.Module):
    """Multi-head attention with QK-norm and grouped-query heads (kv_heads <= heads). `project` gives
    rotated q (N, H, L, hd) and k, v (N, KVH, L, hd), cacheable at the grouped size; `attend` mixes them.
    A soft-cap (cap * tanh(logits / cap), Gemma 2) computes attention explicitly, else SDPA kernels."""

    def __init__(self, dim: int, heads: int, kv_heads: int, softcap: float = 0.0):
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = heads, kv_heads, dim // heads
        self.softcap = softcap
        self.q = nn.Linear(dim, heads * self.head_dim, bias=False)
        self.kv = nn.Linear(dim, 2 * kv_heads * self.head_dim, bias=False)
        self.out = nn.Linear(heads * self.head_dim, dim, bias=False)
        self.q_norm = RMSNorm(self.head_dim)
        self.k_norm = RMSNorm(self.head_dim)

    def project(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor]):
        # x (N, L, D) -> q (N, H, L, hd); k, v (N, KVH, L, hd)
        q = rearrange(self.q(x), "n l (h hd) -> n h l hd", h=self.heads)
        k, v = rearrange(self.kv(x), "n l (two h hd) -> two n h l hd", two=2, h=self.kv_heads)
        q = apply_rope(self.q_norm(q), rope)
        k = apply_rope(self.k_norm(k), rope)
        return q, k, v

    def attend(self, q, k, v, mask: torch.Tensor | None = None, causal: bool = False,
               bias: torch.Tensor | None = None, weights: list | None = None) -> torch.Tensor:
        """mask: bool, True = may attend, broadcastable to (N, H, Lq, Lk); or `causal` (Lq = Lk).
        bias: float, added to the (capped) logits, broadcastable likewise. With a `weights`
        list, the attention probabilities averaged over heads, (N, Lq, Lk), are appended to it."""
        groups = self.heads // self.kv_heads
        if groups > 1:
            k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
        explicit = self.softcap > 0 or weights is not None
        if causal and (explicit or bias is not None):
            mask = torch.ones(q.shape[-2], k.shape[-2], dtype=torch.bool, device=q.device).tril()
        if explicit:
            logits = (q @ k.transpose(-2, -1)) / math.sqrt(self.head_dim)
            if self.softcap > 0:
                logits = self.softcap * torch.tanh(logits / self.softcap)
            if bias is not None:
                logits = logits + bias
            if mask is not None:
                logits = logits.masked_fill(~mask, float("-inf"))
            probs = logits.softmax(dim=-1)
            if weights is not None:
                weights.append(probs.float().mean(dim=1))
            out = probs.type_as(v) @ v
        elif bias is not None:  # the fused kernels take a float mask: the bias, -inf where masked
            bias = bias if mask is None else bias.masked_fill(~mask, float("-inf"))
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype))
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal and mask is None)
        return self.out(rearrange(out, "n h l hd -> n l (h hd)"))  # (N, Lq, D)


def append_index(lengths: list[int], counts: list[int], held: int, width: int | None = None):
    """(indices, valid), each (B, width), into [held | new] frames that put row b's ``counts[b]`` new frames
    right after its ``lengths[b]`` held ones (ragged rows, left-aligned); padding points at slot 0."""
    width = max(n + c for n, c in zip(lengths, counts)) if width is None else width
    slots = torch.arange(width)[None]
    n, c = torch.tensor(lengths)[:, None], torch.tensor(counts)[:, None]
    index = torch.where(slots < n, slots, torch.where(slots < n + c, held + slots - n, 0))
    return index, slots < n + c
