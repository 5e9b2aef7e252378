"""PSNR, SSIM and LPIPS of float (N, 3, H, W) images in [0, 1], one value per image (Tensor[N]);
:func:`video_metrics` gives per-frame values of videos. See docs/benchmark.md (Metrics)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import alexnet

from pipeline.metrics.lpips_weights import alexnet_features_state, linear_layers

__all__ = ["psnr", "pooled_psnr", "ssim", "LPIPS", "video_metrics", "METRICS"]

METRICS = ("psnr", "ssim", "lpips")


def _check_pair(pred: torch.Tensor, target: torch.Tensor) -> None:
    if pred.shape != target.shape:
        raise ValueError(f"pred and target differ in shape: {tuple(pred.shape)} vs {tuple(target.shape)}")
    if pred.ndim != 4 or pred.shape[1] != 3:
        raise ValueError(f"expected images (N, 3, H, W), got {tuple(pred.shape)}")


def psnr(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Peak signal-to-noise ratio per image, data range 1: Tensor[N] in dB (MSE floored at 1e-10: at most
    100 dB, so that identical frames keep means finite)."""
    _check_pair(pred, target)
    mse = (pred.float() - target.float()).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(1.0 / mse.clamp_min(1e-10))


def pooled_psnr(pred: torch.Tensor, target: torch.Tensor, data_range: float) -> float:
    """One PSNR over a whole batch of any shape (e.g. latents): 10·log10(data_range² / MSE), MSE ≥ 1e-12."""
    if pred.shape != target.shape:
        raise ValueError(f"pred and target differ in shape: {tuple(pred.shape)} vs {tuple(target.shape)}")
    mse = (pred.float() - target.float()).pow(2).mean().item()
    return 10 * math.log10(data_range**2 / max(mse, 1e-12))


def _gaussian_window(size: int, sigma: float, device, dtype) -> torch.Tensor:
    x = torch.arange(size, device=device, dtype=dtype) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def ssim(pred: torch.Tensor, target: torch.Tensor, window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Structural similarity per image (Wang et al. 2004: Gaussian window 11, σ 1.5, data range 1, valid
    region; scikit-image's with gaussian_weights=True, use_sample_covariance=False): Tensor[N]."""
    _check_pair(pred, target)
    if min(pred.shape[-2:]) < window:
        raise ValueError(f"SSIM needs images of at least {window}x{window} pixels, got {tuple(pred.shape[-2:])}")
    x, y = pred.float(), target.float()
    c = x.shape[1]
    g = _gaussian_window(window, sigma, x.device, x.dtype)

    def blur(img):  # separable Gaussian, depthwise, valid region only
        img = F.conv2d(img, g.view(1, 1, 1, -1).expand(c, 1, 1, window), groups=c)
        return F.conv2d(img, g.view(1, 1, -1, 1).expand(c, 1, window, 1), groups=c)

    c1, c2 = 0.01**2, 0.03**2
    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    s = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return s.flatten(1).mean(1)


class LPIPS(nn.Module):
    """Learned perceptual distance (Zhang et al. 2018; AlexNet, calibration v0.1, weights offline):
    ``lpips(pred, target) -> Tensor[N]``. Frozen, always in eval mode; gradients flow to the inputs."""

    def __init__(self):
        super().__init__()
        self.net = alexnet(weights=None).features[:12]  # up to relu5; no classifier
        features, self.source = alexnet_features_state()
        self.net.load_state_dict(features, strict=True)
        weights = linear_layers()
        self.lins = nn.ModuleList(nn.Conv2d(w.shape[1], 1, 1, bias=False) for w in weights)
        for lin, w in zip(self.lins, weights):
            lin.weight.data.copy_(w)
        # The lpips ScalingLayer: ImageNet statistics expressed in [-1, 1] units.
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1))
        self.requires_grad_(False).eval()

    def train(self, mode: bool = True) -> "LPIPS":  # always eval: no dropout, fixed metric
        return super().train(False)

    def _features(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = ((2 * x - 1) - self.shift) / self.scale
        taps = []
        for i, layer in enumerate(self.net):
            x = layer(x)
            if i in (1, 4, 7, 9, 11):  # relu1..relu5
                taps.append(x)
        return taps

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        _check_pair(pred, target)
        dtype = self.shift.dtype
        fa, fb = self._features(pred.to(dtype)), self._features(target.to(dtype))
        total = 0
        for a, b, lin in zip(fa, fb, self.lins):
            a = a / (a.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)  # unit-normalise channels
            b = b / (b.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            total = total + lin((a - b) ** 2).mean((2, 3))
        return total.flatten()


@torch.no_grad()
def video_metrics(
    pred: torch.Tensor, target: torch.Tensor, lpips: LPIPS | None = None, batch: int = 64
) -> dict[str, torch.Tensor]:
    """PSNR/SSIM(/LPIPS if given) of videos (B, T, 3, H, W) in [0, 1]: each a Tensor[B, T] on CPU
    (``.mean(0)``: the per-horizon curve), computed `batch` frames at a time."""
    if pred.shape != target.shape or pred.ndim != 5:
        raise ValueError(f"expected two videos (B, T, 3, H, W) of one shape, got {tuple(pred.shape)} and {tuple(target.shape)}")
    b, t = pred.shape[:2]
    p, g = pred.flatten(0, 1), target.flatten(0, 1)
    out = {name: [] for name in METRICS if name != "lpips" or lpips is not None}
    device = next(lpips.buffers()).device if lpips is not None else p.device
    for i in range(0, len(p), batch):
        pi, gi = p[i : i + batch].to(device), g[i : i + batch].to(device)
        out["psnr"].append(psnr(pi, gi).cpu())
        out["ssim"].append(ssim(pi, gi).cpu())
        if lpips is not None:
            out["lpips"].append(lpips(pi, gi).float().cpu())
    return {name: torch.cat(v).view(b, t) for name, v in out.items()}
