import numpy as np
import pytest

from pipeline.data.stores import read_array
from pipeline.data.streaming import SplitIndex, StoreReader, split_stats
from pipeline.networks.pose_memory import pose_stats
from tests.builders import write_latents_store


def test_split_statistics_streamed_by_chunk_equal_those_of_the_whole_split(latents_store):
    index = SplitIndex.open(latents_store, "train", "latents")
    values = np.concatenate([read_array(latents_store, v, "latents").astype(np.float64).ravel() for v in index.ids])
    mean, std = split_stats(index)
    assert mean == pytest.approx(values.mean(), rel=1e-12, abs=1e-12) and std == pytest.approx(values.std(), rel=1e-12)


def test_a_reader_reopens_the_store_in_each_process_it_is_sent_to(latents_store):
    import pickle

    reader = StoreReader(latents_store)
    reader.read("v0", "latents", 0, 2)
    copy = pickle.loads(pickle.dumps(reader))
    assert copy._groups == {} and np.array_equal(copy.read("v0", "latents", 0, 2), reader.read("v0", "latents", 0, 2))


def test_the_index_of_a_split_with_poses_says_which_videos_have_them(tmp_path):
    store = write_latents_store(tmp_path / "l.zarr", poses_for=("v1",))
    index = SplitIndex.open(store, "train", "latents")
    assert index.with_poses == (False, True, False) and index.has_poses
    assert pose_stats(StoreReader(store).read(v, "poses") if p else None for v, p in zip(index.ids, index.with_poses))


def test_side_arrays_are_read_once_per_video_and_only_the_most_recent_videos_are_kept(latents_store):
    reader = StoreReader(latents_store, side_videos=1)
    first = reader.side("v0", "actions")
    assert reader.side("v0", "actions") is first  # kept
    np.testing.assert_array_equal(first, read_array(latents_store, "v0", "actions"))
    for vid in ("v1", "v2", "v3"):
        reader.side(vid, "actions")
    assert len(reader._sides) <= 2 and ("v0", "actions") not in reader._sides
