"""Training the dynamics model with shortcut forcing, read top to bottom by `train_dynamics`.

One process or many (torchrun / DistributedDataParallel): every rank builds the same *global*
batch and noise plan of a step from (seed, step) and keeps its rows, so N ranks compute the
gradient of the same global batch as one process would, and the batches never depend on the
number of ranks. Rank 0 logs (console, DVCLive), validates and writes checkpoints.

Resume: models/dynamics persists across runs. A run continues from it only if its recorded
fingerprint (model + train sections + seed + latents store identity) equals the current one
and it has not finished; otherwise training starts fresh and dvclive/train is cleared.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

from pipeline.atomic import remove_stale_tmp, write_json
from pipeline.config import Params
from pipeline.data.latent_windows import (
    AlternatingBatches,
    Batch,
    LatentVideos,
    WindowError,
    latent_shape,
)
from pipeline.data.stores import store_identity
from pipeline.diffusion.objective import (
    NoisePlan,
    add_noise,
    sample_plan,
    shortcut_forcing_loss,
)
from pipeline.networks.dynamics import (
    KIND,
    DynamicsConfig,
    DynamicsTransformer,
    config_dict,
)
from pipeline.training.checkpoint import (
    CheckpointError,
    load_training_state,
    read_config,
    save_checkpoint,
)
from pipeline.training.common import (
    EMA,
    autocast,
    build_optimizer,
    check_finite,
    open_live,
    seed_everything,
    warmup_cosine,
)


# ---------------------------------------------------------------------------------------------
# Processes
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed() -> Dist:
    """Join the process group when launched by torchrun (RANK/WORLD_SIZE set), else one process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Dist()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local)
    return Dist(dist.get_rank(), dist.get_world_size(), local)


def shard(n_rows: int, d: Dist, what: str) -> slice:
    if n_rows % d.world:
        raise ValueError(f"{what}={n_rows} is not divisible by the {d.world} DDP processes")
    per = n_rows // d.world
    return slice(d.rank * per, (d.rank + 1) * per)


def all_reduce_sum(t: torch.Tensor, d: Dist) -> torch.Tensor:
    if d.world > 1:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


# ---------------------------------------------------------------------------------------------
# One step's randomness and loss
# ---------------------------------------------------------------------------------------------
def step_generator(seed: int, step: int) -> torch.Generator:
    """Noise of step s depends only on (seed, s): resume and DDP see the same plan."""
    return torch.Generator().manual_seed(int(np.random.SeedSequence([seed, step, 2]).generate_state(1)[0]))


def latent_stats(videos: LatentVideos) -> tuple[float, float]:
    """Mean and std of every latent value of the (train) videos, for the model's normalisation."""
    n = sum(x.size for x in videos.latents)
    total = sum(x.astype(np.float64).sum() for x in videos.latents)
    mean = total / n
    var = sum(((x.astype(np.float64) - mean) ** 2).sum() for x in videos.latents) / n
    return float(mean), float(math.sqrt(var))


def global_plan(batch: Batch, params: Params, step: int) -> NoisePlan:
    tp = params.train
    return sample_plan(
        tuple(batch.latents.shape),
        k_max=params.model.k_max,
        bootstrap_fraction=tp.bootstrap_fraction,
        single_frame_fraction=tp.single_frame_fraction,
        generator=step_generator(params.seed, step),
    )


def local_loss(model, batch: Batch, plan: NoisePlan, bootstrap_space: str, device):
    """Loss on this rank's rows (already selected), on `device`."""
    actions = None if batch.actions is None else batch.actions.to(device)
    return shortcut_forcing_loss(model, batch.latents.to(device), actions, plan.to(device), bootstrap_space)


# ---------------------------------------------------------------------------------------------
# Resume
# ---------------------------------------------------------------------------------------------
def run_fingerprint(params: Params, latents: Path) -> str:
    blob = {
        "seed": params.seed,
        "model": params.model.model_dump(),
        "train": params.train.model_dump(),
        "latents": store_identity(latents),
    }
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()


