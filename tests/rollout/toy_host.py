"""A small deterministic RolloutHost for tests: no trained model needed.

Latents are 2x2 average-pooled pixels (3 channels); decoding upsamples. generate() returns a
fixed function of the retained history (a recency-weighted mean, plus the action and a little
seeded noise), so outputs depend on exactly which frames are kept. In kv mode each appended
frame is turned once into a "key/value" pair stored in a cache; recompute mode recomputes them
from the kept latents every call. Both compute the same function.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _features(latent: torch.Tensor, action: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    a = 0.0 if action is None or action < 0 else float(action)
    return latent * 0.5 + 0.01 * a, latent.clone()  # (key, value)


def _mix(keys: list[torch.Tensor], values: list[torch.Tensor], action, generator) -> torch.Tensor:
    w = torch.tensor([float(i + 1) for i in range(len(values))])
    w = w / w.sum()
    mixed = sum(wi * (k + v) / 1.5 for wi, k, v in zip(w, keys, values))
    a = 0.0 if action is None or action < 0 else float(action)
    noise = torch.randn(mixed.shape, generator=generator)
    return mixed + 0.02 * a + 0.01 * noise


class ToyHost:
    device = torch.device("cpu")

    def __init__(self):
        self.generate_calls = 0  # histories the host generated from
        self.seen_history_lengths: list[int] = []

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(pixels.float(), 2)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return F.interpolate(latents.float(), scale_factor=2, mode="nearest").clamp(0, 1)

    def start(self, mode, generator):
        if mode not in ("recompute", "kv"):
            raise ValueError(mode)
        return _Session(self, mode, generator)


class _Session:
    def __init__(self, host: ToyHost, mode: str, generator: torch.Generator):
        self.host, self.mode, self.generator = host, mode, generator
        self.latents: list[torch.Tensor] = []
        self.actions: list[int | None] = []
        self.cache: list[tuple[torch.Tensor, torch.Tensor]] = []

    def append(self, latent, info):
        action = info.action
        if self.mode == "kv":
            self.cache.append(_features(latent, action))
        else:
            self.latents.append(latent.clone())
            self.actions.append(action)

    def evict(self, keep):
        if self.mode == "kv":
            self.cache = [self.cache[i] for i in keep]
        else:
            self.latents = [self.latents[i] for i in keep]
            self.actions = [self.actions[i] for i in keep]

    def generate(self, info):
        action = info.action
        pairs = self.cache if self.mode == "kv" else [_features(x, a) for x, a in zip(self.latents, self.actions)]
        self.host.generate_calls += 1
        self.host.seen_history_lengths.append(len(pairs))
        return _mix([k for k, _ in pairs], [v for _, v in pairs], action, self.generator)

    def retained_bytes(self):
        if self.mode == "kv":
            return sum(k.nbytes + v.nbytes for k, v in self.cache)
        return sum(x.nbytes for x in self.latents)
