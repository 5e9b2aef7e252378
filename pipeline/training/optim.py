"""The optimisation both loops share: AdamW, linear warm-up + cosine decay, gradient clipping, weight
EMA and a non-finite loss guard, bundled per model by :class:`Optimization` (``opt.step(loss, step)``)."""

from __future__ import annotations

import copy
import math
from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from pipeline.config import TrainingLoopParams


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or Inf; training stops and the last good checkpoint stays."""


def check_finite(loss: torch.Tensor, step: int) -> None:
    if not torch.isfinite(loss).all():
        raise NonFiniteLossError(
            f"loss is {loss.item()} at step {step}; stopping. The last good checkpoint is kept; "
            "lower the learning rate or check the data."
        )


def build_optimizer(model: nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW; no weight decay on norms, biases and embeddings-of-one-vector (ndim < 2)."""
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim < 2]
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=lr,
        betas=(0.9, 0.99),
    )


def warmup_cosine(optimizer: torch.optim.Optimizer, warmup: int, total: int, min_ratio: float = 0.1):
    """Linear warmup to the base lr, then cosine decay to min_ratio * lr at `total` steps."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


class EMA(nn.Module):
    """Exponential moving average of a model's weights (buffers copied). With `warmup`, update `step` uses
    min(decay, (1 + step) / (10 + step)), so the early average follows the model, not its initialisation."""

    def __init__(self, model: nn.Module, decay: float, warmup: bool = False):
        super().__init__()
        self.decay, self.warmup = decay, warmup
        self.module = copy.deepcopy(model).eval().requires_grad_(False)

    def decay_at(self, step: int) -> float:
        return min(self.decay, (1 + step) / (10 + step)) if self.warmup else self.decay

    @torch.no_grad()
    def update(self, model: nn.Module, step: int = 0) -> None:
        decay = self.decay_at(step)
        for ema_p, p in zip(self.module.parameters(), model.parameters()):
            ema_p.lerp_(p.detach(), 1 - decay)
        for ema_b, b in zip(self.module.buffers(), model.buffers()):
            ema_b.copy_(b)

    def state_dict(self, *args, **kwargs):  # the averaged model's own keys, loadable into the model
        return self.module.state_dict(*args, **kwargs)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        return self.module.load_state_dict(state_dict, strict=strict, assign=assign)


class Optimization:
    """What one optimisation step changes and a checkpoint saves: AdamW, warm-up + cosine over `loop.steps`,
    clipping at `loop.grad_clip`, the EMA."""

    def __init__(self, model: nn.Module, loop: TrainingLoopParams, *, ema_warmup: bool = False):
        self.model = model
        self.grad_clip = loop.grad_clip
        self.ema = EMA(model, loop.ema_decay, warmup=ema_warmup)
        self.optimizer = build_optimizer(model, loop.lr, loop.weight_decay)
        self.scheduler = warmup_cosine(self.optimizer, loop.warmup_steps, loop.steps)

    def step(self, loss: torch.Tensor, step: int) -> torch.Tensor:
        """Backward from `loss`, clip, AdamW step, schedule step, EMA update (as update number
        `step`); returns the gradient norm before clipping."""
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        self.ema.update(self.model, step)
        return grad_norm

    @property
    def lr(self) -> float:
        """The learning rate of the next step."""
        return self.scheduler.get_last_lr()[0]
