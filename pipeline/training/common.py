"""Pieces every training loop here shares: seeding, device and precision, AdamW with warmup and
cosine decay, an EMA of the weights, and a guard against non-finite losses."""

from __future__ import annotations

import contextlib
import copy
import csv
import math
import random
import shutil
from pathlib import Path

import numpy as np
import torch
from torch import nn


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or Inf; training stops and the last good checkpoint stays."""


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def pick_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def autocast(device: torch.device, precision: str):
    """bf16 autocast where the device supports it ("auto": CUDA with bf16 only; CPU stays fp32
    so that CPU runs are exactly reproducible)."""
    use_bf16 = precision == "bf16" or (
        precision == "auto" and device.type == "cuda" and torch.cuda.is_bf16_supported()
    )
    if use_bf16:
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


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
    """Exponential moving average of a model's weights (buffers copied as they are)."""

    def __init__(self, model: nn.Module, decay: float):
        super().__init__()
        self.decay = decay
        self.module = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for ema_p, p in zip(self.module.parameters(), model.parameters()):
            ema_p.lerp_(p.detach(), 1 - self.decay)
        for ema_b, b in zip(self.module.buffers(), model.buffers()):
            ema_b.copy_(b)

    def state_dict(self, *args, **kwargs):  # the averaged model's own keys, loadable into the model
        return self.module.state_dict(*args, **kwargs)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        return self.module.load_state_dict(state_dict, strict=strict, assign=assign)


def check_finite(loss: torch.Tensor, step: int) -> None:
    if not torch.isfinite(loss).all():
        raise NonFiniteLossError(
            f"loss is {loss.item()} at step {step}; stopping. The last good checkpoint is kept; "
            "lower the learning rate or check the data."
        )


# ---------------------------------------------------------------------------------------------
# DVCLive plots across resumes
# ---------------------------------------------------------------------------------------------
def truncate_live(live_dir: Path, step: int) -> None:
    """Drop logged rows after `step` (logged after the checkpoint a resume restarts from)."""
    for tsv in (Path(live_dir) / "plots" / "metrics").rglob("*.tsv"):
        with tsv.open() as f:
            rows = list(csv.DictReader(f, delimiter="\t"))
            fields = list(rows[0].keys()) if rows else None
        if fields is None:
            continue
        kept = [r for r in rows if int(r["step"]) <= step]
        with tsv.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=fields, delimiter="\t")
            w.writeheader()
            w.writerows(kept)


def open_live(live_dir: str | Path, resume_step: int | None):
    """A DVCLive logger for a training run: fresh plots for a new run (`resume_step` None), or
    the plots up to the checkpoint a resumed run restarts from (later rows were logged by the
    killed run and are logged again)."""
    from dvclive import Live

    if resume_step is None:
        shutil.rmtree(live_dir, ignore_errors=True)
    else:
        truncate_live(Path(live_dir), resume_step)
    return Live(str(live_dir), resume=resume_step is not None, save_dvc_exp=False, dvcyaml=None, report=None)
