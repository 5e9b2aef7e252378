"""Training the frame tokenizer (stage `train_tokenizer`), read top to bottom by `train_tokenizer`.

Loss: MSE + lpips_weight * LPIPS, each divided by its running RMS (DreamerV4), with masked input patches
(p ~ U(0, mask_max)) and a warmed-up EMA (docs/models.md#tokenizer).
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from pipeline.config import TokenizerParams
from pipeline.data.frame_batches import FrameBlocks, frame_batches, val_pairs
from pipeline.data.pixels import to_pixels
from pipeline.data.stores import StoreError, store_identity
from pipeline.data.streaming import SplitIndex
from pipeline.metrics import LPIPS, psnr, ssim
from pipeline.networks.tokenizer import (
    KIND,
    build_tokenizer,
    random_patch_mask,
    tokenizer_config,
)
from pipeline.runtime.seeding import seed_everything
from pipeline.training.optim import Optimization, check_finite
from pipeline.training.run import TrainingRun, run_fingerprint


# --------------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------------
def tokenizer_fingerprint(tok: TokenizerParams, seed: int, frames_identity: str) -> str:
    """What a checkpoint must match to be resumed: the tokenizer section, the RNG seed, the frames."""
    return run_fingerprint({"tokenizer": tok.model_dump(), "seed": seed}, frames_identity)


# --------------------------------------------------------------------------------------------
# loss normalisation
# --------------------------------------------------------------------------------------------
class RunningRMS:
    """Running root-mean-square of a scalar (EMA of its square; a plain mean over the first steps)."""

    def __init__(self, decay: float = 0.99, mean_sq: float = 0.0, count: int = 0):
        self.decay, self.mean_sq, self.count = decay, mean_sq, count

    def update(self, value: torch.Tensor) -> float:
        d = min(self.decay, self.count / (self.count + 1))
        self.mean_sq = d * self.mean_sq + (1 - d) * float(value.detach()) ** 2
        self.count += 1
        return math.sqrt(self.mean_sq) + 1e-12

    def state(self) -> dict:
        return {"mean_sq": self.mean_sq, "count": self.count}


# --------------------------------------------------------------------------------------------
# evaluation
# --------------------------------------------------------------------------------------------
@torch.no_grad()
def evaluate(model, lpips: LPIPS, prev: np.ndarray, cur: np.ndarray, batch: int = 64) -> dict:
    """Reconstruction PSNR / SSIM / LPIPS on val frames, beside persistence (the previous frame) on the same."""
    device = next(lpips.buffers()).device
    sums = {k: 0.0 for k in ("psnr", "ssim", "lpips", "persistence_psnr", "persistence_ssim", "persistence_lpips")}
    for i in range(0, len(cur), batch):
        x, p = to_pixels(cur[i : i + batch], device), to_pixels(prev[i : i + batch], device)
        recon = model.decode(model.encode(x))
        for name, pred in (("", recon), ("persistence_", p)):
            sums[name + "psnr"] += psnr(pred, x).sum().item()
            sums[name + "ssim"] += ssim(pred, x).sum().item()
            sums[name + "lpips"] += lpips(pred, x).sum().item()
    return {k: v / len(cur) for k, v in sums.items()}


def final_metrics(quality: dict, config: dict, step: int, val_frames: int, n_params: int) -> dict:
    """metrics/tokenizer.json from the last evaluation; no wall-clock figures (they would change the checkpoint)."""
    c, h, w = config["latent_shape"]
    pixels = 3 * config["image_size"][0] * config["image_size"][1]
    return {
        "step": step,
        "val": {k: quality[k] for k in ("psnr", "ssim", "lpips")},
        "persistence": {k: quality[f"persistence_{k}"] for k in ("psnr", "ssim", "lpips")},
        "psnr_gain_over_persistence": quality["psnr"] - quality["persistence_psnr"],
        "val_frames": val_frames,
        "latent_shape": [c, h, w],
        "compression_ratio": pixels / (c * h * w),  # values per frame, pixels / latents
        "compression_ratio_bytes": pixels / (2 * c * h * w),  # uint8 frames vs float16 latents
        "n_params": n_params,
    }


# --------------------------------------------------------------------------------------------
# the loop
# --------------------------------------------------------------------------------------------
def train_tokenizer(tok: TokenizerParams, seed: int, *, frames: str | Path, out_dir: str | Path,
                    live_dir: str | Path, metrics_path: str | Path,
                    on_step: Callable[[int, dict], None] | None = None) -> dict:  # fmt: skip
    """Train (or continue training) the tokenizer; writes and returns the final val metrics.
    `on_step(step, logs)` runs after every optimisation step (progress hooks, tests)."""
    t_start = time.perf_counter()
    frames = Path(frames)
    run = TrainingRun(KIND, loop=tok, fingerprint=tokenizer_fingerprint(tok, seed, store_identity(frames)),
                      out_dir=out_dir, live_dir=live_dir, metrics_path=metrics_path)

    # Data: train frames streamed from the store, chunk-grouped; a fixed set of val pairs.
    splits = {split: SplitIndex.open(frames, split, "frames") for split in ("train", "val")}
    for split, index in splits.items():
        if not len(index):
            raise StoreError(f"{frames}: no {split!r} videos (check extract.splits; the tokenizer needs train and val videos)")
    train = FrameBlocks(splits["train"], batch_size=tok.batch_size, per_chunk=tok.frames_per_chunk,
                        block_steps=tok.block_steps, seed=seed)
    prev, cur = val_pairs(splits["val"], tok.val_frames)

    # Model, optimisation (EMA warmed up), loss normalisation; all randomness from `seed`.
    seed_everything(seed)
    config = tokenizer_config(tok, tuple(splits["train"].frame_shape[:2]))
    model = build_tokenizer(config).to(run.device)
    opt = Optimization(model, tok, ema_warmup=True)
    lpips = LPIPS().to(run.device)
    step, extra = run.resume(model, opt)
    rms = {k: RunningRMS(**extra.get("rms", {}).get(k, {})) for k in ("mse", "lpips")}
    run.open_live({"tokenizer": tok.model_dump(), "seed": seed, "latent_shape": config["latent_shape"]})

    bar = tqdm(total=tok.steps, initial=step, desc="train_tokenizer", unit="step", dynamic_ncols=True)
    batches = frame_batches(train, step, tok.steps, workers=tok.loader_workers, device=run.device)
    waited, t_loop = 0.0, time.perf_counter()  # the share of the loop spent waiting for the loader
    while step < tok.steps:
        model.train()
        t_wait = time.perf_counter()
        frames_in = next(batches)
        waited += time.perf_counter() - t_wait
        x = to_pixels(frames_in, run.device)
        mask = random_patch_mask(len(x), model.mask_grid, tok.mask_max, run.device)
        recon, _ = model(x, mask)
        mse = F.mse_loss(recon, x)
        perceptual = lpips(recon, x).mean()
        loss = mse / rms["mse"].update(mse) + tok.lpips_weight * perceptual / rms["lpips"].update(perceptual)
        check_finite(loss, step)
        grad_norm = opt.step(loss, step)
        step += 1

        logs = {"loss": loss.item(), "mse": mse.item(), "lpips": perceptual.item(),
                "psnr": -10 * math.log10(max(mse.item(), 1e-10)), "grad_norm": grad_norm.item(), "lr": opt.lr}
        bar.update(1)
        bar.set_postfix(loss=f"{logs['loss']:.3f}", psnr=f"{logs['psnr']:.2f}")
        points = {f"train/{k}": v for k, v in logs.items()} if run.due(step, tok.log_every) else {}
        if run.due(step, tok.val_every):  # any val_every, not only multiples of log_every
            points |= {f"val/{k}": v for k, v in evaluate(opt.ema.module, lpips, prev, cur).items()}
        run.log(step, points)
        if step % tok.checkpoint_every == 0 and step < tok.steps:
            run.save(step, config=config, model=model, opt=opt, extra={"rms": {k: r.state() for k, r in rms.items()}})
        if on_step is not None:
            on_step(step, logs)
    bar.close()

    n_params = sum(p.numel() for p in model.parameters())
    metrics = final_metrics(evaluate(opt.ema.module, lpips, prev, cur), config, step, len(cur), n_params)
    run.save(step, config=config, model=model, opt=opt,
             extra={"rms": {k: r.state() for k, r in rms.items()}, "metrics": metrics})
    metrics |= {"resumed_from": run.resumed_from, "train_seconds_this_run": round(time.perf_counter() - t_start, 1),
                "loader_wait_share": waited / max(time.perf_counter() - t_loop, 1e-9)}
    return run.finish(metrics)
