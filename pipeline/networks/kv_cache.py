"""The dynamics model's evictable KV cache (docs/models.md#kv-cache).

Keys are stored already rotated at the frames' absolute times, so evicting frames never changes
the survivors. Each batch row is its own history; rows of different lengths are padded (ragged).
"""

from __future__ import annotations

import torch

from pipeline.networks.layers import append_index


class KVCache:
    """Per temporal layer k, v (B * N, kv_heads, frames, head_dim); per frame the ``FRAME_FIELDS``
    (B, frames, ...). Row b holds ``lengths[b]`` frames, left-aligned; the slots after them are padding."""

    # The per-frame values kept beside the keys/values, and what a padding slot holds.
    FRAME_FIELDS = {"poses": float("nan"), "taus": 0.0, "memory": 0.0, "observed": False}

    def __init__(self, batch_size: int, n_layers: int):
        self.batch_size = batch_size
        self.keys: list[torch.Tensor | None] = [None] * n_layers
        self.values: list[torch.Tensor | None] = [None] * n_layers
        self.row_positions: list[list[int]] = [[] for _ in range(batch_size)]  # per row, oldest first
        self.next_positions: list[int] = [0] * batch_size  # per row: after the newest frame ever appended
        self.poses: torch.Tensor | None = None  # (B, frames, 3)
        self.taus: torch.Tensor | None = None  # (B, frames)
        self.memory: torch.Tensor | None = None  # (B, frames, C, h, w): pose recall only
        self.observed: torch.Tensor | None = None  # (B, frames) bool: from the data, not generated (pose recall)

    def __len__(self) -> int:
        """The frame axis: the longest row."""
        return max((len(p) for p in self.row_positions), default=0)

    @property
    def lengths(self) -> list[int]:
        return [len(p) for p in self.row_positions]

    @property
    def ragged(self) -> bool:
        """Rows of different lengths: the shorter ones are padded."""
        return len(set(self.lengths)) > 1

    @property
    def positions(self) -> list[int]:
        """The time positions of the cached frames, when every row has the same (else ValueError)."""
        if any(p != self.row_positions[0] for p in self.row_positions):
            raise ValueError("KVCache.positions: the rows hold different frames (see row_positions)")
        return list(self.row_positions[0])

    def append(self, kvs: list[tuple[torch.Tensor, torch.Tensor]], positions: int | list,
               poses: torch.Tensor | None = None, taus: torch.Tensor | None = None,
               counts: list[int] | None = None, memory: torch.Tensor | None = None,
               observed: torch.Tensor | None = None) -> None:
        """Add T frames per row: per layer k, v (B * N, kv_heads, T, head_dim), poses (B, T, 3), taus (B, T),
        clean latents (B, T, C, h, w), observed (B, T). ``positions``: an int, T ints or B lists;
        ``counts[b]``: row b's real frames among the T (default all)."""
        t = kvs[0][0].shape[2] if kvs else len(positions) if isinstance(positions, list) else 1
        rows = row_lists(positions, self.batch_size, t)
        counts = [t] * self.batch_size if counts is None else list(counts)
        lengths = self.lengths
        plain = not self.ragged and all(c == t for c in counts)
        index = None if plain else append_index(lengths, counts, len(self))  # over [held | new]
        for i, (k, v) in enumerate(kvs):
            k_all = k if self.keys[i] is None else torch.cat([self.keys[i], k], dim=2)
            v_all = v if self.values[i] is None else torch.cat([self.values[i], v], dim=2)
            if index is not None:
                k_all, v_all = gather_frames(k_all, index[0]), gather_frames(v_all, index[0])
            self.keys[i], self.values[i] = k_all, v_all
        for (name, pad), new in zip(self.FRAME_FIELDS.items(), (poses, taus, memory, observed), strict=True):
            setattr(self, name, extend_frames(getattr(self, name), new, index, pad))
        for b, (row, c) in enumerate(zip(rows, counts)):
            if c:
                self.row_positions[b].extend(row[:c])
                self.next_positions[b] = row[c - 1] + 1

    def past(self, layer: int):
        return None if self.keys[layer] is None else (self.keys[layer], self.values[layer])

    def evict(self, keep: list[int]) -> None:
        """Keep only the cached frames at these indices (0 = oldest held), in this order, in every row."""
        self.evict_rows([list(keep)] * self.batch_size)

    def evict_rows(self, keeps: list[list[int]]) -> None:
        """Per row b, keep only its frames at ``keeps[b]`` (increasing indices, 0 = oldest)."""
        keeps = [list(k) for k in keeps]
        if len(keeps) != self.batch_size:
            raise ValueError(f"KVCache.evict_rows: {len(keeps)} keep lists for {self.batch_size} rows")
        for keep, n in zip(keeps, self.lengths):
            if any(not 0 <= i < n for i in keep) or len(set(keep)) != len(keep) or keep != sorted(keep):
                raise IndexError(f"KVCache.evict: keep must be increasing indices in [0, {n}), got {keep}")
        width = max(len(k) for k in keeps)
        if width == 0:
            self.keys = [None] * len(self.keys)
            self.values = [None] * len(self.values)
            self._each_frame_field(lambda values, pad: None)
        elif not self.ragged and all(k == keeps[0] for k in keeps):  # every row alike: one index
            index = torch.tensor(keeps[0], dtype=torch.long)
            for i, k in enumerate(self.keys):
                if k is not None:
                    self.keys[i] = k.index_select(2, index.to(k.device))
                    self.values[i] = self.values[i].index_select(2, index.to(k.device))
            self._each_frame_field(lambda values, pad: values[:, index.to(values.device)])
        else:
            index = torch.tensor([k + [0] * (width - len(k)) for k in keeps], dtype=torch.long)
            valid = torch.arange(width)[None] < torch.tensor([len(k) for k in keeps])[:, None]
            for i, k in enumerate(self.keys):
                if k is not None:
                    self.keys[i] = gather_frames(k, index)
                    self.values[i] = gather_frames(self.values[i], index)
            self._each_frame_field(lambda values, pad: gather_rows(values, index, valid, pad))
        self.row_positions = [[p[i] for i in keep] for p, keep in zip(self.row_positions, keeps)]

    def _each_frame_field(self, fn) -> None:
        """Replace each per-frame field that is set by ``fn(values, padding value)``."""
        for name, pad in self.FRAME_FIELDS.items():
            values = getattr(self, name)
            if values is not None:
                setattr(self, name, fn(values, pad))

    def nbytes(self) -> int:
        """Bytes the cache holds (keys, values and recall latents), padding included."""
        return sum(t.numel() * t.element_size() for t in [*self.keys, *self.values, self.memory] if t is not None)

    def row_nbytes(self) -> list[int]:
        """Per row: the bytes of its own frames (what the row would hold alone, padding excluded)."""
        per_frame = sum(t.numel() * t.element_size() // t.shape[2] // self.batch_size
                        for t in self.keys + self.values if t is not None and t.shape[2])
        if self.memory is not None and self.memory.shape[1]:
            per_frame += self.memory[0, 0].numel() * self.memory.element_size()
        return [n * per_frame for n in self.lengths]


