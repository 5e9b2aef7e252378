"""Frame tokenizer: frames (3, H, W) in [0, 1] <-> latents (C, h, w) in [-1, 1] through a tanh bottleneck.
``conv`` (CPU default) or DreamerV4-style ``transformer`` (docs/models.md#tokenizer); checkpoints store
``tokenizer_config(...)``, from which ``build_tokenizer`` builds either."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import nn

KIND = "tokenizer"
ARCH_KEYS = {  # the params keys each architecture is built from
    "conv": ("latent_channels", "downsample", "base_channels", "patch_size"),
    "transformer": ("latent_channels", "downsample", "patch_size", "dim", "depth", "heads"),
}


def tokenizer_config(params, image_size: int | tuple[int, int]) -> dict:
    """The checkpoint config: the architecture's keys of the `tokenizer` params (TokenizerParams or dict),
    the frame size and the latent shape they give."""
    h, w = (image_size, image_size) if isinstance(image_size, int) else image_size
    t = params if isinstance(params, dict) else params.model_dump()
    config = {"arch": t["arch"], "image_size": [h, w], **{k: t[k] for k in ARCH_KEYS[t["arch"]]}}
    config["latent_shape"] = [config["latent_channels"], h // config["downsample"], w // config["downsample"]]
    return config


def random_patch_mask(batch: int, grid: tuple[int, int], max_prob: float, device=None) -> torch.Tensor | None:
    """Bool (B, gh, gw): each sample masks patches with its own probability p ~ U(0, max_prob)."""
    if max_prob <= 0:
        return None
    p = torch.rand(batch, 1, 1, device=device) * max_prob
    return torch.rand(batch, *grid, device=device) < p


# --------------------------------------------------------------------------------------------
# convolutional
# --------------------------------------------------------------------------------------------
def _norm(ch: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(8, ch), ch)


class ResBlock(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.block = nn.Sequential(
            _norm(ch), nn.SiLU(), nn.Conv2d(ch, ch, 3, padding=1), _norm(ch), nn.SiLU(), nn.Conv2d(ch, ch, 3, padding=1)
        )

    def forward(self, x):
        return x + self.block(x)


class ConvEncoder(nn.Module):
    def __init__(self, latent_channels: int, downsample: int, base_channels: int):
        super().__init__()
        levels = int(math.log2(downsample))
        chs = [base_channels * 2**i for i in range(levels + 1)]
        layers: list[nn.Module] = [nn.Conv2d(3, chs[0], 3, padding=1)]
        for i in range(levels):
            layers += [ResBlock(chs[i]), nn.Conv2d(chs[i], chs[i + 1], 4, stride=2, padding=1)]
        layers += [ResBlock(chs[-1]), _norm(chs[-1]), nn.SiLU(), nn.Conv2d(chs[-1], latent_channels, 3, padding=1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x)


class Upsample2x(nn.Module):
    """Nearest-neighbour x2, the values of ``nn.Upsample(scale_factor=2)``: an expand and a reshape run
    several times faster on CPU than interpolate's kernel at the decoder's sizes."""

    def forward(self, x):  # (B, C, H, W) -> (B, C, 2H, 2W)
        return repeat(x, "b c h w -> b c (h h2) (w w2)", h2=2, w2=2)


class ConvDecoder(nn.Module):
    def __init__(self, latent_channels: int, downsample: int, base_channels: int):
        super().__init__()
        levels = int(math.log2(downsample))
        chs = [base_channels * 2**i for i in range(levels + 1)][::-1]
        layers: list[nn.Module] = [nn.Conv2d(latent_channels, chs[0], 3, padding=1), ResBlock(chs[0])]
        for i in range(levels):
            layers += [Upsample2x(), nn.Conv2d(chs[i], chs[i + 1], 3, padding=1),
                       ResBlock(chs[i + 1])]
        layers += [_norm(chs[-1]), nn.SiLU(), nn.Conv2d(chs[-1], 3, 3, padding=1)]
        self.net = nn.Sequential(*layers)

    def forward(self, z):
        return self.net(z)


# --------------------------------------------------------------------------------------------
# transformer (DreamerV4-style)
# --------------------------------------------------------------------------------------------
class Block(nn.Module):
    """Pre-norm transformer block: self-attention and an MLP, each residual."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, x):
        # x (B, N, D) -> q, k, v (B, heads, N, D/heads)
        q, k, v = rearrange(self.qkv(self.norm1(x)), "b n (three h hd) -> three b h n hd", three=3, h=self.heads)
        out = F.scaled_dot_product_attention(q, k, v)
        x = x + self.proj(rearrange(out, "b h n hd -> b n (h hd)"))
        return x + self.mlp(self.norm2(x))


