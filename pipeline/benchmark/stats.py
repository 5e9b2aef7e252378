"""Standard errors and paired Student-t intervals over clips (docs/statistics.md#intervals)."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from scipy import stats


def standard_error(values: Sequence[float]) -> float | None:
    """Standard error of the mean (sample std / sqrt n); None below two values."""
    x = np.asarray(values, dtype=np.float64)
    return float(x.std(ddof=1) / math.sqrt(len(x))) if len(x) >= 2 else None


def paired_difference(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> tuple[float, float | None]:
    """Mean of a - b over paired observations and its Student-t half-width (None below two pairs)."""
    if len(a) != len(b):
        raise ValueError(f"paired_difference: {len(a)} vs {len(b)} observations")
    diff = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    sem = standard_error(diff)
    if sem is None:
        return float(diff.mean()), None
    return float(diff.mean()), float(stats.t.ppf(0.5 + confidence / 2, len(diff) - 1) * sem)
