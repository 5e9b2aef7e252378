"""Clips of the benchmark: held-out windows, deterministic in the seed, with aligned actions."""

import numpy as np
import pytest

from pipeline.benchmark.clips import BenchmarkError, select_clips, window_starts
from tests.benchmark.toy import VIDEOS, make_revisit_stores


def test_clips_come_only_from_test_videos_long_enough(stores):
    frames, latents = stores
    clips = select_clips(frames, latents, 10, 6, 5, seed=0)
    assert {c.video_id for c in clips} == {"b_test"}  # c_test has only 12 frames; train/val never
    short = select_clips(frames, latents, 3, 4, 6, seed=0)
    assert {c.video_id for c in short} == {"b_test", "c_test"}
    for c in short:
        assert c.pixels.shape == (7, 3, 64, 64) and c.context_latents.shape == (3, 3, 32, 32)
        assert 0 <= c.start <= VIDEOS[c.video_id][1] - 7


def test_clip_selection_is_deterministic_in_the_seed(stores):
    frames, latents = stores
    starts = lambda seed: [(c.video_id, c.start) for c in select_clips(frames, latents, 3, 4, 6, seed)]  # noqa: E731
    assert starts(0) == starts(0)
    assert starts(0) != starts(1)


def test_clip_actions_are_the_actions_that_led_to_each_frame(stores):
    frames, latents = stores
    for c in select_clips(frames, latents, 3, 4, 4, seed=0):
        recorded = np.arange(VIDEOS[c.video_id][1]) % 3
        expected = [recorded[t - 1] if t > 0 else -1 for t in range(c.start, c.start + 7)]
        assert c.actions.tolist() == expected


def test_no_long_enough_test_video_is_a_clear_error(stores):
    frames, latents = stores
    with pytest.raises(BenchmarkError, match="no test video has the 100 frames a 50 -> 50 workload needs"):
        select_clips(frames, latents, 50, 50, 1, seed=0)


def test_clips_of_one_video_do_not_overlap_when_it_holds_them(stores):
    frames, latents = stores
    for seed in range(5):
        clips = select_clips(frames, latents, 10, 6, 2, seed)  # b_test's 40 frames hold two 16-frame windows
        a, b = sorted(c.start for c in clips)
        assert {c.video_id for c in clips} == {"b_test"} and b - a >= 16


def test_window_starts_are_uniform_over_disjoint_placements():
    rng = np.random.default_rng(0)
    counts = {}
    for _ in range(6000):
        starts = tuple(window_starts(5, 2, 2, rng).tolist())
        counts[starts] = counts.get(starts, 0) + 1
    assert set(counts) == {(0, 2), (0, 3), (1, 3)}  # every way to fit two 2-frame windows in 5 frames
    assert all(abs(n / 6000 - 1 / 3) < 0.03 for n in counts.values())


def test_window_starts_spread_evenly_when_windows_must_overlap():
    starts = window_starts(500, 72, 7, np.random.default_rng(0))  # 7 x 72 > 500
    assert starts[0] == 0 and starts[-1] == 500 - 72 and np.all(np.diff(starts) >= 71)


def test_revisit_clips_predict_the_return_to_views_only_the_old_context_showed(tmp_path):
    frames, latents = make_revisit_stores(tmp_path)  # spin 0-15, out 16-55, back 56-95, spin 96-111
    clips = select_clips(frames, latents, 96, 16, 5, seed=0, revisit_gap=64, workload="revisit")
    assert [(c.video_id, c.start) for c in clips] == [("r_test", 0)]  # one return: one clip, never train
    assert clips[0].poses.shape == (112, 3)


def test_revisit_clips_need_poses_and_a_return(stores, tmp_path):
    frames, latents = stores  # no poses
    with pytest.raises(BenchmarkError, match=r"benchmark.workloads.revisit.revisit_gap: test video .* has no poses"):
        select_clips(frames, latents, 3, 4, 2, seed=0, revisit_gap=2, workload="revisit")
    frames, latents = make_revisit_stores(tmp_path)
    with pytest.raises(BenchmarkError, match="benchmark.workloads.revisit: no test video returns to a view last seen 100"):
        select_clips(frames, latents, 96, 16, 2, seed=0, revisit_gap=100, workload="revisit")
