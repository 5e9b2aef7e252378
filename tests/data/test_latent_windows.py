import numpy as np
import pytest
import torch

from pipeline.data.latent_windows import (
    AlternatingBatches,
    LatentVideos,
    WindowError,
    latent_shape,
)
from pipeline.data.stores import read_actions, read_array, read_poses
from tests.builders import write_latents_store


def make_batches(store, **overrides):
    kw = dict(seq_len_short=8, seq_len_long=16, batch_size_short=4, batch_size_long=2,
              long_ratio=0.25, stride=4, seed=0)
    kw.update(overrides)
    return AlternatingBatches(LatentVideos.load(store, "train"), **kw)


def test_loads_only_the_train_split_with_latent_shape_and_action_count(latents_store):
    videos = LatentVideos.load(latents_store, "train")
    assert videos.ids == ["v0", "v1", "v2"]
    assert videos.n_actions == 3
    assert latent_shape(latents_store) == (4, 8, 8)


def test_windows_start_every_stride_and_never_cross_videos(latents_store):
    videos = LatentVideos.load(latents_store, "train")
    windows = videos.windows(16, 4)
    # 40 frames: starts 0, 4, ..., 24 in each of the 3 videos
    assert len(windows) == 3 * 7
    assert set(windows[:, 1]) == set(range(0, 25, 4))
    for v, s in windows:
        assert s + 16 <= len(videos.latents[v])


def test_too_long_windows_name_the_param_and_the_longest_video(latents_store):
    with pytest.raises(WindowError, match=r"train\.seq_len_long=80.*longest of 3: 'v0' with 40 frames"):
        make_batches(latents_store, seq_len_long=80)


def test_long_batches_come_at_long_ratio_with_their_own_length_and_size(latents_store):
    batches = make_batches(latents_store, long_ratio=0.25)
    kinds = [batches.kind(s) for s in range(2000)]
    assert abs(kinds.count("L") / 2000 - 0.25) < 0.03
    for step in range(40):
        b = batches.batch(step)
        expected = (2, 16) if b.kind == "L" else (4, 8)
        assert tuple(b.latents.shape[:2]) == expected
        assert b.latents.shape[2:] == (4, 8, 8) and b.latents.dtype == torch.float32
        assert tuple(b.actions.shape) == expected


def test_batch_of_a_step_depends_only_on_seed_and_step(latents_store):
    a, b = make_batches(latents_store), make_batches(latents_store)
    for step in (7, 3, 7, 100):
        x, y = a.batch(step), b.batch(step)
        assert x.kind == y.kind and torch.equal(x.latents, y.latents)
    assert not torch.equal(a.batch(1).latents, make_batches(latents_store, seed=1).batch(1).latents)


def test_window_holds_the_video_frames_and_the_action_that_led_to_each(latents_store):
    videos = LatentVideos.load(latents_store, "train")
    recorded = read_actions(latents_store, "v1")
    frames, cond = videos.window(1, 0, 8)
    np.testing.assert_array_equal(frames, read_array(latents_store, "v1", "latents", 0, 8))
    assert cond[0] == -1  # nothing led to a video's first frame
    np.testing.assert_array_equal(cond[1:], recorded[:7])
    _, cond = videos.window(1, 4, 8)
    np.testing.assert_array_equal(cond, recorded[3:11])


def test_windows_and_batches_carry_the_poses_of_their_own_frames(tmp_path):
    store = write_latents_store(tmp_path / "latents.zarr", poses_for=("v1",))
    videos = LatentVideos.load(store, "train")
    assert videos.has_poses
    recorded = read_poses(store, "v1")
    np.testing.assert_array_equal(videos.window_poses(1, 4, 8), recorded[4:12])  # unshifted, unlike actions
    assert np.isnan(videos.window_poses(0, 4, 8)).all()  # a video without poses

    batch = make_batches(store).batch(3)
    assert batch.poses.dtype == torch.float32 and batch.poses.shape == (*batch.latents.shape[:2], 3)
    assert batch.rows(slice(0, 2)).poses.shape[0] == 2
    assert make_batches(write_latents_store(tmp_path / "none.zarr")).batch(3).poses is None
