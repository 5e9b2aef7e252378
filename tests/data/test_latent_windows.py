import numpy as np
import pytest
import torch

from pipeline.data.latent_windows import AlternatingBatches, LatentWindows, WindowError, latent_shape
from pipeline.data.stores import read_actions, read_array, read_poses
from pipeline.data.streaming import SplitIndex, loader
from tests.builders import write_latents_store


def windows_of(store, split="train"):
    return LatentWindows(SplitIndex.open(store, split, "latents"))


def make_batches(store, **overrides):
    kw = dict(seq_len_short=8, seq_len_long=16, batch_size_short=4, batch_size_long=2,
              long_ratio=0.25, stride=4, seed=0)
    kw.update(overrides)
    return AlternatingBatches(windows_of(store), **kw)


def test_the_index_holds_the_split_its_lengths_and_action_count_without_the_latents(latents_store):
    index = SplitIndex.open(latents_store, "train", "latents")
    assert index.ids == ("v0", "v1", "v2") and list(index.lengths) == [40, 40, 40]
    assert index.n_actions == 3 and index.frame_shape == (4, 8, 8) and index.chunk == 8
    assert latent_shape(latents_store) == (4, 8, 8)


def test_windows_start_every_stride_and_never_cross_videos(latents_store):
    batches = make_batches(latents_store)
    # 40 frames: windows of 16 start at 0, 4, ..., 24 in each of the 3 videos
    assert list(batches.kinds["L"][2]) == [7, 7, 7]
    seen = set()
    for step in range(300):
        kind, picks = batches.picks(step)
        length = batches.kinds[kind][0]
        for v, s in picks:
            assert s % 4 == 0 and 0 <= s and s + length <= 40
            seen.add((kind, v, s))
    assert {(v, s) for k, v, s in seen if k == "L"} == {(v, s) for v in range(3) for s in range(0, 25, 4)}


def test_too_long_windows_name_the_param_and_the_longest_video(latents_store):
    with pytest.raises(WindowError, match=r"train\.seq_len_long=80.*longest of 3: 'v0' with 40 frames"):
        make_batches(latents_store, seq_len_long=80)


def test_long_batches_come_at_long_ratio_with_their_own_length_and_size(latents_store):
    batches = make_batches(latents_store, long_ratio=0.25)
    kinds = [batches.kind(s) for s in range(2000)]
    assert abs(kinds.count("L") / 2000 - 0.25) < 0.03
    for step in range(40):
        b = batches[step]
        expected = (2, 16) if b.kind == "L" else (4, 8)
        assert tuple(b.latents.shape[:2]) == expected and b.global_shape[:2] == expected
        assert b.latents.shape[2:] == (4, 8, 8) and b.latents.dtype == torch.float32
        assert tuple(b.actions.shape) == expected


def test_the_batch_of_a_step_depends_only_on_seed_and_step(latents_store):
    a, b = make_batches(latents_store), make_batches(latents_store)
    for step in (7, 3, 7, 100):
        x, y = a[step], b[step]
        assert x.kind == y.kind and torch.equal(x.latents, y.latents)
    assert not torch.equal(a[1].latents, make_batches(latents_store, seed=1)[1].latents)


def test_each_rank_reads_only_its_rows_and_the_ranks_together_hold_the_global_batch(latents_store):
    whole = make_batches(latents_store)
    ranks = [make_batches(latents_store, rows={"S": slice(r * 2, r * 2 + 2), "L": slice(r, r + 1)}) for r in (0, 1)]
    for step in range(12):
        parts = [r[step] for r in ranks]
        assert all(p.global_shape == whole[step].global_shape for p in parts)
        assert torch.equal(torch.cat([p.latents for p in parts]), whole[step].latents)
        assert torch.equal(torch.cat([p.actions for p in parts]), whole[step].actions)


@pytest.mark.parametrize("workers", [0, 2])
def test_a_loader_started_at_a_step_yields_the_batches_an_uninterrupted_run_sees_for_any_worker_count(latents_store, workers):
    batches = make_batches(latents_store)
    expected = [batches[s] for s in range(3, 9)]
    got = list(loader(batches, 3, 9, workers=workers, device=torch.device("cpu")))
    assert [b.kind for b in got] == [b.kind for b in expected]
    assert all(torch.equal(g.latents, e.latents) and torch.equal(g.actions, e.actions) for g, e in zip(got, expected))


