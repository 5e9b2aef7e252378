"""Stage `benchmark`: rollouts of every policy under every frame budget on held-out clips ->
metrics/benchmark.json, metrics/benchmark_{horizon,budget}.csv, reports/benchmark/*.gif.
Prints one `TEST_METRICS: ...` line per workload x budget x policy x mode."""

from __future__ import annotations

import time

from pipeline import paths
from pipeline.atomic import atomic_dir, remove_stale_tmp
from pipeline.benchmark.clips import workload_clips
from pipeline.benchmark.hosts import benchmark_device, build_host, run_info
from pipeline.benchmark.media import write_media
from pipeline.benchmark.outputs import ranking_lines, write_outputs
from pipeline.benchmark.run import Scorer, run_benchmark
from pipeline.config import load_params_or_exit
from pipeline.training.common import seed_everything

OUTPUTS = (paths.BENCHMARK_METRICS, paths.BENCHMARK_HORIZON, paths.BENCHMARK_BUDGET, paths.BENCHMARK_REPORTS)


def main() -> None:
    start = time.perf_counter()
    params = load_params_or_exit()
    bench = params.benchmark
    for out in OUTPUTS:
        remove_stale_tmp(out.parent, out.name)  # what a killed run left
    seed_everything(params.seed)
    device = benchmark_device(params)
    host = build_host(params, device)
    clips = workload_clips(params)
    run = run_benchmark(host, bench, clips, seed=params.seed, media_clips=bench.media_clips, scorer=Scorer(device))
    info = run_info(params, device)
    summary, _, lines = write_outputs(run, bench.budgets, info, paths.BENCHMARK_METRICS, paths.BENCHMARK_HORIZON,
                                      paths.BENCHMARK_BUDGET)
    with atomic_dir(paths.BENCHMARK_REPORTS) as tmp:
        if bench.media_clips:
            write_media(run, tmp, bench.workloads, mode=bench.modes[0])
    print("\n".join(lines))
    print("\n".join(ranking_lines(summary)))
    print(f"benchmark: {len(run.records)} rollouts in {run.seconds:.1f} s (stage {time.perf_counter() - start:.1f} s)")


if __name__ == "__main__":
    main()
