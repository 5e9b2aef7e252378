"""Training throughput of the dynamics model next to this machine's matmul speed, in one run.

    python bench/bench_train.py                       # params.yaml sizes, this machine's device
    python bench/bench_train.py --set model.dim=512 --set model.depth=12 --set train.seq_len_short=64

Prints frames/s and batches/s of full training steps (shortcut-forcing loss incl. the bootstrap
teacher passes, then the training loop's own optimisation step: backward, clipped AdamW, schedule,
EMA) for short and long batches, the FLOPs of one step as counted by torch.utils.flop_counter
(matmuls and attention, forward + backward), and the achieved FLOP/s as a fraction of the FLOP/s
of a large square matmul measured just before (model FLOPs utilisation against what this machine
really delivers, not a datasheet figure).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import yaml
from torch.utils.flop_counter import FlopCounterMode

from pipeline.config import merge_files, parse_params, read_param_files
from pipeline.data.latent_windows import Batch
from pipeline.networks.dynamics import DynamicsTransformer, dynamics_config
from pipeline.runtime.device import autocast, pick_device
from pipeline.training.dynamics import global_plan, local_loss
from pipeline.training.optim import Optimization

ROOT = Path(__file__).resolve().parents[1]


def matmul_flops(device: torch.device, dtype: torch.dtype, n: int, seconds: float = 2.0) -> float:
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    best, end = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        sync(device)
        t = time.perf_counter()
        a @ b
        sync(device)
        best = max(best, 2 * n**3 / (time.perf_counter() - t))
    return best


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def load_overridden(sets: list[str]):
    raw = merge_files(read_param_files(ROOT / "params.yaml"))  # with settings.yaml, as the stages read them
    for item in sets:
        key, value = item.split("=", 1)
        *path, last = key.split(".")
        node = raw
        for part in path:
            node = node[part]
        node[last] = yaml.safe_load(value)
    return parse_params(raw)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--set", action="append", default=[], help="params override key=value (repeatable)")
    ap.add_argument("--steps", type=int, default=8, help="timed steps per batch kind")
    ap.add_argument("--warmup", type=int, default=2)
    args = ap.parse_args()

    params = load_overridden(args.set)
    tp, mp = params.train, params.model
    device = pick_device()
    side = params.extract.size // params.tokenizer.downsample
    config = dynamics_config(mp, (params.tokenizer.latent_channels, side, side), n_actions=18)
    torch.manual_seed(params.seed)
    model = DynamicsTransformer(config).to(device)
    opt = Optimization(model, tp)
    bf16 = device.type == "cuda" and tp.precision != "fp32" and torch.cuda.is_bf16_supported()
    peak = matmul_flops(device, torch.bfloat16 if bf16 else torch.float32, 8192 if device.type == "cuda" else 1024)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"device {device} ({'bf16' if bf16 else 'fp32'}), threads {torch.get_num_threads()}, "
          f"model {n_params / 1e6:.2f}M params, {config.tokens_per_frame} tokens/frame")
    print(f"measured matmul: {peak / 1e9:.1f} GFLOP/s")

    def train_step(batch, step):
        plan = global_plan(batch, params, step)
        with autocast(device, tp.precision):
            loss, _ = local_loss(model, batch, plan, tp.bootstrap_space, device)
        opt.step(loss, step)

    for kind, t, b in (("S", tp.seq_len_short, tp.batch_size_short), ("L", tp.seq_len_long, tp.batch_size_long)):
        gen = torch.Generator().manual_seed(0)
        batch = Batch(kind, torch.randn(b, t, config.latent_channels, side, side, generator=gen),
                      torch.randint(-1, 18, (b, t), generator=gen))
        for step in range(args.warmup):
            train_step(batch, step)
        with FlopCounterMode(display=False) as counter:
            train_step(batch, 0)  # step 0's plan: the same bootstrap share as every step
        flops = counter.get_total_flops()
        sync(device)
        t0 = time.perf_counter()
        for step in range(args.steps):
            train_step(batch, step)
        sync(device)
        dt = (time.perf_counter() - t0) / args.steps
        achieved = flops / dt
        print(f"{kind} batch {b}x{t}: {1 / dt:6.2f} batch/s  {b * t / dt:8.1f} frames/s  "
              f"{flops / 1e9:8.2f} GFLOP/step  {achieved / 1e9:8.1f} GFLOP/s = {achieved / peak:5.1%} of measured matmul")


if __name__ == "__main__":
    main()
