"""Batched host sessions: the histories of several rollouts (one per *row*) on one host.

A host may offer ``start_batch(mode, generators) -> BatchSession``; row b draws every random number
from ``generators[b]`` in the order a one-row session would, so its frames do not depend on the
other rows. Hosts without it run through :class:`SerialBatch`.
"""

from __future__ import annotations

from typing import Protocol, Sequence

import torch

from pipeline.rollout.api import FrameInfo, HostSession, Mode, RolloutHost

RowFrames = Sequence[tuple[torch.Tensor, FrameInfo]]


class BatchSession(Protocol):
    """One entry per row in every method; optional ``attention_mass() -> list[list[float] | None]``."""

    def append(self, frames: Sequence[RowFrames]) -> None: ...  # row b's new (latent, info) pairs, oldest first

    def evict(self, keep: Sequence[Sequence[int] | None]) -> None: ...  # indices row b keeps (None: all)

    def generate(self, infos: Sequence[FrameInfo]) -> torch.Tensor: ...  # (B, C, h, w): every row's next frame

    def retained_bytes(self) -> list[int]: ...  # per row, as if alone (padding excluded)


def start_batch(host: RolloutHost, mode: Mode, generators: Sequence[torch.Generator]) -> BatchSession:
    """The host's own batched session, or one session per row run in turn."""
    if hasattr(host, "start_batch"):
        return host.start_batch(mode, list(generators))
    return SerialBatch([host.start(mode, g) for g in generators])


class SerialBatch:
    """A BatchSession over one HostSession per row (hosts without ``start_batch``)."""

    def __init__(self, sessions: list[HostSession]):
        self.sessions = sessions

    def append(self, frames: Sequence[RowFrames]) -> None:
        for session, row in zip(self.sessions, frames, strict=True):
            for latent, info in row:
                session.append(latent, info)

    def evict(self, keep: Sequence[Sequence[int] | None]) -> None:
        for session, row in zip(self.sessions, keep, strict=True):
            if row is not None:
                session.evict(list(row))

    def generate(self, infos: Sequence[FrameInfo]) -> torch.Tensor:
        return torch.stack([s.generate(info) for s, info in zip(self.sessions, infos, strict=True)])

    def retained_bytes(self) -> list[int]:
        return [s.retained_bytes() for s in self.sessions]

    def attention_mass(self) -> list[list[float] | None]:
        return [getattr(s, "attention_mass", lambda: None)() for s in self.sessions]


class OneRow:
    """A HostSession over a one-row BatchSession (a host's ``start`` built on its ``start_batch``)."""

    def __init__(self, batch: BatchSession):
        self.batch = batch

    def append(self, latent: torch.Tensor, info: FrameInfo) -> None:
        self.batch.append([[(latent, info)]])

    def evict(self, keep: list[int]) -> None:
        self.batch.evict([list(keep)])

    def generate(self, info: FrameInfo) -> torch.Tensor:
        return self.batch.generate([info])[0]

    def retained_bytes(self) -> int:
        return self.batch.retained_bytes()[0]

    def attention_mass(self) -> list[float] | None:
        return self.batch.attention_mass()[0]
