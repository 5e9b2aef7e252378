"""How sure a benchmark difference is: standard errors and paired confidence intervals.

The benchmark draws the sampling noise of a (clip, seed) pair once and gives it to every policy,
so two policies' scores on the same pair are paired observations. The paired difference cancels
what the clip and the noise contribute to both, and its Student-t interval is much narrower than
comparing two independent means. The observations are clips (a clip's seeds are averaged
first, see pipeline.benchmark.summary); with few clips the interval is wide, and that is the
information: a gap inside it is not a ranking.
"""

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
    """Mean of a - b over paired observations and the half-width of its Student-t confidence
    interval (None below two pairs)."""
    if len(a) != len(b):
        raise ValueError(f"paired_difference: {len(a)} vs {len(b)} observations")
    diff = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    sem = standard_error(diff)
    if sem is None:
        return float(diff.mean()), None
    return float(diff.mean()), float(stats.t.ppf(0.5 + confidence / 2, len(diff) - 1) * sem)
