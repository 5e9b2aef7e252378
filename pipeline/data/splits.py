"""Assign each video (never a frame) to train, val or test: counts by the ratios, videos sorted by a
hash of (seed, id) filling train, val, then test (why: docs/stages.md)."""

from __future__ import annotations

import hashlib
from typing import Iterable, Mapping

SPLITS = ("train", "val", "test")


def unit_hash(video_id: str, seed: int) -> float:
    """A uniform number in [0, 1) from (seed, id), the same on every machine and Python version."""
    digest = hashlib.sha256(f"{seed}:{video_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_counts(n: int, ratios: Mapping[str, float]) -> dict[str, int]:
    """Videos per split: largest remainder of n * ratio, then >= 1 for each positive ratio when n allows."""
    exact = {s: n * ratios[s] for s in SPLITS}
    counts = {s: int(exact[s]) for s in SPLITS}
    by_remainder = sorted(SPLITS, key=lambda s: (-(exact[s] - counts[s]), SPLITS.index(s)))
    for s in by_remainder[: n - sum(counts.values())]:
        counts[s] += 1
    wanted = [s for s in SPLITS if ratios[s] > 0]
    if n >= len(wanted):
        for s in wanted:
            if counts[s] == 0:  # take one from the largest split
                donor = max(wanted, key=lambda d: (counts[d], -SPLITS.index(d)))
                counts[donor] -= 1
                counts[s] += 1
    return counts


def assign_splits(video_ids: Iterable[str], ratios: Mapping[str, float], seed: int) -> dict[str, str]:
    """{video_id: split}. `ratios` maps train/val/test to fractions summing to 1."""
    ids = sorted(set(video_ids))
    missing = [s for s in SPLITS if s not in ratios]
    if missing:
        raise ValueError(f"extract.splits: missing {', '.join(missing)}")
    total = sum(ratios[s] for s in SPLITS)
    if abs(total - 1) > 1e-6:
        raise ValueError(f"extract.splits: ratios must sum to 1, got {total:g}")

    order = sorted(ids, key=lambda v: (unit_hash(v, seed), v))
    counts = split_counts(len(ids), ratios)
    labels = [s for s in SPLITS for _ in range(counts[s])]
    return dict(zip(order, labels))
