"""Stage `benchmark`: rollouts of every policy under every frame budget on held-out clips ->
metrics/benchmark.json, metrics/benchmark_{horizon,budget}.csv, reports/benchmark/*.gif.
Prints one `TEST_METRICS: ...` line per workload x budget x policy x mode."""

from __future__ import annotations

import time

from pipeline import paths
from pipeline.atomic import atomic_dir
from pipeline.benchmark import run as bm
from pipeline.config import load_params_or_exit
from pipeline.training.seeding import seed_everything


def main() -> None:
    start = time.perf_counter()
    params = load_params_or_exit()
    bench = params.benchmark
    seed_everything(params.seed)
    device = bm.benchmark_device(params)
    host = bm.build_host(params, device)
    clips = bm.workload_clips(params)
    run = bm.run_benchmark(host, bench, clips, seed=params.seed, media_clips=bench.media_clips, scorer=bm.Scorer(device))
    info = bm.run_info(params, device)
    summary, _, lines = bm.write_outputs(run, bench.budgets, info, paths.BENCHMARK_METRICS, paths.BENCHMARK_HORIZON, paths.BENCHMARK_BUDGET)
    with atomic_dir(paths.BENCHMARK_REPORTS) as tmp:
        if bench.media_clips:
            bm.write_media(run, tmp, bench.workloads, mode=bench.modes[0])
    print("\n".join(lines))
    print("\n".join(bm.ranking_lines(summary)))
    print(f"benchmark: {len(run.records)} rollouts in {run.seconds:.1f} s (stage {time.perf_counter() - start:.1f} s)")


if __name__ == "__main__":
    main()
