import math

import pytest
import torch

from pipeline.rollout.frame_meta import FrameRecord, build_frame_meta, latent_features


def test_features_follow_the_formulas_on_known_latents():
    ref = torch.tensor([3.0, 4.0])  # |ref| = 5
    x = torch.stack([ref, torch.tensor([3.0, 4.0 + 2.5]), torch.tensor([0.0, 0.0 + 1.0]), torch.tensor([-1.0, 0.0])])
    f = latent_features(x, ref)
    # oldest frame: no change, similarity 1, drift 0
    assert f["boundary_score"][0] == 0 and f["motion_strength"][0] == 0 and f["temporal_similarity"][0] == 1
    # frame 1: |x - prev| = 2.5, |prev| = 5 -> relative 0.5 -> boundary 1.0
    assert f["boundary_score"][1] == pytest.approx(1.0)
    assert f["motion_strength"][1] == pytest.approx(1.0)  # mean |diff| = 1.25, clipped to 1
    assert f["feature_drift"][1] == pytest.approx(2.5 / 5)
    cos = (3 * 3 + 4 * 6.5) / (5 * math.hypot(3, 6.5))
    assert f["temporal_similarity"][1] == pytest.approx(cos, rel=1e-6)
    # frame 2: x = (0, 1), prev = (3, 6.5): |diff| / |prev| > 0.5 -> boundary saturates at 1
    assert f["boundary_score"][2] == pytest.approx(1.0)
    assert f["feature_drift"][2] == pytest.approx(math.hypot(3, 3) / 5)
    # frame 3: x = (-1, 0) vs prev (0, 1): orthogonal -> similarity 0; mean |diff| = 1 -> motion 1
    assert f["temporal_similarity"][3] == pytest.approx(0.0, abs=1e-7)
    assert f["motion_strength"][3] == pytest.approx(1.0)
    # drift: |(-4, -4)| / 5 > 1 -> clipped to 1
    assert f["feature_drift"][3] == pytest.approx(1.0)


def test_small_changes_give_unsaturated_scores():
    ref = torch.ones(100)
    x = torch.stack([ref, ref * 1.1])  # relative change 0.1 -> boundary 0.2; mean |diff| 0.1
    f = latent_features(x, ref)
    assert f["boundary_score"][1] == pytest.approx(0.2, rel=1e-5)
    assert f["motion_strength"][1] == pytest.approx(0.1, rel=1e-5)
    assert f["temporal_similarity"][1] == pytest.approx(1.0, rel=1e-6)
    assert f["feature_drift"][1] == pytest.approx(0.1, rel=1e-5)


def test_frame_meta_ages_count_frames_since_creation_across_gaps():
    lat = torch.randn(3, 2, 4, 4)
    records = [FrameRecord(time=0), FrameRecord(time=5), FrameRecord(time=7)]
    metas = build_frame_meta(lat, lat[0], records, step=3)
    assert [m.chunk_id for m in metas] == [0, 1, 2]
    assert [m.age for m in metas] == [7, 2, 0]
    assert [m.dynamic_age for m in metas] == [7, 2, 0]
    assert [m.recentness for m in metas] == pytest.approx([1 / 8, 1 / 3, 1.0])
    assert all(m.keyframe_score == m.motion_strength for m in metas)
    assert metas[0].size_mb == pytest.approx(2 * 4 * 4 * 4 / 2**20)


def test_bookkeeping_counts_accesses_and_recent_hits():
    rec = FrameRecord(time=0)
    for step in range(6):
        rec.touch(step)
    lat = torch.randn(1, 2, 2, 2)
    (meta,) = build_frame_meta(lat, lat[0], [rec], step=6)
    assert meta.access_count == 6
    assert meta.last_access_step == 5
    assert meta.recent_hit_count == 4  # steps 2..5 of the last four


def test_records_and_latents_must_match():
    with pytest.raises(ValueError, match="2 latents but 1 frame records"):
        build_frame_meta(torch.zeros(2, 1, 2, 2), torch.zeros(1, 2, 2), [FrameRecord(time=0)])
