import numpy as np
import pytest
import torch

from pipeline.networks.pose_memory import pose_distance, pose_stats, typical_step


def test_pose_statistics_are_the_centre_of_the_positions_and_the_median_move():
    track = np.zeros((6, 3), np.float32)
    track[:, 0] = [0, 0, 2, 4, 4, 10]  # moves 0, 2, 2, 0, 6: the median of the real moves is 2
    stats = pose_stats([track, None])
    assert stats.center == (pytest.approx(20 / 6), 0.0) and stats.step == 2.0
    assert pose_stats([None]) is None


def test_the_typical_step_ignores_standing_still_and_is_1_when_nothing_moves():
    assert typical_step([0.0, 2.0, 3.0, 4.0, 0.0]) == 3.0
    assert typical_step([0.0, 0.0]) == 1.0


def test_the_pose_distance_keeps_the_poses_dtype_and_is_nan_where_a_pose_is_unknown():
    q = torch.tensor([[[0.0, 0.0, 0.0]]], dtype=torch.float64)
    k = torch.tensor([[[8.0, 0.0, 90.0], [float("nan"), 0.0, 0.0]]], dtype=torch.float64)
    dist, turn = pose_distance(q, k, 8.0)
    assert dist.dtype == torch.float64 and dist[0, 0, 0] == 1.0 and turn[0, 0, 0] == pytest.approx(1.0)
    assert torch.isnan(dist[0, 0, 1])