def regrid(tokens: torch.Tensor, src: tuple[int, int], dst: tuple[int, int]) -> torch.Tensor:
    """Tokens (B, src_h*src_w, D) on one grid -> (B, dst_h*dst_w, D) on another over the same image
    (area: averaged when coarser, repeated when finer)."""
    grid = rearrange(tokens, "b (h w) d -> b d h w", h=src[0], w=src[1])
    return rearrange(F.interpolate(grid, size=dst, mode="area"), "b d h w -> b (h w) d")


class TransformerEncoder(nn.Module):
    def __init__(self, image_size, latent_channels, downsample, patch_size, dim, depth, heads):
        super().__init__()
        h, w = image_size
        self.p = patch_size
        self.patch_grid, self.latent_grid = (h // patch_size, w // patch_size), (h // downsample, w // downsample)
        self.n_patches = (h // patch_size) * (w // patch_size)
        self.n_latents = (h // downsample) * (w // downsample)
        self.patch_in = nn.Linear(3 * patch_size**2, dim)
        self.mask_token = nn.Parameter(torch.zeros(dim))
        self.pos = nn.Parameter(torch.randn(self.n_patches + self.n_latents, dim) * 0.02)
        self.latent_queries = nn.Parameter(torch.randn(self.n_latents, dim) * 0.02)
        self.blocks = nn.ModuleList(Block(dim, heads) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.to_latent = nn.Linear(dim, latent_channels)

    def forward(self, x, mask=None):
        patches = rearrange(x, "b c (gh p1) (gw p2) -> b (gh gw) (c p1 p2)", p1=self.p, p2=self.p)  # (B, N, 3·p·p)
        tokens = self.patch_in(patches)
        if mask is not None:  # masked autoencoding: hidden patches become a learned token
            tokens = torch.where(mask.flatten(1)[..., None], self.mask_token.to(tokens.dtype), tokens)
        # Each latent token starts from the patches under it: a local path from the first step
        # (learned queries alone stalled at the dataset-mean frame; docs/history.md).
        latents = self.latent_queries + regrid(tokens, self.patch_grid, self.latent_grid)
        tokens = torch.cat([tokens, latents], 1) + self.pos
        for blk in self.blocks:
            tokens = blk(tokens)
        return self.to_latent(self.norm(tokens[:, self.n_patches :]))  # (B, L, C)


class TransformerDecoder(nn.Module):
    def __init__(self, image_size, latent_channels, downsample, patch_size, dim, depth, heads):
        super().__init__()
        self.image_size, self.p = tuple(image_size), patch_size
        h, w = image_size
        self.patch_grid, self.latent_grid = (h // patch_size, w // patch_size), (h // downsample, w // downsample)
        self.n_patches = (h // patch_size) * (w // patch_size)
        self.n_latents = (h // downsample) * (w // downsample)
        self.latent_in = nn.Linear(latent_channels, dim)
        self.patch_queries = nn.Parameter(torch.randn(self.n_patches, dim) * 0.02)
        self.pos = nn.Parameter(torch.randn(self.n_latents + self.n_patches, dim) * 0.02)
        self.blocks = nn.ModuleList(Block(dim, heads) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.patch_out = nn.Linear(dim, 3 * patch_size**2)

    def forward(self, z):  # z: (B, L, C)
        latents = self.latent_in(z)
        queries = self.patch_queries + regrid(latents, self.latent_grid, self.patch_grid)  # local path, as in the encoder
        tokens = torch.cat([latents, queries], 1) + self.pos
        for blk in self.blocks:
            tokens = blk(tokens)
        patches = self.patch_out(self.norm(tokens[:, self.n_latents :]))  # (B, N, 3·p·p)
        gh, gw = self.patch_grid
        return rearrange(patches, "b (gh gw) (c p1 p2) -> b c (gh p1) (gw p2)", gh=gh, gw=gw, p1=self.p, p2=self.p)


# --------------------------------------------------------------------------------------------
# the tokenizer
# --------------------------------------------------------------------------------------------
class Tokenizer(nn.Module):
    """encode: pixels (B, 3, H, W) in [0, 1] -> latents (B, C, h, w) in [-1, 1]; decode: back."""

    def __init__(self, config: dict):
        super().__init__()
        self.config = dict(config)
        self.arch = config["arch"]
        self.image_size = tuple(config["image_size"])
        self.latent_shape = tuple(config["latent_shape"])
        self.patch_size = config["patch_size"]
        c, d = config["latent_channels"], config["downsample"]
        if self.arch == "conv":
            self.encoder = ConvEncoder(c, d, config["base_channels"])
            self.decoder = ConvDecoder(c, d, config["base_channels"])
        else:
            args = (self.image_size, c, d, config["patch_size"], config["dim"], config["depth"], config["heads"])
            self.encoder, self.decoder = TransformerEncoder(*args), TransformerDecoder(*args)

    @property
    def mask_grid(self) -> tuple[int, int]:
        return (self.image_size[0] // self.patch_size, self.image_size[1] // self.patch_size)

    def _check_pixels(self, pixels: torch.Tensor) -> None:
        if pixels.ndim != 4 or tuple(pixels.shape[1:]) != (3, *self.image_size):
            raise ValueError(f"tokenizer expects pixels (B, 3, {self.image_size[0]}, {self.image_size[1]}), "
                             f"got {tuple(pixels.shape)}")

    def encode(self, pixels: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Latents in [-1, 1]; `mask` (B, gh, gw) bool hides patches (training only)."""
        self._check_pixels(pixels)
        x = pixels * 2 - 1
        if self.arch == "conv":
            if mask is not None:  # hidden patches read as mid-grey (0 after centring)
                p = self.patch_size  # mask (B, gh, gw) -> pixels kept (B, 1, H, W)
                x = x * ~repeat(mask, "b gh gw -> b 1 (gh p1) (gw p2)", p1=p, p2=p)
            return torch.tanh(self.encoder(x))
        z = torch.tanh(self.encoder(x, mask))  # (B, h·w, C)
        _, h, w = self.latent_shape
        return rearrange(z, "b (h w) c -> b c h w", h=h, w=w)

    def decode_raw(self, latents: torch.Tensor) -> torch.Tensor:
        """Unclamped reconstruction (what the training loss sees)."""
        if tuple(latents.shape[1:]) != self.latent_shape:
            raise ValueError(f"tokenizer expects latents (B, {', '.join(map(str, self.latent_shape))}), "
                             f"got {tuple(latents.shape)}")
        z = latents if self.arch == "conv" else rearrange(latents, "b c h w -> b (h w) c")
        return self.decoder(z) * 0.5 + 0.5

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Pixels in [0, 1]."""
        return self.decode_raw(latents).clamp(0, 1)

    def forward(self, pixels: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.encode(pixels, mask)
        return self.decode_raw(z), z


def build_tokenizer(config: dict) -> Tokenizer:
    """The tokenizer a config dict describes; ValueError on missing or extra keys, or shapes that do not
    fit (whole patches, the latent shape that image_size / downsample gives)."""
    arch = config.get("arch")
    if arch not in ARCH_KEYS:
        raise ValueError(f"tokenizer config: arch must be one of {sorted(ARCH_KEYS)}, got {arch!r}")
    keys = {"arch", "image_size", "latent_shape", *ARCH_KEYS[arch]}
    missing, unexpected = sorted(keys - set(config)), sorted(set(config) - keys)
    if missing or unexpected:
        raise ValueError(f"tokenizer config: missing keys {missing}, unexpected keys {unexpected}")
    h, w = config["image_size"]
    d, p = config["downsample"], config["patch_size"]
    expected = [config["latent_channels"], h // d, w // d]
    if h % d or w % d or list(config["latent_shape"]) != expected:
        raise ValueError(f"tokenizer config: latent_shape {config['latent_shape']} does not follow from image_size {[h, w]} "
                         f"/ downsample {d} (expected {expected})")
    if h % p or w % p:
        raise ValueError(f"tokenizer config: patch_size {p} does not divide image_size {[h, w]}")
    return Tokenizer(config)
