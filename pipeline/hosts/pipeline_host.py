"""The rollout host for this pipeline's own models: the tokenizer and the dynamics transformer.

One frame is K shortcut Euler steps (``ShortcutEulerSampler``) with the retained history as context
at noise level tau_ctx, every frame at its own time in the clip. ``recompute`` re-runs the kept
latents once per generated frame (one prefill shared by the K calls); ``kv`` runs each frame once
and evicts keys/values. Rows of a batch share one cache, padded and masked. Details:
docs/benchmark.md (Hosts).
"""

from __future__ import annotations

from pathlib import Path

import torch

from pipeline.diffusion.sampler import ShortcutEulerSampler
from pipeline.networks.checkpoint import load_trained
from pipeline.networks.dynamics import KIND as DYNAMICS_KIND
from pipeline.networks.dynamics import build_dynamics
from pipeline.networks.tokenizer import KIND as TOKENIZER_KIND
from pipeline.networks.tokenizer import build_tokenizer
from pipeline.rollout.api import FrameInfo, Mode
from pipeline.rollout.batch import OneRow


class PipelineHost:
    """``RolloutHost`` over a tokenizer (encode/decode) and a DynamicsTransformer."""

    def __init__(self, tokenizer, dynamics, sampler: ShortcutEulerSampler, device: torch.device | str = "cpu",
                 attention_signal: bool = True, copy_gate_shift: float = 0.0):
        self.tokenizer = tokenizer.eval()
        self.dynamics = dynamics.eval()
        self.copy_gate_shift = copy_gate_shift  # pose recall's copy gate, shifted toward copying when generating
        self.sampler = sampler
        self.device = torch.device(device)
        k_max = int(dynamics.config.k_max)
        if sampler.steps > k_max:
            raise ValueError(f"{sampler.steps} sampling steps need shortcut steps below 1/k_max = 1/{k_max}")
        self.d_context = 1.0 / k_max  # context frames are (nearly) clean: the finest step size
        self.uses_actions = int(getattr(dynamics.config, "n_actions", 0) or 0) > 0
        self.uses_poses = bool(getattr(dynamics.config, "pose_conditioning", False))
        self.pose_bias_rate = float(dynamics.config.pose_bias) if self.uses_poses and dynamics.config.pose_bias > 0 else None
        self.attention_signal = attention_signal  # False: no attention_mass (bench/bench_rollout.py measures its cost)

    @classmethod
    def load(cls, tokenizer_dir: str | Path, dynamics_dir: str | Path, sampling_steps: int, tau_ctx: float,
             device: torch.device | str = "cpu", copy_gate_shift: float = 0.0) -> "PipelineHost":
        tokenizer = load_trained(tokenizer_dir, TOKENIZER_KIND, build_tokenizer, device)
        dynamics = load_trained(dynamics_dir, DYNAMICS_KIND, build_dynamics, device)
        return cls(tokenizer, dynamics, ShortcutEulerSampler(sampling_steps, tau_ctx), device,
                   copy_gate_shift=copy_gate_shift)

    @torch.no_grad()
    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.tokenizer.encode(pixels.to(self.device)).float()

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return self.tokenizer.decode(latents.to(self.device)).float().clamp(0, 1)

    def start(self, mode: Mode, generator: torch.Generator) -> OneRow:
        """One rollout's session: a batch of one (see :meth:`start_batch`)."""
        return OneRow(self.start_batch(mode, [generator]))

    def start_batch(self, mode: Mode, generators: list[torch.Generator]) -> "PipelineBatchSession":
        if mode not in ("recompute", "kv"):
            raise ValueError(f"unknown rollout mode {mode!r} (expected recompute or kv)")
        return PipelineBatchSession(self, mode, generators)

    def action_tensor(self, rows: list[list[FrameInfo]], length: int | None = None) -> torch.Tensor | None:
        """(B, T) long for the model, -1 = no action (and padding past a row's frames); None
        when the model takes no actions."""
        if not self.uses_actions:
            return None
        length = max(map(len, rows)) if length is None else length
        table = [[-1 if f.action is None else f.action for f in row] + [-1] * (length - len(row)) for row in rows]
        return torch.tensor(table, device=self.device, dtype=torch.long)

    def pose_tensor(self, rows: list[list[FrameInfo]], length: int | None = None) -> torch.Tensor | None:
        """(B, T, 3) for a pose-conditioned model (NaN rows: no pose, and padding); None otherwise."""
        if not self.uses_poses:
            return None
        length = max(map(len, rows)) if length is None else length
        nan = (float("nan"),) * 3
        table = [[nan if f.pose is None else f.pose for f in row] + [nan] * (length - len(row)) for row in rows]
        return torch.tensor(table, device=self.device, dtype=torch.float32)


