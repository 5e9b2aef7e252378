"""K shortcut steps per frame, side by side in one run: speed and quality of the same rollouts.

DreamerV4 claims that a shortcut-forcing model sampled with K = 4 steps matches K = 64 in quality
at 16x fewer network calls. This runs the benchmark's rollouts (full_history, every frame kept,
kv mode, the test clips of one workload, the same noise) with the trained checkpoints in models/
at each K, and prints per K: generated frames/s of the rollout loop, PSNR / SSIM / LPIPS against
the ground truth, and the paired PSNR difference to the finest K with its 95% interval.

K runs up to the model's ``k_max`` (a K finer than the finest step it was trained for is not a
shortcut step it knows). The default trains k_max = 16; the DreamerV4 comparison needs a
k_max = 64 model (the GPU preset of docs/models.md: ``dvc exp run -S model.k_max=64``).

    python bench/bench_k_sweep.py [--ks 1 2 4 16 64] [--workload long] [--clips 16] [--batch 16]
"""

from __future__ import annotations

import argparse
import time

import torch
from bench_rollout import make_host  # the sibling script: `python bench/<script>.py` puts bench/ first on sys.path

from pipeline import paths
from pipeline.benchmark.clips import workload_clips
from pipeline.benchmark.run import Scorer, run_benchmark
from pipeline.benchmark.stats import paired_difference
from pipeline.benchmark.summary import rollout_table, summarize
from pipeline.config import load_params
from pipeline.hosts.build import benchmark_device
from pipeline.hosts.pipeline_host import PipelineHost
from pipeline.rollout.loop import finish_queued_work


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ks", type=int, nargs="+", default=[1, 2, 4, 16, 64])
    ap.add_argument("--workload", default="long", help="a name of benchmark.workloads")
    ap.add_argument("--clips", type=int, default=None, help="default benchmark.n_clips")
    ap.add_argument("--batch", type=int, default=None, help="default benchmark.batch_size")
    args = ap.parse_args()

    torch.set_grad_enabled(False)
    params = load_params()
    bench = params.benchmark.model_copy(update={
        "policies": ["full_history"], "modes": ["kv"], "budgets": {"full": None},
        "workloads": {args.workload: params.benchmark.workloads[args.workload]},
        "n_clips": args.clips or params.benchmark.n_clips, "seeds": params.benchmark.seeds[:1], "media_clips": 0})
    device = benchmark_device(params)
    params = params.model_copy(update={"benchmark": bench})
    clips = workload_clips(params)
    scorer = Scorer(device)
    trained = PipelineHost.load(paths.TOKENIZER, paths.DYNAMICS, 1, bench.tau_ctx, device)
    models = (trained.tokenizer, trained.dynamics)
    k_max = trained.dynamics.config.k_max
    ks = [k for k in args.ks if k <= k_max]
    if skipped := [k for k in args.ks if k > k_max]:
        print(f"skipping K = {skipped}: the model was trained down to steps of 1/{k_max}")
    w = bench.workloads[args.workload]
    print(f"{len(clips[args.workload])} clips of {args.workload} ({w.context} -> {w.predict}), full_history, kv, "
          f"batch {args.batch or bench.batch_size}, k_max {k_max}, device {device}, {torch.get_num_threads()} threads")

    results = {}
    for k in ks:
        finish_queued_work(device)
        run = run_benchmark(make_host(params, k, device, models), bench, clips, seed=params.seed, scorer=scorer,
                            progress=False, batch_size=args.batch)
        finish_queued_work(device)
        loop_seconds = sum(r.seconds for r in run.records)
        n_frames = sum(r.n_predict for r in run.records)
        (cell,) = summarize(run).values()
        results[k] = (n_frames / loop_seconds, cell, rollout_table(run)["psnr_rollout"].tolist())

    finest = max(ks)
    print(f"\n{'K':>4} {'frames/s':>9} {'x vs K=' + str(finest):>10} {'PSNR':>7} {'SSIM':>7} {'LPIPS':>7}  "
          f"PSNR - PSNR(K={finest}) (95% CI)")
    for k, (fps, cell, psnrs) in results.items():
        gap, ci = paired_difference(psnrs, results[finest][2])
        print(f"{k:>4} {fps:>9.1f} {fps / results[finest][0]:>10.2f} {cell['psnr']:>7.2f} {cell['ssim']:>7.4f} "
              f"{cell['lpips']:>7.4f}  {gap:+.2f} ± {ci or 0:.2f}")


if __name__ == "__main__":
    t0 = time.perf_counter()
    main()
    print(f"\ntotal {time.perf_counter() - t0:.1f} s")
