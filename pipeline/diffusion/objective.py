"""The DreamerV4 objective: flow matching with x-prediction, diffusion forcing and shortcut forcing,
with tau = 0 clean and tau = 1 noise (overview: docs/models.md, Objective).

``z_tau = (1 - tau) x + tau eps``; an x0 prediction gives the velocity ``(x_hat - z_tau) / tau`` and a
step tau -> tau - d is ``z + d (x_hat - z) / tau`` (:func:`shortcut_step`). d is a power of two down to
1/k_max, tau lies on its grid {d, ..., 1}, and every frame draws its own. *Flow* rows take d = 1/k_max
and a plain x-loss (some frames as near-clean *context*, tau in {1, 2}/k_max); an exact
``bootstrap_fraction`` of rows are *bootstrap* rows, coarser d uniform in log-space, with a two-half-step
target (:func:`bootstrap_target`). ``visible`` is causal except for single-frame rows and
*history-dropout* rows (the newest w frames plus random older ones, a retention policy's gapped
history). Each frame's error is weighted 0.9 (1 - tau) + 0.1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


def ramp_weight(tau: torch.Tensor) -> torch.Tensor:
    return 0.9 * (1.0 - tau) + 0.1


def add_noise(x0: torch.Tensor, eps: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
    """z_tau = (1 - tau) x0 + tau eps, tau broadcast over the trailing (C, h, w)."""
    tau = tau[..., None, None, None]
    return (1.0 - tau) * x0 + tau * eps


def shortcut_step(z: torch.Tensor, x_pred: torch.Tensor, tau: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """One sampler step tau -> tau - d from the x0 prediction: z + d (x_pred - z) / tau."""
    tau, d = tau[..., None, None, None], d[..., None, None, None]
    return z + d * (x_pred - z) / tau


def sample_step_sizes(shape, k_max: int, bootstrap: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """d per frame: 1/k_max for flow rows; for bootstrap rows (bool (B,)) 2**-j with j uniform
    over {0, ..., log2(k_max) - 1}, i.e. uniform over the coarse levels in log-space."""
    levels = int(math.log2(k_max))
    j = torch.full(shape, levels, dtype=torch.long)
    if levels > 0:
        coarse = torch.randint(0, levels, shape, generator=generator)
        j = torch.where(bootstrap.view(-1, *[1] * (len(shape) - 1)), coarse, j)
    return torch.pow(2.0, -j.float())


def sample_taus(d: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """tau uniform on the grid of d: {d, 2d, ..., 1}."""
    n = torch.round(1.0 / d).long()
    i = (torch.rand(d.shape, generator=generator) * n).long().clamp(max=n - 1) + 1
    return i.float() * d


HISTORY_WINDOW = 8  # history dropout keeps the newest 1..8 frames before each frame (budgets 4, 8)


@dataclass
class NoisePlan:
    """Every random choice of one training step's loss, for a (global) batch of B x T frames."""

    tau: torch.Tensor  # (B, T)
    d: torch.Tensor  # (B, T)
    eps: torch.Tensor  # (B, T, C, h, w)
    bootstrap: torch.Tensor  # (B,) bool
    independent: torch.Tensor  # (B,) bool: single-frame sequences
    visible: torch.Tensor  # (B, T, T) bool: frame i may attend to frame j

    def rows(self, index: slice | torch.Tensor) -> "NoisePlan":
        """The plan of some rows (a DDP rank's shard)."""
        return NoisePlan(*(t[index] for t in self._tensors()))

    def to(self, device) -> "NoisePlan":
        return NoisePlan(*(t.to(device) for t in self._tensors()))

    def _tensors(self) -> tuple[torch.Tensor, ...]:
        return (self.tau, self.d, self.eps, self.bootstrap, self.independent, self.visible)


def causal_visibility(b: int, t: int) -> torch.Tensor:
    """(B, T, T): every frame sees itself and the frames before it."""
    return torch.ones(t, t, dtype=torch.bool).tril().expand(b, t, t).clone()


def gapped_history(t: int, generator: torch.Generator) -> torch.Tensor:
    """(T, T) one history-dropout row: the newest w frames before each frame, older ones kept
    with probability r (one draw of w and r per row), itself always."""
    w = int(torch.randint(1, HISTORY_WINDOW + 1, (1,), generator=generator))
    r = float(torch.rand(1, generator=generator))
    kept = torch.rand(t, generator=generator) < r
    age = torch.arange(t)[:, None] - torch.arange(t)[None, :]  # i - j
    return (age >= 0) & ((age <= w) | kept[None, :])


