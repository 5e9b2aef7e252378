"""Where a run's random numbers come from: the params' RNG seed, and generators derived from it."""

from __future__ import annotations

import random

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators (weight init, batch sampling)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def seeded_generator(*keys: int) -> torch.Generator:
    """A CPU torch.Generator determined by `keys` alone, e.g. (seed, step, stream): the same numbers
    in a resumed run and on every DDP rank, whatever was drawn before."""
    state = np.random.SeedSequence(list(keys)).generate_state(1)[0]
    return torch.Generator().manual_seed(int(state))