@dataclass
class History:
    """What the metrics need about steps already done (survives resume)."""

    best_loss: float = math.inf
    final_loss: float = math.nan
    tau_min: float = math.inf
    tau_max: float = -math.inf
    short_batches: int = 0
    long_batches: int = 0
    resumed_from: list[int] = field(default_factory=list)


def try_resume(out_dir: Path, fingerprint: str, steps: int, model, ema, optimizer, scheduler) -> tuple[int, History]:
    try:
        header = read_config(out_dir, KIND)
    except CheckpointError:
        return 0, History()
    extra = header.get("extra", {})
    if extra.get("fingerprint") != fingerprint or header.get("step", 0) >= steps:
        return 0, History()
    step, extra = load_training_state(out_dir, kind=KIND, model=model, ema=ema, optimizer=optimizer, scheduler=scheduler)
    history = History(**extra["history"])
    history.resumed_from.append(step)
    return step, history


# ---------------------------------------------------------------------------------------------
# Validation: teacher-forced one-step prediction
# ---------------------------------------------------------------------------------------------
def psnr(pred: torch.Tensor, target: torch.Tensor, data_range: float) -> float:
    mse = (pred.float() - target.float()).pow(2).mean().item()
    return 10 * math.log10(data_range**2 / max(mse, 1e-12))


@torch.no_grad()
def one_step_psnr(model, videos: LatentVideos, *, length: int, taus, k_max: int, seed: int, device,
                  max_windows: int = 32) -> dict[str, float]:
    """Clean context frames, the last frame of each window noised at tau; PSNR (latent space,
    data range = max - min of the clean windows) of the model's one-call x0 prediction, next to
    the PSNR of the noisy input itself and of repeating the previous frame (persistence).
    Computed in the model's normalised space: PSNR with this data range is invariant to it."""
    longest = max(len(x) for x in videos.latents)
    length = max(2, min(length, longest))
    windows = videos.windows(length, length, "train.seq_len_short")
    windows = windows[np.linspace(0, len(windows) - 1, min(max_windows, len(windows))).astype(int)]
    frames, actions = zip(*(videos.window(int(v), int(s), length) for v, s in windows))
    x0 = model.normalize(torch.from_numpy(np.stack(frames).astype(np.float32)).to(device))
    acts = torch.from_numpy(np.stack(actions)).to(device) if videos.has_actions else None
    data_range = (x0.max() - x0.min()).item()
    eps = torch.randn(x0[:, -1].shape, generator=torch.Generator().manual_seed(seed)).to(device)
    d = torch.full(x0.shape[:2], 1.0 / k_max, device=device)
    out = {"persistence_psnr": psnr(x0[:, -2], x0[:, -1], data_range)}
    for tau in taus:
        tau_t = torch.zeros(x0.shape[:2], device=device)
        tau_t[:, -1] = tau
        z = x0.clone()
        z[:, -1] = add_noise(x0[:, -1], eps, tau_t[:, -1])
        pred = model(z, tau_t, d, acts)[:, -1]
        out[f"psnr_tau_{tau:g}"] = psnr(pred, x0[:, -1], data_range)
        out[f"input_psnr_tau_{tau:g}"] = psnr(z[:, -1], x0[:, -1], data_range)
    return out


# ---------------------------------------------------------------------------------------------
# Logging
# ---------------------------------------------------------------------------------------------
class Interval:
    """Loss, per-d losses, tau range and timing between two log lines (summed over ranks)."""

    def __init__(self, k_max: int):
        self.levels = int(math.log2(k_max)) + 1  # d = 1, 1/2, ..., 1/k_max
        self.reset()

    def reset(self):
        self.sums = torch.zeros(2 + 2 * self.levels, dtype=torch.float64)  # loss, steps, per-d err/count
        self.tau_min, self.tau_max = math.inf, -math.inf
        self.t0 = time.perf_counter()
        self.steps = 0

    def add(self, loss: float, err: torch.Tensor, plan: NoisePlan):
        self.sums[0] += loss
        self.sums[1] += 1
        level = torch.round(-torch.log2(plan.d.cpu())).long().flatten()
        self.sums[2 : 2 + self.levels] += torch.bincount(level, err.cpu().double().flatten(), self.levels)
        self.sums[2 + self.levels :] += torch.bincount(level, minlength=self.levels).double()
        self.tau_min = min(self.tau_min, float(plan.tau.min()))
        self.tau_max = max(self.tau_max, float(plan.tau.max()))
        self.steps += 1

    def per_d(self, d: Dist) -> dict[str, float]:
        sums = all_reduce_sum(self.sums[2:].clone(), d)
        err, count = sums[: self.levels], sums[self.levels :]
        return {f"loss_d/1_{2**j}": float(err[j] / count[j]) for j in range(self.levels) if count[j] > 0}


