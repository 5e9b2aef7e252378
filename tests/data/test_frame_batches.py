import numpy as np
import pytest
import torch

from pipeline.data.frame_batches import FrameBatches, val_pairs
from pipeline.data.stores import read_array
from pipeline.data.streaming import SplitIndex, StoreReader, loader


class CountingReader(StoreReader):
    """A reader that records each slice it reads."""

    def __init__(self, store):
        super().__init__(store)
        self.reads = []

    def read(self, video_id, array, start=0, stop=None):
        self.reads.append((video_id, start, stop))
        return super().read(video_id, array, start, stop)


def frame_batches(store, **kw):
    return FrameBatches(SplitIndex.open(store, "train", "frames"), **({"batch_size": 8, "per_chunk": 4, "seed": 0} | kw))


def test_a_batch_is_groups_of_frames_each_read_from_one_chunk_in_one_slice(frames_store):
    batches = frame_batches(frames_store)
    batches.reader = CountingReader(frames_store)
    for step in range(20):
        x = batches[step]
        assert x.shape == (8, 32, 32, 3) and x.dtype == torch.uint8
    assert len(batches.reader.reads) == 20 * 2  # 8 frames = 2 groups of 4: two slices a step
    for _, start, stop in batches.reader.reads:
        assert start % 8 == 0 and stop - start <= 8  # within one chunk of 8 frames


def test_the_frames_of_a_batch_are_the_stores_frames_at_the_picked_positions(frames_store):
    batches = frame_batches(frames_store, batch_size=6, per_chunk=4)
    picks = batches.picks(5)
    assert [len(offsets) for _, offsets in picks] == [4, 2]
    expected = []
    for c, offsets in picks:
        video, first = batches.chunks[c]
        expected += [read_array(frames_store, batches.index.ids[video], "frames", int(first + o), int(first + o) + 1)[0]
                     for o in offsets]
    np.testing.assert_array_equal(batches[5].numpy(), np.stack(expected))


def test_every_training_frame_is_drawn_about_equally_often(frames_store):
    batches = frame_batches(frames_store, batch_size=4, per_chunk=2)
    counts = np.zeros((len(batches.index), 24))
    for step in range(3000):
        for c, offsets in batches.picks(step):
            video, first = batches.chunks[c]
            counts[video, first + offsets] += 1
    share = counts / counts.sum()
    assert share.min() > 0.6 / 48 and share.max() < 1.4 / 48


@pytest.mark.parametrize("workers", [0, 2])
def test_the_batch_of_a_step_is_the_same_for_any_worker_count_and_start(frames_store, workers):
    batches = frame_batches(frames_store)
    expected = [batches[s] for s in range(4, 10)]
    got = list(loader(batches, 4, 10, workers=workers, device=torch.device("cpu")))
    assert all(torch.equal(g, e) for g, e in zip(got, expected))
    assert not torch.equal(batches[4], frame_batches(frames_store, seed=1)[4])


def test_val_pairs_are_frames_spread_over_the_split_each_with_the_frame_before(frames_store):
    index = SplitIndex.open(frames_store, "val", "frames")  # one video of 24 frames
    prev, cur = val_pairs(index, 5)
    frames = read_array(frames_store, "v2", "frames")
    picked = np.linspace(0, 22, 5).round().astype(int) + 1
    np.testing.assert_array_equal(cur, frames[picked])
    np.testing.assert_array_equal(prev, frames[picked - 1])