def test_a_window_holds_the_video_frames_and_the_action_that_led_to_each(latents_store):
    windows = windows_of(latents_store)
    recorded = read_actions(latents_store, "v1")
    frames, cond, _ = windows.window(1, 0, 8)
    np.testing.assert_array_equal(frames, read_array(latents_store, "v1", "latents", 0, 8))
    assert cond[0] == -1  # nothing led to a video's first frame
    np.testing.assert_array_equal(cond[1:], recorded[:7])
    _, cond, _ = windows.window(1, 4, 8)
    np.testing.assert_array_equal(cond, recorded[3:11])


def test_windows_and_batches_carry_the_poses_of_their_own_frames(tmp_path):
    store = write_latents_store(tmp_path / "latents.zarr", poses_for=("v1",))
    windows = windows_of(store)
    assert windows.index.has_poses
    recorded = read_poses(store, "v1")
    np.testing.assert_array_equal(windows.window(1, 4, 8)[2], recorded[4:12])  # unshifted, unlike actions
    assert np.isnan(windows.window(0, 4, 8)[2]).all()  # a video without poses

    batch = make_batches(store)[3]
    assert batch.poses.dtype == torch.float32 and batch.poses.shape == (*batch.latents.shape[:2], 3)
    assert make_batches(write_latents_store(tmp_path / "none.zarr"))[3].poses is None


# ---------------------------------------------------------------------------------------------
# Gapped long-span batches (kind "G"): seq_len_short frames kept of a window of gapped_span
# ---------------------------------------------------------------------------------------------
GAPPED = dict(gapped_ratio=0.3, gapped_span=32)  # of 40-frame videos: the newest 4 + 4 of the 28 older frames


def legacy_kind(seed: int, step: int, long_ratio: float) -> str:
    """The kind draw before gapped batches existed."""
    return "L" if np.random.default_rng([seed, step, 0]).random() < long_ratio else "S"


def gapped_steps(batches, n=200):
    return [s for s in range(n) if batches.kind(s) == "G"]


def test_without_gapped_batches_every_step_draws_the_kind_and_windows_it_always_drew(latents_store):
    plain = make_batches(latents_store)
    zero = make_batches(latents_store, gapped_ratio=0.0, gapped_span=32)
    gapped = make_batches(latents_store, **GAPPED)
    assert "G" not in zero.kinds
    for step in range(300):
        kind = legacy_kind(0, step, 0.25)
        assert plain.kind(step) == zero.kind(step) == kind
        assert plain.picks(step) == zero.picks(step)
        # gapped batches take their share from the short ones: a long step stays long, with its windows
        assert (gapped.kind(step) == "L") == (kind == "L")
        if kind == "L":
            assert gapped.picks(step) == plain.picks(step)
    for step in range(20):
        a, b = plain[step], zero[step]
        assert a.kind == b.kind and torch.equal(a.latents, b.latents) and a.times is None and b.times is None


def test_gapped_batches_come_at_gapped_ratio_with_the_short_batch_shape(latents_store):
    batches = make_batches(latents_store, long_ratio=0.25, gapped_ratio=0.3, gapped_span=32)
    kinds = [batches.kind(s) for s in range(3000)]
    assert abs(kinds.count("L") / 3000 - 0.25) < 0.03 and abs(kinds.count("G") / 3000 - 0.3) < 0.03
    step = gapped_steps(batches)[0]
    b = batches[step]
    assert b.kind == "G" and tuple(b.latents.shape) == (4, 8, 4, 8, 8) and b.global_shape[:2] == (4, 8)
    assert tuple(b.actions.shape) == (4, 8) and b.times.dtype == torch.int64 and tuple(b.times.shape) == (4, 8)
    every = make_batches(latents_store, long_ratio=0.0, gapped_ratio=1.0, gapped_span=32)
    assert {every.kind(s) for s in range(200)} == {"G"}


