"""The references that bracket policies: persistence, the tokenizer ceiling, and the copy oracles
that measure memory headroom without a model."""

import torch

from pipeline.benchmark.references import (
    COPY_PSNR_CAP,
    copy_oracle,
    memory_candidates,
    memory_reference_names,
    persistence,
)


def revisiting_clip() -> torch.Tensor:
    """Frames 0..5 are distinct; frame 6 repeats frame 1 (out of the last 4), frame 7 repeats 6."""
    g = torch.Generator().manual_seed(0)
    frames = torch.rand(8, 3, 8, 8, generator=g)
    frames[6] = frames[1]
    frames[7] = frames[6]
    return frames


def test_the_all_past_oracle_finds_a_revisit_that_the_last_four_frames_miss():
    clip = revisiting_clip()
    all_past, all_psnr = copy_oracle(clip, 6, memory_candidates("memory_all_past", 6, 2))
    last4, last4_psnr = copy_oracle(clip, 6, memory_candidates("memory_last_4", 6, 2))
    torch.testing.assert_close(all_past[0], clip[1])
    assert all_psnr[0] == COPY_PSNR_CAP  # an exact copy, capped
    assert last4_psnr[0] < 15  # random frames
    assert all_psnr[1] == last4_psnr[1] == COPY_PSNR_CAP  # frame 7 repeats the frame before it


def test_the_oracle_of_a_policy_copies_only_from_the_frames_it_kept():
    clip = revisiting_clip()
    kept_old, kept_recent = [[0, 1, 5], [1, 5, 6]], [[3, 4, 5], [4, 5, 6]]
    assert copy_oracle(clip, 6, kept_old)[1][0] == COPY_PSNR_CAP
    assert copy_oracle(clip, 6, kept_recent)[1][0] < 15


def test_memory_reference_names_follow_the_finite_budgets_largest_first():
    assert memory_reference_names({"full": None, "tight": 4, "medium": 8}) == [
        "memory_all_past", "memory_last_8", "memory_last_4"]
    assert memory_candidates("memory_last_4", 3, 2) == [[0, 1, 2], [0, 1, 2, 3]]


def test_persistence_repeats_the_last_context_frame():
    clip = revisiting_clip()
    torch.testing.assert_close(persistence(clip[:3], 4), clip[2:3].expand(4, -1, -1, -1))
