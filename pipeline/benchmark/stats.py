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


def paired_ratio(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> tuple[float | None, float | None]:
    """mean(a) / mean(b) over paired observations and its delta-method Student-t half-width (None below two
    pairs; both None when mean(b) is 0). Used for the share of a gap closed, a over the gap b."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if len(a) != len(b):
        raise ValueError(f"paired_ratio: {len(a)} vs {len(b)} observations")
    if not len(a) or b.mean() == 0:
        return None, None
    ratio = float(a.mean() / b.mean())
    if len(a) < 2:
        return ratio, None
    residual = (a - ratio * b) / b.mean()  # the ratio's influence per observation
    sem = standard_error(residual)
    return ratio, float(stats.t.ppf(0.5 + confidence / 2, len(a) - 1) * sem)
