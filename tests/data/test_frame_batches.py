import numpy as np
import pytest
import torch

from pipeline.data.frame_batches import FrameBlocks, frame_batches, val_pairs
from pipeline.data.stores import read_array
from pipeline.data.streaming import SplitIndex, StoreReader


class CountingReader(StoreReader):
    """A reader that records each slice it reads."""

    def __init__(self, store):
        super().__init__(store)
        self.reads = []

    def read(self, video_id, array, start=0, stop=None):
        self.reads.append((video_id, start, stop))
        return super().read(video_id, array, start, stop)


def blocks(store, **kw):
    return FrameBlocks(SplitIndex.open(store, "train", "frames"),
                       **({"batch_size": 8, "per_chunk": 4, "block_steps": 4, "seed": 0} | kw))


def test_a_block_reads_each_chunk_in_one_slice_that_serves_several_frames(frames_store):
    b = blocks(frames_store)
    b.reader = CountingReader(frames_store)
    x = b[0]
    assert x.shape == (4, 8, 32, 32, 3) and x.dtype == torch.uint8
    assert len(b.reader.reads) == 4 * 8 // 4  # 32 frames, 4 from each chunk read
    for _, start, stop in b.reader.reads:
        assert start % 8 == 0 and stop - start <= 8  # within one chunk of 8 frames


def test_a_blocks_frames_are_the_stores_frames_dealt_across_its_steps(frames_store):
    b = blocks(frames_store, batch_size=3, per_chunk=2, block_steps=2)
    groups, order = b.picks(5)
    picked = []
    for c, offsets in groups:
        video, first = b.chunks[c]
        picked += [read_array(frames_store, b.index.ids[video], "frames", int(first + o), int(first + o) + 1)[0]
                   for o in offsets]
    np.testing.assert_array_equal(b[5].numpy(), np.stack(picked)[order].reshape(2, 3, 32, 32, 3))


def test_a_batch_mixes_frames_of_many_chunks(frames_store):
    b = blocks(frames_store, batch_size=8, per_chunk=4, block_steps=8)
    groups, order = b.picks(0)
    chunk_of = np.repeat([c for c, _ in groups], 4)[order].reshape(8, 8)  # the chunk of each frame of each batch
    # the store has 6 chunks; a batch of 8 drawn as 2 groups of 4 would hold 2 of them
    assert np.mean([len(set(row)) for row in chunk_of]) > 3.5


def test_every_training_frame_is_drawn_about_equally_often(frames_store):
    b = blocks(frames_store, batch_size=4, per_chunk=2, block_steps=2)
    counts = np.zeros((len(b.index), 24))
    for block in range(1500):
        for c, offsets in b.picks(block)[0]:
            video, first = b.chunks[c]
            counts[video, first + offsets] += 1
    share = counts / counts.sum()
    assert share.min() > 0.6 / 48 and share.max() < 1.4 / 48


@pytest.mark.parametrize("workers", [0, 2])
def test_the_batch_of_a_step_is_the_same_for_any_worker_count_and_start(frames_store, workers):
    b = blocks(frames_store)
    expected = [b[s // 4][s % 4] for s in range(5, 14)]
    got = list(frame_batches(b, 5, 14, workers=workers, device=torch.device("cpu")))
    assert len(got) == 9 and all(torch.equal(g, e) for g, e in zip(got, expected))
    assert not torch.equal(b[1], blocks(frames_store, seed=1)[1])


def test_val_pairs_are_frames_spread_over_the_split_each_with_the_frame_before(frames_store):
    index = SplitIndex.open(frames_store, "val", "frames")  # one video of 24 frames
    prev, cur = val_pairs(index, 5)
    frames = read_array(frames_store, "v2", "frames")
    picked = np.linspace(0, 22, 5).round().astype(int) + 1
    np.testing.assert_array_equal(cur, frames[picked])
    np.testing.assert_array_equal(prev, frames[picked - 1])
