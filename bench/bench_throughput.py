"""Benchmark-stage throughput, batched vs one clip at a time, side by side in one run.

For each preset, ``run_benchmark`` (the stage's work: rollouts of every cell, decoding, PSNR /
SSIM / LPIPS, references) runs the same clips at ``batch_size`` 1 and at ``--batch``, and prints
both times, generated frames/s (rollout loop only, and the whole stage work) and their ratio,
with the largest metric difference between the two runs (float rounding only). Presets:

- ``default``: params.yaml's model. Trained checkpoints (models/) and the test clips of
  data/ when they exist, else random weights of that size on synthetic clips;
- ``gpu``: the GPU preset of docs/models.md (model dim 512, depth 12, heads 8, kv_heads 2,
  temporal_every 4, logit_softcap 0, k_max 64; 256 px, transformer tokenizer), random weights,
  synthetic clips (on CPU use a small workload: ``--gpu-workload``);
- ``far``: FAR_B_UCF101 (real size, random weights, 64 px, its DCAE) at ``--far-steps`` Euler steps.

Rollout speed does not depend on the weights' values, so random weights measure it honestly.
On CPU every run uses one thread (``benchmark.cpu_threads``) unless ``--threads``.

    python bench/bench_throughput.py [--presets default gpu far] [--device cuda] [--clips 16 --batch 16]
        [--workload 36 36] [--policies full_history recent_window] [--modes kv] [--budget N]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from pipeline import paths
from pipeline.benchmark.clips import Clip, select_clips
from pipeline.benchmark.run import METRIC_NAMES, Scorer, run_benchmark
from pipeline.benchmark.summary import summarize
from pipeline.config import BenchmarkParams, load_params
from pipeline.diffusion.sampler import ShortcutEulerSampler
from pipeline.hosts.pipeline_host import PipelineHost
from pipeline.rollout.loop import finish_queued_work

GPU_MODEL = dict(dim=512, depth=12, heads=8, kv_heads=2, temporal_every=4, logit_softcap=0.0, k_max=64)
GPU_TOKENIZER = dict(arch="transformer", mask_max=0.9)
GPU_SIZE = 256


def synthetic_clips(n: int, length: int, size: int, n_actions: int, seed: int = 0) -> list[Clip]:
    """Smoothly moving colour blobs (pixels in [0, 1]) with random actions; the host encodes them."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    clips = []
    for i in range(n):
        centre, velocity, colour = (torch.rand(2, generator=g), 0.02 * torch.randn(2, generator=g),
                                    torch.rand(3, 1, 1, generator=g))
        frames = []
        for t in range(length):
            cy, cx = (centre + t * velocity).remainder(1.0)
            blob = torch.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 0.02)
            frames.append((0.2 + 0.3 * xx + colour * blob).clamp(0, 1).expand(3, size, size))
        actions = np.asarray(torch.randint(0, n_actions, (length,), generator=g)) if n_actions else None
        clips.append(Clip(f"synthetic{i}", 0, torch.stack(frames), None, actions))
    return clips


def pipeline_host(params, device, preset: str, sampling_steps: int):
    """(host, clip size, n_actions, what the models are)."""
    trained = (paths.TOKENIZER / "config.json").is_file() and (paths.DYNAMICS / "config.json").is_file()
    if preset == "default" and trained:
        host = PipelineHost.load(paths.TOKENIZER, paths.DYNAMICS, sampling_steps, params.benchmark.tau_ctx, device,
                                 copy_gate_shift=params.benchmark.copy_gate_shift)
        return host, params.extract.size, host.dynamics.config.n_actions, "trained checkpoints"
    from bench_rollout import random_models  # the sibling script: `python bench/<script>.py` puts bench/ first on sys.path

    if preset == "gpu":
        params = params.model_copy(update={
            "model": params.model.model_copy(update=GPU_MODEL),
            "tokenizer": params.tokenizer.model_copy(update=GPU_TOKENIZER),
            "extract": params.extract.model_copy(update={"size": GPU_SIZE}),
        })
    torch.manual_seed(params.seed)
    tok, dyn = (m.to(device) for m in random_models(params, n_actions=5))
    host = PipelineHost(tok, dyn, ShortcutEulerSampler(sampling_steps, params.benchmark.tau_ctx), device,
                        copy_gate_shift=params.benchmark.copy_gate_shift)
    return host, params.extract.size, 5, "random weights"


def far_host(device, steps: int):
    from diffusers import AutoencoderDC

    from pipeline.hosts.far_host import FarHost
    from pipeline.hosts.far_weights import VARIANTS, weights_dtype
    from pipeline.networks.far import FAR

    variant = VARIANTS["FAR_B_UCF101"]
    torch.manual_seed(0)
    model = FAR(variant.transformer).to(device, weights_dtype(device)).eval()
    vae = AutoencoderDC(**variant.dcae_config).to(device, weights_dtype(device)).eval()
    return FarHost(model, vae, sampling_steps=steps, resolution=variant.resolution), variant.resolution


def timed_run(host, bench, clips, batch: int, scorer, device) -> tuple[float, float, dict]:
    """(stage seconds, rollout-loop seconds, summary) of one run_benchmark."""
    finish_queued_work(torch.device(device))
    t0 = time.perf_counter()
    run = run_benchmark(host, bench, clips, seed=0, scorer=scorer, progress=False, batch_size=batch)
    finish_queued_work(torch.device(device))
    return time.perf_counter() - t0, sum(r.seconds for r in run.records if not r.reused), summarize(run)


