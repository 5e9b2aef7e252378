"""The random agent every recorder offers: uniform random actions that stick for a while."""

from __future__ import annotations

from typing import Iterator

import numpy as np


def sticky_random_actions(rng: np.random.Generator, n_actions: int, sticky_prob: float) -> Iterator[int]:
    """Uniform random actions, each repeated with probability sticky_prob (so moves last a while)."""
    action = int(rng.integers(n_actions))
    while True:
        yield action
        if rng.random() >= sticky_prob:
            action = int(rng.integers(n_actions))