class PipelineBatchSession:
    """The histories of B rollouts (rows) on one host: corrupted latents re-run per frame
    (``recompute``) or one ragged KVCache (``kv``). Each row draws its noise from its own generator,
    so its frames equal those it gets alone to float rounding."""

    def __init__(self, host: PipelineHost, mode: Mode, generators: list[torch.Generator]):
        self.host, self.mode, self.generators = host, mode, list(generators)
        self.rows = len(self.generators)
        self.cache = host.dynamics.new_cache(self.rows) if mode == "kv" else None
        self.latents: list[list[torch.Tensor]] = [[] for _ in range(self.rows)]  # recompute: the history, corrupted
        self.memory: list[list[torch.Tensor]] = [[] for _ in range(self.rows)]  # recompute: the same frames, clean
        self.infos: list[list[FrameInfo]] = [[] for _ in range(self.rows)]  # recompute: its frames' infos
        self.shape: tuple[int, ...] = ()  # (C, h, w) of the frames, known once one is appended
        self.last_attention: list[list[float]] | None = None  # see attention_mass

    def append(self, frames) -> None:
        """Add each row's (latent, FrameInfo) frames as context: corrupted to tau_ctx with the row's
        generator (the clean latent kept for pose recall); kv mode prefills them in one pass."""
        host = self.host
        clean = [[(host.dynamics.normalize(x.to(host.device, torch.float32)), info) for x, info in row] for row in frames]
        rows = [[(host.sampler.corrupt(x, g), x, info) for x, info in row]
                for row, g in zip(clean, self.generators, strict=True)]
        if not any(rows):
            return
        self.shape = tuple(next(x for row in rows for x, _, _ in row).shape)
        if self.cache is None:
            for b, row in enumerate(rows):
                self.latents[b].extend(x for x, _, _ in row)
                self.memory[b].extend(m for _, m, _ in row)
                self.infos[b].extend(info for _, _, info in row)
        else:
            self._prefill(self.cache, [[x for x, _, _ in row] for row in rows], [[i for _, _, i in row] for row in rows],
                          [[m for _, m, _ in row] for row in rows])

    def _prefill(self, cache, latents: list[list[torch.Tensor]], infos: list[list[FrameInfo]],
                 memory: list[list[torch.Tensor]]) -> None:
        """Run each row's frames (already at tau_ctx; ``memory``: the same, clean) as context into
        ``cache``: one padded pass."""
        host = self.host
        counts = [len(row) for row in latents]
        t = max(counts)
        padding = torch.zeros(self.shape, device=host.device)

        def stacked(rows):
            return torch.stack([torch.stack(row + [padding] * (t - len(row))) for row in rows])

        x = stacked(latents)
        recall = host.dynamics.recall is not None  # only a recall model reads clean latents and observed flags
        clean = stacked(memory) if recall else None
        observed = torch.tensor([[f.observed for f in row] + [True] * (t - len(row)) for row in infos],
                                dtype=torch.bool, device=host.device) if recall else None
        times = [[f.time for f in row] + [row[-1].time + 1 + j if row else j for j in range(t - len(row))]
                 for row in infos]
        host.dynamics.prefill(
            cache, x, torch.full((self.rows, t), host.sampler.tau_ctx, device=host.device),
            torch.full((self.rows, t), host.d_context, device=host.device),
            host.action_tensor(infos, t), host.pose_tensor(infos, t), times,
            counts=None if len(set(counts)) == 1 else counts, memory=clean, observed=observed,
        )

    def evict(self, keep) -> None:
        keep = [None if k is None else list(k) for k in keep]
        if self.cache is not None:
            lengths = self.cache.lengths
            self.cache.evict_rows([list(range(n)) if k is None else k for k, n in zip(keep, lengths, strict=True)])
            return
        for b, k in enumerate(keep):
            if k is not None:
                self.latents[b] = [self.latents[b][i] for i in k]
                self.memory[b] = [self.memory[b][i] for i in k]
                self.infos[b] = [self.infos[b][i] for i in k]

    @torch.no_grad()
    def generate(self, infos) -> torch.Tensor:
        """The next frame of every row (B, C, h, w), K shortcut Euler steps from its history."""
        host = self.host
        if self.cache is None:
            # A fresh cache from the kept latents, at their own times: nothing survives from the
            # previous frame, so evicted frames leave no trace in the survivors' keys/values.
            cache = host.dynamics.new_cache(self.rows)
            self._prefill(cache, self.latents, self.infos, self.memory)
        else:
            cache = self.cache
        lengths = cache.lengths
        infos = list(infos)
        acts, poses = host.action_tensor([[f] for f in infos]), host.pose_tensor([[f] for f in infos])
        conditioning = {"action": None if acts is None else acts[:, 0], "pose": None if poses is None else poses[:, 0],
                        "time": [f.time for f in infos]}
        calls = iter(range(host.sampler.steps, 0, -1))

        def vec(value: float) -> torch.Tensor:
            return torch.full((self.rows,), value, device=host.device)

        def denoise(z: torch.Tensor, tau: float, d: float) -> torch.Tensor:
            final = next(calls) == 1 and host.attention_signal
            layers = [] if final else None  # where the final call's queries looked, for attention_mass
            x0 = host.dynamics.step(cache, z, vec(tau), vec(d), append=False, attention=layers,
                                    copy_gate_shift=host.copy_gate_shift, **conditioning)
            if final:
                shares = torch.stack(layers).mean(dim=0).cpu()  # mean over layers: (B, keys)
                self.last_attention = [shares[b, :n].tolist() for b, n in enumerate(lengths)]  # without itself
            return x0

        z = host.sampler.sample_rows(denoise, self.shape, self.generators, host.device)
        return host.dynamics.denormalize(z)

    def attention_mass(self) -> list[list[float] | None]:
        """Per row, per retained frame: its share of the last frame's final denoising call's temporal
        attention (mean over layers, heads, tokens; the rest went to the new frame). None before."""
        return self.last_attention or [None] * self.rows

    def retained_bytes(self) -> list[int]:
        """Per row: its kept latents (recompute) or its own keys/values (kv), plus clean latents for recall."""
        if self.cache is not None:
            return self.cache.row_nbytes()
        kept = [self.latents] + ([self.memory] if self.host.dynamics.recall is not None else [])
        return [sum(x.numel() * x.element_size() for rows in kept for x in rows[b]) for b in range(self.rows)]