def test_a_gapped_row_keeps_the_newest_half_and_older_frames_of_one_window_each_with_its_own_action_and_pose(tmp_path):
    # videos of different lengths: windows of 32 fit only v0 and v2, and never cross into the next video
    store = write_latents_store(tmp_path / "latents.zarr", poses_for=("v0", "v2"),
                                videos=(("v0", "train", 40), ("v1", "train", 20), ("v2", "train", 70)))
    batches = make_batches(store, seq_len_long=16, **GAPPED)
    assert list(batches.kinds["G"][2]) == [3, 0, 10]  # windows of 32 every 4 frames
    recorded = {v: (read_array(store, v, "latents"), read_actions(store, v), read_poses(store, v) if v != "v1" else None)
                for v in ("v0", "v1", "v2")}
    steps = gapped_steps(batches)
    assert len(steps) > 20
    older = set()
    for step in steps:
        kind, picks = batches.picks(step)
        batch = batches[step]
        assert kind == "G" and batch.kind == "G" and len(picks) == 4
        for row, (video, start) in enumerate(picks):
            vid = ("v0", "v1", "v2")[video]
            assert video != 1 and start % 4 == 0 and start + 32 <= len(recorded[vid][0])
            times = batch.times[row].numpy()
            assert (np.diff(times) > 0).all() and times[0] >= 0
            np.testing.assert_array_equal(times[4:], np.arange(28, 32))  # the newest half, consecutive, ending at span-1
            older.update(times[:4].tolist())
            frames, actions, poses = recorded[vid]
            np.testing.assert_array_equal(batch.latents[row].numpy(), frames[start + times].astype(np.float32))
            led = np.where(start + times > 0, actions[np.maximum(start + times - 1, 0)], -1)  # the action that led to it
            np.testing.assert_array_equal(batch.actions[row].numpy(), led)
            np.testing.assert_array_equal(batch.poses[row].numpy(), poses[start + times])
    assert older >= {0, 27} and older <= set(range(28))  # anywhere in the older part, as old as the window's start


def test_a_gapped_batch_depends_only_on_seed_and_step_and_ranks_together_hold_it(latents_store):
    a, b = make_batches(latents_store, **GAPPED), make_batches(latents_store, **GAPPED)
    steps = gapped_steps(a)
    for step in (steps[3], steps[0], steps[3]):
        x, y = a[step], b[step]
        assert x.kind == y.kind == "G" and torch.equal(x.latents, y.latents) and torch.equal(x.times, y.times)
    assert not np.array_equal(make_batches(latents_store, seed=1, **GAPPED).kept(steps[0], 4), a.kept(steps[0], 4))
    # DDP: each rank reads only its rows; a gapped batch has the short batch's rows unless told otherwise
    ranks = [make_batches(latents_store, rows={"S": slice(r * 2, r * 2 + 2), "L": slice(r, r + 1)}, **GAPPED)
             for r in (0, 1)]
    for step in steps[:6]:
        whole, parts = a[step], [r[step] for r in ranks]
        assert all(p.kind == "G" and p.global_shape == whole.global_shape and len(p.latents) == 2 for p in parts)
        for field in ("latents", "actions", "times"):
            assert torch.equal(torch.cat([getattr(p, field) for p in parts]), getattr(whole, field))


def test_gapped_windows_longer_than_every_video_name_the_param(latents_store):
    with pytest.raises(WindowError, match=r"train\.gapped_span=64.*longest of 3: 'v0' with 40 frames"):
        make_batches(latents_store, gapped_ratio=0.1, gapped_span=64)
    with pytest.raises(WindowError, match=r"train\.gapped_span=4: must be >= train\.seq_len_short \(8\)"):
        make_batches(latents_store, gapped_ratio=0.1, gapped_span=4)
    assert "G" not in make_batches(latents_store, gapped_ratio=0.0, gapped_span=64).kinds  # not drawn: not needed


def test_gapped_batches_carry_their_times_through_the_loader_and_pinned_memory(latents_store, monkeypatch):
    batches = make_batches(latents_store, **GAPPED)
    step = gapped_steps(batches)[0]
    got = list(loader(batches, step, step + 1, workers=1, device=torch.device("cpu")))[0]
    assert got.kind == "G" and torch.equal(got.times, batches[step].times)
    monkeypatch.setattr(torch.Tensor, "pin_memory", lambda self: self.clone())  # no CUDA needed to pin here
    pinned = got.pin_memory()
    assert torch.equal(pinned.times, got.times) and pinned.global_rows == got.global_rows
    assert make_batches(latents_store)[0].pin_memory().times is None
