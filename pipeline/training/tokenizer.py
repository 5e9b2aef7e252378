"""Training loop of the frame tokenizer (the `train_tokenizer` stage), top to bottom.

Loss: MSE + lpips_weight·LPIPS on reconstructions, each term divided by a running estimate of
its RMS (DreamerV4), so that the weight means the same thing whatever the terms' scales.
With ``mask_max > 0`` each sample hides a fraction p ~ U(0, mask_max) of its input patches.

Resume: the output directory persists across runs (``persist: true`` in dvc.yaml). A run
continues from its checkpoint only if the checkpoint was made with the same tokenizer params,
seed and frames store (``params_hash``) and has not reached ``steps``; otherwise it starts
fresh and clears the DVCLive directory. Checkpoints carry the optimizer, scheduler, EMA, RNG
and running-RMS state, so a resumed run follows the same trajectory as an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from pipeline.atomic import remove_stale_tmp
from pipeline.config import TokenizerParams
from pipeline.data.pixels import to_pixels
from pipeline.data.stores import StoreError, list_videos, open_store, store_identity
from pipeline.metrics import LPIPS, psnr, ssim
from pipeline.networks.tokenizer import (
    KIND,
    build_tokenizer,
    random_patch_mask,
    tokenizer_config,
)
from pipeline.training.checkpoint import (
    CheckpointError,
    load_training_state,
    read_config,
    save_checkpoint,
)
from pipeline.training.common import (
    EMA,
    build_optimizer,
    check_finite,
    open_live,
    pick_device,
    seed_everything,
    warmup_cosine,
)

LOG_EVERY = 10  # steps between logged training points


# --------------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------------
def params_hash(tok: TokenizerParams, seed: int, frames_identity: str) -> str:
    """What a checkpoint must match to be resumed. encode_batch_size only affects the tokenize stage."""
    section = tok.model_dump(exclude={"encode_batch_size"})
    blob = json.dumps({"tokenizer": section, "seed": seed, "frames": frames_identity}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def load_split(store: str | Path, split: str) -> list[np.ndarray]:
    """Frames uint8 (T, H, W, 3) of every video of `split`, in id order."""
    videos = list_videos(store, split=split)
    if not videos:
        raise StoreError(f"{store}: no {split!r} videos (check extract.splits; the tokenizer needs train and val videos)")
    root = open_store(store)
    return [np.asarray(root[v.id]["frames"][:]) for v in videos]


def val_pairs(videos: list[np.ndarray], n: int) -> tuple[np.ndarray, np.ndarray]:
    """`n` frames spread evenly over the val videos, with the frame before each (persistence)."""
    index = [(v, t) for v, frames in enumerate(videos) for t in range(1, len(frames))]
    if not index:
        raise StoreError("val videos have fewer than 2 frames each: no persistence baseline possible")
    pick = np.linspace(0, len(index) - 1, min(n, len(index))).round().astype(int)
    prev = np.stack([videos[index[i][0]][index[i][1] - 1] for i in pick])
    cur = np.stack([videos[index[i][0]][index[i][1]] for i in pick])
    return prev, cur


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
    """Reconstruction quality on val frames, and the persistence baseline (prev frame as the
    prediction of the current one) on the same frames."""
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


# --------------------------------------------------------------------------------------------
# the loop
# --------------------------------------------------------------------------------------------
def train_tokenizer(
    tok: TokenizerParams,
    seed: int,
    frames: str | Path,
    out_dir: str | Path,
    live_dir: str | Path,
    on_step: Callable[[int, dict], None] | None = None,
) -> dict:
    """Train (or continue training) the tokenizer; returns the final val metrics.

    `on_step(step, logs)` runs after every optimisation step (progress hooks, tests).
    """
    frames, out_dir, live_dir = Path(frames), Path(out_dir), Path(live_dir)
    device = pick_device()
    t_start = time.perf_counter()

    # Data: train frames in memory as uint8 (64 px Atari: ~12 KB a frame); val pairs fixed.
    identity = store_identity(frames)
    run_hash = params_hash(tok, seed, identity)
    train = torch.from_numpy(np.concatenate(load_split(frames, "train")))
    prev, cur = val_pairs(load_split(frames, "val"), tok.val_frames)
    image_size = tuple(train.shape[1:3])

    # Model, EMA, optimizer, schedule; all randomness from the seed.
    seed_everything(seed)
    config = tokenizer_config(tok, image_size)
    model = build_tokenizer(config).to(device)
    ema = EMA(model, tok.ema_decay)
    optimizer = build_optimizer(model, tok.lr, tok.weight_decay)
    scheduler = warmup_cosine(optimizer, tok.warmup_steps, tok.steps)
    lpips = LPIPS().to(device)
    rms = {"mse": RunningRMS(), "lpips": RunningRMS()}

    remove_stale_tmp(out_dir.parent, out_dir.name)  # leftovers of a killed run
    # Resume if the persisted checkpoint belongs to this very run and is unfinished.
    step, resume = 0, False
    try:
        header = read_config(out_dir, KIND)
        resume = header["extra"].get("params_hash") == run_hash and header["step"] < tok.steps
    except CheckpointError:
        pass
    if resume:
        step, extra = load_training_state(out_dir, kind=KIND, model=model, ema=ema, optimizer=optimizer, scheduler=scheduler)
        rms = {k: RunningRMS(**v) for k, v in extra["rms"].items()}
        print(f"train_tokenizer: resuming from step {step}/{tok.steps} ({out_dir})")
    live = open_live(live_dir, step if resume else None)
    live.log_params({"tokenizer": tok.model_dump(), "seed": seed, "latent_shape": config["latent_shape"]})

    def checkpoint(at: int, extra: dict | None = None) -> None:
        save_checkpoint(
            out_dir, kind=KIND, config=config, model=model, ema=ema, optimizer=optimizer, scheduler=scheduler, step=at,
            extra={"params_hash": run_hash, "frames_identity": identity, "rms": {k: r.state() for k, r in rms.items()}, **(extra or {})},
        )

    bar = tqdm(total=tok.steps, initial=step, desc="train_tokenizer", unit="step", dynamic_ncols=True)
    while step < tok.steps:
        model.train()
        x = to_pixels(train[torch.randint(len(train), (tok.batch_size,))], device)
        mask = random_patch_mask(len(x), model.mask_grid, tok.mask_max, device)
        recon, _ = model(x, mask)
        mse = F.mse_loss(recon, x)
        perceptual = lpips(recon, x).mean()
        loss = mse / rms["mse"].update(mse) + tok.lpips_weight * perceptual / rms["lpips"].update(perceptual)
        check_finite(loss, step)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), tok.grad_clip)
        optimizer.step()
        scheduler.step()
        ema.decay = min(tok.ema_decay, (1 + step) / (10 + step))  # warm-up: early EMA follows the model
        ema.update(model)
        step += 1

        logs = {"loss": loss.item(), "mse": mse.item(), "lpips": perceptual.item(),
                "psnr": -10 * math.log10(max(mse.item(), 1e-10)), "grad_norm": grad_norm.item(),
                "lr": scheduler.get_last_lr()[0]}
        bar.update(1)
        bar.set_postfix(loss=f"{logs['loss']:.3f}", psnr=f"{logs['psnr']:.2f}")
        log_train = step % LOG_EVERY == 0 or step == tok.steps
        log_val = step % tok.val_every == 0 or step == tok.steps  # any val_every, not only multiples of LOG_EVERY
        if log_train or log_val:
            live.step = step
            if log_train:
                for k, v in logs.items():
                    live.log_metric(f"train/{k}", v)
            if log_val:
                for k, v in evaluate(ema.module, lpips, prev, cur).items():
                    live.log_metric(f"val/{k}", v)
            live.next_step()
        if step % tok.checkpoint_every == 0 and step < tok.steps:
            checkpoint(step)
        if on_step is not None:
            on_step(step, logs)
    bar.close()

    final = evaluate(ema.module, lpips, prev, cur)
    c, h, w = config["latent_shape"]
    pixels = 3 * image_size[0] * image_size[1]
    metrics = {
        "step": step,
        "val": {k: final[k] for k in ("psnr", "ssim", "lpips")},
        "persistence": {k: final[f"persistence_{k}"] for k in ("psnr", "ssim", "lpips")},
        "psnr_gain_over_persistence": final["psnr"] - final["persistence_psnr"],
        "val_frames": len(cur),
        "latent_shape": [c, h, w],
        "compression_ratio": pixels / (c * h * w),  # values per frame, pixels / latents
        "compression_ratio_bytes": pixels / (2 * c * h * w),  # uint8 frames vs float16 latents
        "n_params": sum(p.numel() for p in model.parameters()),
    }
    checkpoint(step, {"metrics": metrics})  # no wall-clock figures: same params, same bytes
    metrics["train_seconds_this_run"] = round(time.perf_counter() - t_start, 1)
    live.end()
    return metrics
