"""What the recorder tests read back from a recording, and the revisit check the explorers share."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from skimage.metrics import peak_signal_noise_ratio as psnr

from tests.data.video.synth import decode_native


def read_recording(out: Path, entry) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(frames decoded from the mp4, actions, poses) of one recorded episode in ``out``."""
    return (decode_native(out / entry.file_name), np.load(out / entry.extra["actions_file"], allow_pickle=False),
            np.load(out / entry.extra["pose_file"], allow_pickle=False))  # fmt: skip


def assert_a_revisited_pose_shows_the_same_frame(frames: np.ndarray, poses: np.ndarray, min_gap: int = 4) -> None:
    """Some frame repeats a pose held more than ``min_gap`` frames earlier, and the same pose shows
    the same view: equal up to x264's quantisation (the engines render it bit-exactly), while from
    one frame to the next the view changes."""
    revisits = [(t, s) for t in range(len(poses)) for s in range(t - min_gap) if np.array_equal(poses[t], poses[s])]
    assert revisits, f"no frame repeats a pose held more than {min_gap} frames earlier"
    again = [psnr(frames[t], frames[s]) for t, s in revisits]
    assert np.median(again) > 35, again
    step = [psnr(frames[t], frames[t + 1]) for t in range(len(frames) - 1)]
    assert np.median(again) > np.median(step) + 8
