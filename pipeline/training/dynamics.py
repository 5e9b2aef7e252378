"""Training the dynamics model with shortcut forcing (stage `train`), read top to bottom by `train_dynamics`.

Every rank builds the same global batch and noise plan from (seed, step) and keeps its rows, so N
processes train what one would (docs/models.md#multi-gpu); rank 0 logs, validates and checkpoints.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from pipeline.config import Params
from pipeline.data.latent_windows import AlternatingBatches, Batch, LatentWindows, WindowError, latent_shape, window_starts
from pipeline.data.stores import store_identity
from pipeline.data.streaming import SplitIndex, loader, split_stats
from pipeline.diffusion.objective import (
    NoisePlan,
    add_noise,
    sample_plan,
    shortcut_forcing_loss,
)
from pipeline.networks.dynamics import KIND, DynamicsTransformer, config_dict, dynamics_config
from pipeline.networks.pose_memory import PoseStats, pose_stats
from pipeline.runtime.device import autocast
from pipeline.runtime.distributed import Dist, all_reduce_sum, init_distributed, shard
from pipeline.runtime.seeding import seed_everything, seeded_generator
from pipeline.training.optim import Optimization, check_finite
from pipeline.training.run import TrainingRun, run_fingerprint


# ---------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------
@dataclass
class TrainingData:
    """The latents a run trains and validates on, and how its batches are drawn."""

    train: LatentWindows
    val: LatentWindows
    batches: AlternatingBatches  # item s: this rank's rows of step s's global batch
    rows: dict[str, slice]  # this rank's rows of a short ("S"), long ("L") and gapped ("G") global batch
    latent_mean: float  # statistics of the train latents: the model's normalisation
    latent_std: float
    poses: PoseStats | None  # where the train split's agent goes; None: the data has no poses


def load_data(params: Params, latents: Path, d: Dist) -> TrainingData:
    """Train windows for the alternating batches, held-out videos for validation."""
    tp = params.train
    train = LatentWindows(SplitIndex.open(latents, "train", "latents"))
    if not len(train.index):
        raise WindowError(f"{latents}: no video with split 'train'")
    rows = {"S": shard(tp.batch_size_short, d, "train.batch_size_short"),
            "L": shard(tp.batch_size_long, d, "train.batch_size_long")}  # fmt: skip
    rows["G"] = rows["S"]  # a gapped batch has batch_size_short rows
    batches = AlternatingBatches(
        train, seq_len_short=tp.seq_len_short, seq_len_long=tp.seq_len_long,
        batch_size_short=tp.batch_size_short, batch_size_long=tp.batch_size_long,
        long_ratio=tp.long_ratio, stride=tp.stride, seed=params.seed, rows=rows,
        gapped_ratio=tp.gapped_ratio, gapped_span=tp.gapped_span,
    )  # fmt: skip
    tracks = (train.reader.read(vid, "poses") if has else None for vid, has in zip(train.index.ids, train.index.with_poses))
    return TrainingData(train, LatentWindows(SplitIndex.open(latents, "val", "latents")), batches, rows,
                        *split_stats(train.index, train.reader), pose_stats(tracks))


def dynamics_fingerprint(params: Params, latents_identity: str) -> str:
    """What a checkpoint must match to be resumed: model and train sections, seed, latents."""
    sections = {"seed": params.seed, "model": params.model.model_dump(), "train": params.train.model_dump()}
    return run_fingerprint(sections, latents_identity)


# ---------------------------------------------------------------------------------------------
# One step's randomness and loss
# ---------------------------------------------------------------------------------------------
def step_generator(seed: int, step: int) -> torch.Generator:
    """Noise of step s depends only on (seed, s): resume and DDP see the same plan."""
    return seeded_generator(seed, step, 2)


def global_plan(batch: Batch, params: Params, step: int) -> NoisePlan:
    tp = params.train
    return sample_plan(
        batch.global_shape,
        k_max=params.model.k_max,
        bootstrap_fraction=tp.bootstrap_fraction,
        single_frame_fraction=tp.single_frame_fraction,
        generator=step_generator(params.seed, step),
        context_fraction=tp.context_fraction,
        history_dropout=tp.history_dropout,
    )


def local_loss(model, batch: Batch, plan: NoisePlan, bootstrap_space: str, device):
    """Loss on this rank's rows (already selected: the batch's latents and times, as `plan`), on `device`."""
    actions = None if batch.actions is None else batch.actions.to(device)
    poses = None if batch.poses is None else batch.poses.to(device)
    times = None if batch.times is None else batch.times.to(device)
    return shortcut_forcing_loss(model, batch.latents.to(device), actions, plan.to(device), bootstrap_space, poses,
                                 times)


# ---------------------------------------------------------------------------------------------
# Validation: teacher-forced one-step prediction
# ---------------------------------------------------------------------------------------------
@torch.no_grad()
def one_step_psnr(model, videos: LatentWindows, *, length: int, taus, k_max: int, seed: int, device,
                  max_windows: int = 32, batch_size: int = 8) -> dict[str, float]:
    """Teacher-forced one-step validation: clean context, each window's last frame noised at tau; latent PSNR
    (data range of the clean windows, so normalisation does not matter) of the model's x0, of the noisy
    input and of persistence, each pooled over every window.

    The model sees ``batch_size`` windows at a time (the trainer passes its short batch's rows), so validation
    never holds more than a training step does, however many windows the split offers up to ``max_windows``."""
    length = max(2, min(length, int(videos.index.lengths.max())))
    counts = videos.count(length, length)
    picks = np.linspace(0, counts.sum() - 1, min(max_windows, counts.sum())).astype(int)
    groups = [window_starts(counts, picks[i : i + batch_size], length) for i in range(0, len(picks), batch_size)]

    def clean(group):  # (b, T, C, h, w) normalised latents, actions, poses of a group of windows
        latents, acts, poses = videos.stack(group, length)
        return (model.normalize(latents.to(device)), None if acts is None else acts.to(device),
                None if poses is None else poses.to(device))

    # The data range spans every window: one pass reading them, a second predicting (reads are cheap).
    lo, hi = math.inf, -math.inf
    for group in groups:
        x0 = clean(group)[0]
        lo, hi = min(lo, x0.min().item()), max(hi, x0.max().item())
    shape = (len(picks), *videos.index.frame_shape)
    eps_all = torch.randn(shape, generator=torch.Generator().manual_seed(seed)).to(device)  # last frames' noise
    sse: dict[str, float] = {}  # squared errors summed over every window, per metric

    def add(name: str, pred: torch.Tensor, target: torch.Tensor) -> None:
        sse[name] = sse.get(name, 0.0) + (pred.float() - target.float()).pow(2).sum(dtype=torch.float64).item()

    first = 0
    for group in groups:
        x0, acts, poses = clean(group)  # (b, T, C, h, w)
        eps = eps_all[first : first + len(group)]
        first += len(group)
        d = torch.full(x0.shape[:2], 1.0 / k_max, device=device)
        add("persistence_psnr", x0[:, -2], x0[:, -1])
        for tau in taus:
            tau_t = torch.zeros(x0.shape[:2], device=device)
            tau_t[:, -1] = tau
            z = x0.clone()
            z[:, -1] = add_noise(x0[:, -1], eps, tau_t[:, -1])
            add(f"psnr_tau_{tau:g}", model(z, tau_t, d, acts, poses, memory=x0)[:, -1], x0[:, -1])
            add(f"input_psnr_tau_{tau:g}", z[:, -1], x0[:, -1])
    values = math.prod(shape)
    return {name: 10 * math.log10((hi - lo) ** 2 / max(total / values, 1e-12)) for name, total in sse.items()}


# ---------------------------------------------------------------------------------------------
# Bookkeeping and logging
# ---------------------------------------------------------------------------------------------
@dataclass
class History:
    """What the metrics need about the steps done so far (saved in checkpoints: survives resume)."""

    best_loss: float = math.inf
    final_loss: float = math.nan
    tau_min: float = math.inf
    tau_max: float = -math.inf
    short_batches: int = 0
    long_batches: int = 0
    gapped_batches: int = 0

    def add(self, batch: Batch, plan: NoisePlan) -> None:
        self.short_batches += batch.kind == "S"
        self.long_batches += batch.kind == "L"
        self.gapped_batches += batch.kind == "G"
        self.tau_min = min(self.tau_min, float(plan.tau.min()))
        self.tau_max = max(self.tau_max, float(plan.tau.max()))


@dataclass
class Throughput:
    """This process's training speed; kept out of checkpoints so that the same params give identical ones."""

    seconds: float = 0.0
    batches: int = 0
    frames: int = 0
    waited: float = 0.0  # seconds the loop waited for the loader

    @property
    def wait_share(self) -> float:
        return self.waited / max(self.waited + self.seconds, 1e-9)

    def add(self, seconds: float, batch: Batch) -> None:
        self.seconds += seconds
        self.batches += 1
        self.frames += batch.global_shape[0] * batch.global_shape[1]


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


def log_interval(run: TrainingRun, done: int, interval: Interval, history: History, batch: Batch, lr: float) -> None:
    """Log line and DVCLive points since the last one (a collective: per-d losses are summed over ranks)."""
    per_d = interval.per_d(run.dist)
    avg = float(interval.sums[0] / interval.sums[1])
    rate = interval.steps / (time.perf_counter() - interval.t0)
    history.final_loss = avg
    history.best_loss = min(history.best_loss, avg)
    if run.main:
        t = batch.latents.shape[1]
        tqdm.write(f"step {done}/{run.steps} {batch.kind} T={t} loss {avg:.4f} "
                   f"Tau: [{interval.tau_min:.2f}-{interval.tau_max:.2f}] {rate:.1f} batch/s")
        values = {"loss": avg, "batch_T": t, "tau_min": interval.tau_min, "tau_max": interval.tau_max,
                  "batches_per_s": rate, "lr": lr, **per_d}
        run.log(done, {f"train/{k}": v for k, v in values.items()})
    interval.reset()


# ---------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------
def train_dynamics(params: Params, *, latents: Path, out_dir: Path, metrics_path: Path, live_dir: Path) -> dict:
    """Train (or continue training) the dynamics model; writes and returns metrics/train.json."""
    tp, mp = params.train, params.model
    latents = Path(latents)
    run = TrainingRun(KIND, loop=tp, fingerprint=dynamics_fingerprint(params, store_identity(latents)),
                      out_dir=out_dir, live_dir=live_dir, metrics_path=metrics_path, dist=init_distributed())
    seed_everything(params.seed)
    data = load_data(params, latents, run.dist)

    # Model and optimisation; resume when the fingerprint matches.
    config = dynamics_config(mp, latent_shape(latents), n_actions=data.train.index.n_actions,
                             latent_mean=data.latent_mean, latent_std=data.latent_std, poses=data.poses)
    model = DynamicsTransformer(config).to(run.device)
    opt = Optimization(model, tp)
    start, extra = run.resume(model, opt)
    history = History(**extra.get("history", {}))
    net = torch.nn.parallel.DistributedDataParallel(model) if run.dist.world > 1 else model
    n_params = sum(p.numel() for p in model.parameters())
    run.open_live()
    if run.main:
        print(f"dynamics: {n_params / 1e6:.2f}M params, latents {config.latent_channels}x{config.latent_height}x"
              f"{config.latent_width} (mean {data.latent_mean:.3f}, std {data.latent_std:.3f}: normalised), "
              f"{len(data.train.index)} train / {len(data.val.index)} val videos, actions: {data.train.index.n_actions}, "
              f"pose conditioning: {'on' if config.pose_conditioning else 'off'}, "
              f"device {run.device} x{run.dist.world}")

    interval, speed, val_metrics = Interval(mp.k_max), Throughput(), {}
    model.train()
    batches = iter(loader(data.batches, start, tp.steps, workers=tp.loader_workers, device=run.device))
    for step in tqdm(range(start, tp.steps), initial=start, total=tp.steps, desc="train", disable=not run.main):
        # 1. This rank's rows of the step's batch (read ahead by the loader), the global batch's noise.
        t_wait = time.perf_counter()
        batch = next(batches)
        speed.waited += time.perf_counter() - t_wait
        batch = replace(batch, latents=model.normalize(batch.latents.to(run.device, non_blocking=True)))
        plan = global_plan(batch, params, step)
        mine = data.rows[batch.kind]
        t_step = time.perf_counter()

        # 2. Loss, gradient (averaged over ranks by DDP), clipped AdamW step, EMA.
        with autocast(run.device, tp.precision):
            loss, err = local_loss(net, batch, plan.rows(mine), tp.bootstrap_space, run.device)
        mean_loss = all_reduce_sum(loss.detach().float().reshape(1).clone(), run.dist) / run.dist.world
        check_finite(mean_loss, step)  # every rank raises together; the last checkpoint stays
        opt.step(loss, step)

        # 3. Bookkeeping, logging, validation (EMA weights), checkpoints.
        speed.add(time.perf_counter() - t_step, batch)
        history.add(batch, plan)
        interval.add(float(mean_loss), err, plan.rows(mine))
        done = step + 1
        if run.due(done, tp.log_every):
            log_interval(run, done, interval, history, batch, opt.lr)
        if run.main and len(data.val.index) and run.due(done, tp.val_every):
            val_metrics = one_step_psnr(opt.ema.module, data.val, length=tp.seq_len_short, taus=tp.val_taus,
                                        k_max=mp.k_max, seed=params.seed, device=run.device,
                                        batch_size=len(range(tp.batch_size_short)[data.rows["S"]]))
            tqdm.write("val " + " ".join(f"{k} {v:.2f}" for k, v in val_metrics.items()))
            run.log(done, {f"val/{k}": v for k, v in val_metrics.items()})
        if done % tp.checkpoint_every == 0 and done < tp.steps:
            run.save(done, config=config_dict(config), model=model, opt=opt, extra={"history": asdict(history)})

    run.save(tp.steps, config=config_dict(config), model=model, opt=opt, extra={"history": asdict(history)})
    return run.finish({
        "steps": tp.steps, "final_loss": history.final_loss, "best_loss": history.best_loss,
        "tau_min": history.tau_min, "tau_max": history.tau_max,
        "short_batches": history.short_batches, "long_batches": history.long_batches,
        "gapped_batches": history.gapped_batches,
        "batches_per_s": speed.batches / max(speed.seconds, 1e-9), "frames_per_s": speed.frames / max(speed.seconds, 1e-9),
        "train_seconds_this_run": round(speed.seconds, 1), "loader_wait_share": speed.wait_share,
        "params": n_params, "processes": run.dist.world, "latent_mean": data.latent_mean, "latent_std": data.latent_std,
        "resumed_from": run.resumed_from, "val": val_metrics,
    })  # fmt: skip