def row_lists(positions, batch: int, t: int) -> list[list[int]]:
    """An int, a list of T ints or B lists -> B lists (per row)."""
    if isinstance(positions, int):
        return [[positions]] * batch
    positions = list(positions)
    if positions and isinstance(positions[0], (list, tuple)):
        if len(positions) != batch:
            raise ValueError(f"{len(positions)} rows of positions for a batch of {batch}")
        return [[int(p) for p in row] for row in positions]
    return [[int(p) for p in positions]] * batch


def gather_frames(t: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """t (B * N, H, F, D) -> (B * N, H, F', D): row b's frames ``index[b]`` (B, F')."""
    rows = index.shape[0]
    idx = index.to(t.device).repeat_interleave(t.shape[0] // rows, dim=0)[:, None, :, None]
    return t.gather(2, idx.expand(-1, t.shape[1], -1, t.shape[3]))


def gather_rows(t: torch.Tensor | None, index: torch.Tensor, valid: torch.Tensor, pad: float) -> torch.Tensor | None:
    """t (B, F, ...) -> (B, F', ...) at ``index`` (B, F'), ``pad`` where not ``valid``."""
    if t is None:
        return None
    idx, ok = index.to(t.device), valid.to(t.device)
    shape = (*idx.shape, *t.shape[2:])
    idx = idx.reshape(*idx.shape, *[1] * (t.ndim - 2)).expand(shape)
    ok = ok.reshape(*ok.shape, *[1] * (t.ndim - 2))
    return t.gather(1, idx).masked_fill(~ok, pad)


def extend_frames(held: torch.Tensor | None, new: torch.Tensor | None,
              index: tuple[torch.Tensor, torch.Tensor] | None = None, pad: float = 0.0) -> torch.Tensor | None:
    """Per-frame values (B, F, ...): held then new; with ``index`` (from :func:`append_index`) each row's
    own frames then its new ones, ``pad`` after."""
    out = new if held is None else held if new is None else torch.cat([held, new], dim=1)
    if out is None or index is None:
        return out
    return gather_rows(out, *index, pad)