def sample_visibility(b: int, t: int, independent: torch.Tensor, history_dropout: float,
                      generator: torch.Generator) -> torch.Tensor:
    """(B, T, T): causal; single-frame rows see themselves; history-dropout rows a gapped past.
    Without history dropout it draws nothing, so that plans without it stay as they were."""
    visible = causal_visibility(b, t)
    dropout = torch.rand(b, generator=generator) < history_dropout if history_dropout > 0 else torch.zeros(b, dtype=torch.bool)
    for row in range(b):
        if independent[row]:
            visible[row] = torch.eye(t, dtype=torch.bool)
        elif dropout[row]:
            visible[row] = gapped_history(t, generator)
    return visible


def sample_plan(
    shape: tuple[int, ...],
    *,
    k_max: int,
    bootstrap_fraction: float,
    single_frame_fraction: float,
    generator: torch.Generator,
    context_fraction: float = 0.0,
    history_dropout: float = 0.0,
) -> NoisePlan:
    """shape = (B, T, C, h, w). round(B * bootstrap_fraction) rows get bootstrap targets;
    each row is a single-frame sequence with probability single_frame_fraction, else a
    history-dropout row with probability history_dropout; each frame of a flow row is a
    context frame with probability context_fraction."""
    b, t = shape[:2]
    bootstrap = torch.zeros(b, dtype=torch.bool)
    if k_max > 1:  # with k_max = 1 there is no coarser step to distil
        bootstrap[torch.randperm(b, generator=generator)[: round(b * bootstrap_fraction)]] = True
    independent = torch.rand(b, generator=generator) < single_frame_fraction
    d = sample_step_sizes((b, t), k_max, bootstrap, generator)
    tau = sample_taus(d, generator)
    eps = torch.randn(shape, generator=generator)
    if context_fraction > 0:  # drawn only when asked for, so that plans without it stay as they were
        context = ~bootstrap[:, None] & (torch.rand((b, t), generator=generator) < context_fraction)
        tau = torch.where(context, torch.randint(1, 3, (b, t), generator=generator).float() / k_max, tau)
    visible = sample_visibility(b, t, independent, history_dropout, generator)
    return NoisePlan(tau, d, eps, bootstrap, independent, visible)


@torch.no_grad()
def bootstrap_target(model, z, tau, d, actions=None, poses=None, visible=None, space: str = "velocity",
                     memory=None, times=None) -> torch.Tensor:
    """The x target of a step of size d from two stop-gradient half steps (DreamerV4 eq. 7): their
    velocities averaged and mapped back, ``z + tau (u1 + u2) / 2``, so one step of d lands where the two
    half steps land. ``space="x"`` (ablation) averages the two x predictions instead. ``times`` (B, T):
    the frames' times (gapped batches), passed to the model only when given."""
    half = d / 2
    at = {} if times is None else {"times": times}
    x1 = model(z, tau, half, actions, poses, visible, memory, **at)
    z_mid = shortcut_step(z, x1, tau, half)
    x2 = model(z_mid, tau - half, half, actions, poses, visible, memory, **at)
    if space == "x":
        return (x1 + x2) / 2
    if space != "velocity":
        raise ValueError(f"train.bootstrap_space must be 'velocity' or 'x', got {space!r}")
    col = lambda v: v[..., None, None, None]  # noqa: E731
    u1 = (x1 - z) / col(tau)
    u2 = (x2 - z_mid) / col(tau - half)
    return z + col(tau) * (u1 + u2) / 2


def shortcut_forcing_loss(model, x0, actions, plan: NoisePlan, bootstrap_space: str = "velocity", poses=None,
                          times=None):
    """Weighted x-space loss of one batch: (loss, per-frame squared errors (B, T)). x0 is also the
    model's ``memory`` (clean frames for pose recall); every frame weighs equally, so DDP's average
    over equal shards equals the global batch's gradient. ``times`` (B, T): the frames' times for the
    model's temporal RoPE (a gapped batch's offsets in its windows); None: 0..T-1."""
    z = add_noise(x0, plan.eps, plan.tau)
    target = x0
    rows = plan.bootstrap.nonzero().flatten()
    if len(rows):
        a = None if actions is None else actions[rows]
        p = None if poses is None else poses[rows]
        tm = None if times is None else times[rows]
        teacher = bootstrap_target(
            model, z[rows], plan.tau[rows], plan.d[rows], a, p, plan.visible[rows], bootstrap_space, x0[rows], tm
        )
        target = x0.clone()
        target[rows] = teacher.to(target.dtype)
    pred = model(z, plan.tau, plan.d, actions, poses, plan.visible, x0, **({} if times is None else {"times": times}))
    err = (pred.float() - target.float()).pow(2).mean(dim=(2, 3, 4))  # (B, T)
    loss = (ramp_weight(plan.tau) * err).mean()
    return loss, err.detach()