# ---------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------
def train_dynamics(params: Params, *, latents: Path, out_dir: Path, metrics_path: Path, live_dir: Path) -> dict:
    tp, mp = params.train, params.model
    ddp = init_distributed()
    device = torch.device(f"cuda:{ddp.local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    seed_everything(params.seed)
    latents, out_dir = Path(latents), Path(out_dir)
    if ddp.main and out_dir.parent.is_dir():  # leftovers of a run killed while saving (only ours)
        remove_stale_tmp(out_dir.parent, out_dir.name)

    # Data: train windows for the alternating batches, held-out videos for validation.
    train_videos = LatentVideos.load(latents, "train")
    if not len(train_videos):
        raise WindowError(f"{latents}: no video with split 'train'")
    val_videos = LatentVideos.load(latents, "val")
    batches = AlternatingBatches(
        train_videos, seq_len_short=tp.seq_len_short, seq_len_long=tp.seq_len_long,
        batch_size_short=tp.batch_size_short, batch_size_long=tp.batch_size_long,
        long_ratio=tp.long_ratio, stride=tp.stride, seed=params.seed,
    )
    rows = {"S": shard(tp.batch_size_short, ddp, "train.batch_size_short"),
            "L": shard(tp.batch_size_long, ddp, "train.batch_size_long")}
    latent_mean, latent_std = latent_stats(train_videos)

    # Model, EMA, optimizer; resume when the fingerprint matches.
    c, h, w = latent_shape(latents)
    config = DynamicsConfig(c, h, w, n_actions=train_videos.n_actions, latent_mean=latent_mean,
                            latent_std=latent_std, **mp.model_dump())
    model = DynamicsTransformer(config).to(device)
    ema = EMA(model, tp.ema_decay)
    optimizer = build_optimizer(model, tp.lr, tp.weight_decay)
    scheduler = warmup_cosine(optimizer, tp.warmup_steps, tp.steps)
    fingerprint = run_fingerprint(params, latents)
    start, history = try_resume(out_dir, fingerprint, tp.steps, model, ema, optimizer, scheduler)
    net = torch.nn.parallel.DistributedDataParallel(model) if ddp.world > 1 else model
    n_params = sum(p.numel() for p in model.parameters())

    live = open_live(live_dir, start or None) if ddp.main else None
    if ddp.main:
        print(f"dynamics: {n_params / 1e6:.2f}M params, latents {c}x{h}x{w} (mean {latent_mean:.3f}, "
              f"std {latent_std:.3f}: normalised), "
              f"{len(train_videos)} train / {len(val_videos)} val videos, actions: {train_videos.n_actions}, "
              f"device {device} x{ddp.world}" + (f", resuming at step {start}" if start else ""))

    def save(step: int) -> None:
        if ddp.main:
            save_checkpoint(out_dir, kind=KIND, config=config_dict(config), model=model, ema=ema.module,
                            optimizer=optimizer, scheduler=scheduler, step=step,
                            extra={"fingerprint": fingerprint, "history": asdict(history)})
        if ddp.world > 1:
            dist.barrier()

    def validate() -> dict[str, float]:
        if not len(val_videos):
            return {}
        return one_step_psnr(ema.module, val_videos, length=tp.seq_len_short, taus=tp.val_taus,
                             k_max=mp.k_max, seed=params.seed, device=device)

    interval = Interval(mp.k_max)
    progress = tqdm(range(start, tp.steps), initial=start, total=tp.steps, desc="train", disable=not ddp.main)
    val_metrics: dict[str, float] = {}
    # Throughput of this run only: wall-clock figures stay out of the checkpoint, so that the
    # same params give byte-identical checkpoints (and DVC does not rerun what follows).
    run_seconds, run_batches, run_frames = 0.0, 0, 0
    model.train()
    for step in progress:
        # 1. This step's global batch and noise, and this rank's rows of them.
        batch = batches.batch(step)
        batch = replace(batch, latents=model.normalize(batch.latents))
        plan = global_plan(batch, params, step)
        mine = rows[batch.kind]
        t_step = time.perf_counter()

        # 2. Loss, gradient (averaged over ranks by DDP), clipped AdamW step, EMA.
        with autocast(device, tp.precision):
            loss, err = local_loss(net, batch.rows(mine), plan.rows(mine), tp.bootstrap_space, device)
        mean_loss = all_reduce_sum(loss.detach().float().reshape(1).clone(), ddp) / ddp.world
        check_finite(mean_loss, step)  # every rank raises together; the last checkpoint stays
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), tp.grad_clip)
        optimizer.step()
        scheduler.step()
        ema.update(model)

        # 3. Bookkeeping and logging.
        run_seconds += time.perf_counter() - t_step
        run_batches += 1
        run_frames += batch.latents.shape[0] * batch.latents.shape[1]
        history.short_batches += batch.kind == "S"
        history.long_batches += batch.kind == "L"
        history.tau_min = min(history.tau_min, float(plan.tau.min()))
        history.tau_max = max(history.tau_max, float(plan.tau.max()))
        interval.add(float(mean_loss), err, plan.rows(mine))
        done = step + 1
        if done % tp.log_every == 0 or done == tp.steps:
            per_d = interval.per_d(ddp)
            avg = float(interval.sums[0] / interval.sums[1])
            rate = interval.steps / (time.perf_counter() - interval.t0)
            history.final_loss = avg
            history.best_loss = min(history.best_loss, avg)
            if ddp.main:
                t = batch.latents.shape[1]
                tqdm.write(f"step {done}/{tp.steps} {batch.kind} T={t} loss {avg:.4f} "
                           f"Tau: [{interval.tau_min:.2f}-{interval.tau_max:.2f}] {rate:.1f} batch/s")
                live.step = done
                for key, value in {"loss": avg, "batch_T": t, "tau_min": interval.tau_min,
                                   "tau_max": interval.tau_max, "batches_per_s": rate,
                                   "lr": scheduler.get_last_lr()[0], **per_d}.items():
                    live.log_metric(f"train/{key}", value)
                live.next_step()
            interval.reset()
        if ddp.main and (done % tp.val_every == 0 or done == tp.steps):
            val_metrics = validate()
            if val_metrics:
                tqdm.write("val " + " ".join(f"{k} {v:.2f}" for k, v in val_metrics.items()))
                live.step = done
                for key, value in val_metrics.items():
                    live.log_metric(f"val/{key}", value)
                live.next_step()
        if done % tp.checkpoint_every == 0 or done == tp.steps:
            save(done)

    if not ddp.main:
        return {}
    metrics = {
        "steps": tp.steps,
        "final_loss": history.final_loss,
        "best_loss": history.best_loss,
        "tau_min": history.tau_min,
        "tau_max": history.tau_max,
        "short_batches": history.short_batches,
        "long_batches": history.long_batches,
        "batches_per_s": run_batches / max(run_seconds, 1e-9),
        "frames_per_s": run_frames / max(run_seconds, 1e-9),
        "params": n_params,
        "processes": ddp.world,
        "latent_mean": latent_mean,
        "latent_std": latent_std,
        "resumed_from": history.resumed_from,
        "val": val_metrics,
    }
    write_json(metrics_path, metrics)
    live.end()
    return metrics
