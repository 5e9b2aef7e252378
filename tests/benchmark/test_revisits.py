"""Revisits from poses: same views, frames since a view was last seen, and where revisit clips go."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.benchmark.keys import GAP_LABELS
from pipeline.benchmark.revisits import (
    earlier_generated,
    gap_bin,
    gaps_since_seen,
    revisit_score,
    revisit_starts,
    same_view,
)


def test_a_view_is_a_position_within_48_units_and_a_heading_within_a_turn_step():
    a = np.array([[0.0, 0.0, 0.0]])
    b = np.array([[47.0, 0.0, 0.0], [49.0, 0.0, 0.0], [0.0, 0.0, 22.5], [0.0, 0.0, 23.0], [0.0, 0.0, 350.0],
                  [np.nan, np.nan, np.nan]])
    assert same_view(a, b).tolist() == [[True, False, True, False, True, False]]


def spin(x: float) -> list[tuple[float, float, float]]:
    return [(x, 0.0, 22.5 * i) for i in range(16)]


def leave_and_return(away: int) -> np.ndarray:
    """Spin at the origin, walk 20 units a frame east for ``away`` frames, walk back facing west, spin again."""
    out = [(20.0 * (i + 1), 0.0, 0.0) for i in range(away)]
    back = [(20.0 * (away - i - 1), 0.0, 180.0) for i in range(away)]
    return np.array(spin(0.0) + out + back + spin(0.0))


def test_frames_since_seen_counts_from_the_newest_context_frame_with_the_view():
    poses = leave_and_return(40)  # 112 frames: spin 0-15, out 16-55, back 56-95, spin 96-111
    gaps = gaps_since_seen(poses, 96)
    assert len(gaps) == 16
    # facing west at the origin (frame 96 + 8) was last seen on the way back (frame 95): 9 frames
    assert gaps[8] == 9
    # facing east at the origin: the walk out passed within 48 units last at frame 17 (40 units out)
    assert gaps[0] == 96 - 17
    # facing north (90 degrees): only the first spin showed it (frames 3-5, a turn step either side)
    assert gaps[4] == 100 - 5
    # walking on east: the first two predicted frames are within 48 units of the last context frame; the
    # rest are new views (the prediction's own earlier frames are not a memory of the world)
    assert gaps_since_seen(poses[:40], 30)[:3].tolist()[:2] == [1.0, 2.0]
    assert np.isnan(gaps_since_seen(poses[:40], 30)[2:]).all()


def test_a_revisit_clip_predicts_the_views_only_the_old_context_showed():
    poses = leave_and_return(40)
    # the final spin: 3 of 16 views (west +- a turn step) were seen walking back; the others only long before
    assert revisit_score(poses, 96, 64) == pytest.approx(13 / 16)
    assert revisit_score(poses[:72], 56, 64) == 0.0  # walking back: nothing seen 64+ frames before only
    starts = revisit_starts(poses, context=96, predict=16, min_gap=64, min_share=0.5)
    assert starts == [0]


def test_gap_bins_cover_every_gap_and_say_new_for_unseen_views():
    assert gap_bin(1) == "1-8" and gap_bin(64) == "64-127" and gap_bin(300) == "256+" and gap_bin(np.nan) == "new"
    assert {gap_bin(g) for g in range(1, 400)} | {"new"} == set(GAP_LABELS)


def test_earlier_generated_finds_the_models_own_frame_of_the_same_view_at_least_8_frames_back():
    spin = np.array([(0.0, 0.0, 22.5 * (i % 16)) for i in range(40)])
    found = earlier_generated(spin, 4)  # predicted frames 4..39 of a spin: a view comes back after 16 frames
    assert (found[:15] == -1).all()  # frame 15 is a turn step from frame 0: the first return
    assert found[16] >= 0 and 16 - found[16] >= 8
