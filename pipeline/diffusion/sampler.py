"""K-step shortcut Euler sampling with x-prediction, and context corruption.

``z_tau = (1 - tau) x0 + tau eps`` (tau = 1 noise, 0 clean). With d = 1/K the denoiser predicts x0 at
tau = 1, 1 - d, ..., d; each step ``z - d (z - x0_hat) / tau`` lands on x0_hat at the last one.
"""

from __future__ import annotations

from typing import Callable

import torch

from pipeline.diffusion.objective import shortcut_step

# denoise(z_tau, tau, d) -> x0_hat; tau and d are python floats shared by the whole batch.
Denoiser = Callable[[torch.Tensor, float, float], torch.Tensor]


def _noise_like(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    # Drawn on the generator's device (CPU by default) and moved, so the same seed gives the
    # same noise whatever device the model runs on.
    eps = torch.randn(x.shape, generator=generator, device=generator.device, dtype=torch.float32)
    return eps.to(device=x.device, dtype=x.dtype)


class ShortcutEulerSampler:
    """``sample(denoise, shape, generator)`` -> x0; ``corrupt(x, generator)`` -> context at tau_ctx."""

    def __init__(self, steps: int, tau_ctx: float = 0.0):
        if steps < 1 or steps & (steps - 1):
            raise ValueError(f"sampling steps must be a power of two (shortcut d = 1/K), got {steps}")
        if not 0.0 <= tau_ctx < 1.0:
            raise ValueError(f"tau_ctx must lie in [0, 1), got {tau_ctx}")
        self.steps = steps
        self.tau_ctx = tau_ctx

    @property
    def d(self) -> float:
        return 1.0 / self.steps

    def taus(self) -> list[float]:
        """The noise levels the denoiser is called at: 1, 1 - d, ..., d."""
        return [1.0 - i * self.d for i in range(self.steps)]

    @torch.no_grad()
    def sample(
        self,
        denoise: Denoiser,
        shape: tuple[int, ...],
        generator: torch.Generator,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> torch.Tensor:
        z = _noise_like(torch.empty(shape, device=device, dtype=dtype), generator)
        return self._integrate(denoise, z)

    @torch.no_grad()
    def sample_rows(
        self,
        denoise: Denoiser,
        shape: tuple[int, ...],
        generators: list[torch.Generator],
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> torch.Tensor:
        """A batch of samples (B, *shape): row b starts from noise of ``generators[b]``, drawn as
        :meth:`sample` draws it, so a row's sample does not depend on the others."""
        eps = torch.stack([torch.randn(shape, generator=g, device=g.device, dtype=torch.float32) for g in generators])
        return self._integrate(denoise, eps.to(device=device, dtype=dtype))  # one transfer for the batch

    def _integrate(self, denoise: Denoiser, z: torch.Tensor) -> torch.Tensor:
        x0 = z
        d = torch.tensor(self.d, device=z.device)
        levels = self.taus()
        tau_on_device = torch.tensor(levels, device=z.device)  # one copy per frame, not one per step
        for i, tau in enumerate(levels):
            x0 = denoise(z, tau, self.d)
            z = shortcut_step(z, x0, tau_on_device[i], d)  # == x0 at the last step
        return x0

    @torch.no_grad()
    def corrupt(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Context corruption as in training: ``(1 - tau_ctx) * x + tau_ctx * eps`` (seeded)."""
        if self.tau_ctx == 0.0:
            return x
        return (1.0 - self.tau_ctx) * x + self.tau_ctx * _noise_like(x, generator)
