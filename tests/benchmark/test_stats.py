import math

import numpy as np
import pytest
from scipy import stats

from pipeline.benchmark.stats import paired_difference, paired_ratio, standard_error


def test_the_paired_interval_is_the_one_a_paired_t_test_implies():
    rng = np.random.default_rng(0)
    clip_difficulty = rng.normal(0, 3, 12)  # shared by both policies: the pairing cancels it
    a = 20 + clip_difficulty + rng.normal(0.5, 0.2, 12)
    b = 20 + clip_difficulty
    gap, half = paired_difference(a, b)
    t = stats.ttest_rel(a, b)
    assert gap == pytest.approx(np.mean(a - b))
    # at the interval's edge the paired t-test has p = 0.05 exactly
    edge = stats.ttest_rel(a - (gap - half), b)
    assert edge.pvalue == pytest.approx(0.05, rel=1e-6) and t.pvalue < 1e-3
    assert half < 2 * standard_error(a)  # far narrower than the clip-to-clip spread


def test_standard_error_is_the_sample_std_over_root_n():
    assert standard_error([1.0, 2.0, 3.0, 4.0]) == pytest.approx(np.std([1, 2, 3, 4], ddof=1) / 2)


def test_one_observation_has_no_spread():
    assert standard_error([3.0]) is None
    assert paired_difference([3.0], [1.0]) == (2.0, None)


def test_unpaired_lengths_are_rejected():
    with pytest.raises(ValueError, match="3 vs 2"):
        paired_difference([1, 2, 3], [1, 2])


def test_identical_policies_have_a_zero_gap_and_a_zero_interval():
    gap, half = paired_difference([1.0, 5.0, 2.0], [1.0, 5.0, 2.0])
    assert gap == 0.0 and half == 0.0 and not math.isnan(half)


def test_the_share_of_a_gap_closed_is_the_ratio_of_means_with_a_delta_method_interval():
    rng = np.random.default_rng(1)
    gap = rng.uniform(2.0, 6.0, 400)  # full history minus newest B, per clip
    closed = 0.6 * gap + rng.normal(0, 0.5, 400)  # what a policy recovers of it
    ratio, half = paired_ratio(closed, gap)
    assert ratio == pytest.approx(closed.mean() / gap.mean())
    assert ratio - half < 0.6 < ratio + half and half < 0.05
    # the interval covers the truth at about the nominal rate
    hits = 0
    for seed in range(200):
        r = np.random.default_rng(seed)
        g = r.uniform(2.0, 6.0, 30)
        c = 0.6 * g + r.normal(0, 1.0, 30)
        est, h = paired_ratio(c, g)
        hits += est - h <= 0.6 <= est + h
    assert 0.9 <= hits / 200 <= 0.99


def test_no_gap_to_close_gives_no_share():
    assert paired_ratio([1.0, -1.0], [1.0, -1.0]) == (None, None)
    assert paired_ratio([0.5], [1.0]) == (0.5, None)