def compare(preset: str, host, bench, clips, batch: int, scorer, device, what: str) -> None:
    n_frames = sum(len(c) for c in clips.values()) * len(bench.policies) * len(bench.modes) * len(bench.budgets) \
        * bench.workloads[next(iter(clips))].predict
    timed_run(host, bench, {w: c[:1] for w, c in clips.items()}, 1, scorer, device)  # warm-up: kernels, allocations
    one, one_loop, s1 = timed_run(host, bench, clips, 1, scorer, device)
    many, many_loop, sb = timed_run(host, bench, clips, batch, scorer, device)
    diff = max(abs(sb[k][m] - s1[k][m]) for k in s1 for m in METRIC_NAMES)
    w = bench.workloads[next(iter(clips))]
    print(f"\n[{preset}] {what}; {sum(map(len, clips.values()))} clips, workload {w.context} -> {w.predict}, "
          f"policies {bench.policies}, modes {bench.modes}, budgets {bench.budgets}, K = {bench.sampling_steps}")
    print(f"  batch  1: stage {one:8.2f} s ({n_frames / one:7.2f} frames/s), rollout loop {n_frames / one_loop:7.2f} frames/s")
    print(f"  batch {batch:2d}: stage {many:8.2f} s ({n_frames / many:7.2f} frames/s), rollout loop "
          f"{n_frames / many_loop:7.2f} frames/s")
    print(f"  speed-up x{one / many:.2f} (stage), x{one_loop / many_loop:.2f} (rollout loop); "
          f"largest PSNR/SSIM/LPIPS difference {diff:.2e}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", nargs="+", default=["default", "gpu", "far"], choices=["default", "gpu", "far"])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=None, help="CPU threads (default benchmark.cpu_threads)")
    ap.add_argument("--clips", type=int, default=16)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--workload", type=int, nargs=2, default=[36, 36], metavar=("CONTEXT", "PREDICT"))
    ap.add_argument("--gpu-workload", type=int, nargs=2, default=None, metavar=("CONTEXT", "PREDICT"),
                    help="the gpu preset's workload (default --workload; on CPU e.g. 4 4)")
    ap.add_argument("--gpu-clips", type=int, default=None, help="the gpu preset's clips (default --clips)")
    ap.add_argument("--far-workload", type=int, nargs=2, default=None, metavar=("CONTEXT", "PREDICT"))
    ap.add_argument("--far-clips", type=int, default=None)
    ap.add_argument("--far-steps", type=int, default=20, help="FAR Euler steps per frame (the published 20)")
    ap.add_argument("--policies", nargs="+", default=["full_history", "recent_window"])
    ap.add_argument("--modes", nargs="+", default=["kv"])
    ap.add_argument("--budget", type=int, default=None, help="frame budget (default: unlimited)")
    args = ap.parse_args()
    torch.set_grad_enabled(False)
    params = load_params()
    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(args.threads or params.benchmark.cpu_threads or torch.get_num_threads())
    print(f"device {device}, {torch.get_num_threads()} CPU threads")
    scorer = Scorer(device)

    def bench_for(context: int, predict: int, clips: int, steps: int) -> BenchmarkParams:
        return params.benchmark.model_copy(update={
            "policies": args.policies, "modes": args.modes, "budgets": {"budget": args.budget},
            "workloads": {"w": params.benchmark.workloads["long"].model_copy(update={"context": context, "predict": predict})},
            "n_clips": clips, "seeds": [0], "sampling_steps": steps, "media_clips": 0})

    for preset in args.presets:
        context, predict = args.workload
        n_clips = args.clips
        if preset == "gpu":
            context, predict = args.gpu_workload or (context, predict)
            n_clips = args.gpu_clips or n_clips
        if preset == "far":
            context, predict = args.far_workload or (context, predict)
            n_clips = args.far_clips or n_clips
            host, size = far_host(device, args.far_steps)
            bench = bench_for(context, predict, n_clips, params.benchmark.sampling_steps)
            clips = {"w": synthetic_clips(n_clips, context + predict, size, 0)}
            compare(preset, host, bench, clips, args.batch, scorer, device,
                    f"FAR_B_UCF101, random weights, {args.far_steps} Euler steps")
            continue
        steps = params.benchmark.sampling_steps
        host, size, n_actions, what = pipeline_host(params, device, preset, steps)
        bench = bench_for(context, predict, n_clips, steps)
        data = Path(paths.FRAMES).exists() and Path(paths.LATENTS).exists() and what == "trained checkpoints"
        if data:
            clips = {"w": select_clips(paths.FRAMES, paths.LATENTS, context, predict, n_clips, params.seed)}
        else:
            clips = {"w": synthetic_clips(n_clips, context + predict, size, n_actions)}
        n_params = sum(p.numel() for p in host.dynamics.parameters()) / 1e6
        compare(preset, host, bench, clips, args.batch, scorer, device,
                f"dynamics {n_params:.1f} M params ({what}), {size} px, {'test clips' if data else 'synthetic clips'}")


if __name__ == "__main__":
    t0 = time.perf_counter()
    main()
    print(f"\ntotal {time.perf_counter() - t0:.1f} s")
