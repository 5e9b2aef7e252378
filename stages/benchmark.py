"""Stage `benchmark`: rollouts of every policy under every frame budget on held-out clips ->
metrics/benchmark.json, metrics/benchmark_{horizon,budget,revisit}.csv, reports/benchmark/*.gif.
Prints one `TEST_METRICS: ...` line per workload x budget x policy x mode.

A policy's error or a setting the data cannot support ends the stage with a message and no
traceback (`--debug` or PIPELINE_DEBUG=1 shows it).

With benchmark.nproc_per_node > 1 it relaunches itself under torchrun: every rank runs its share
of the clips (clip % world == rank, ``benchmark.batch_size`` at a time), rank 0 gathers the
shares, puts them in one process's order (``merge_runs``) and writes every output, atomically;
the metrics are those of one process (to float rounding; timings aside)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Sequence

if not __package__:  # run as a file (`python stages/benchmark.py`): import this checkout's pipeline, as `-m` does
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline import paths
from pipeline.atomic import atomic_dir, remove_stale_tmp
from pipeline.benchmark.cli import user_errors
from pipeline.benchmark.clips import workload_clips
from pipeline.benchmark.media import write_media
from pipeline.benchmark.outputs import ranking_lines, write_outputs
from pipeline.benchmark.run import Scorer, merge_runs, run_benchmark
from pipeline.benchmark.validate import validate_benchmark
from pipeline.config import load_params_or_exit
from pipeline.hosts.build import benchmark_device, build_host, run_info
from pipeline.runtime.distributed import close_distributed, gather_to_main, init_distributed
from pipeline.runtime.errors import add_debug_flag
from pipeline.runtime.launch import relaunch_under_torchrun
from pipeline.runtime.seeding import seed_everything

OUTPUTS = (paths.BENCHMARK_METRICS, paths.BENCHMARK_HORIZON, paths.BENCHMARK_BUDGET, paths.BENCHMARK_REVISIT,
           paths.BENCHMARK_REPORTS)


def benchmark(params) -> None:
    start = time.perf_counter()
    bench = params.benchmark
    validate_benchmark(params)  # before any model loads or output changes
    d = init_distributed()
    if d.main:
        for out in OUTPUTS:
            remove_stale_tmp(out.parent, out.name)  # what a killed run left
    seed_everything(params.seed)
    device = benchmark_device(params, d)
    host = build_host(params, device)
    clips = workload_clips(params)
    part = run_benchmark(host, bench, clips, seed=params.seed, media_clips=bench.media_clips, scorer=Scorer(device),
                         shard=(d.rank, d.world), progress=d.main)
    parts = gather_to_main(part.share(), d)
    close_distributed(d)
    if not d.main:
        return
    run = merge_runs(parts, clips, bench.budgets, bench)
    info = run_info(params, device)
    summary, _, lines = write_outputs(run, bench.budgets, info, paths.BENCHMARK_METRICS, paths.BENCHMARK_HORIZON,
                                      paths.BENCHMARK_BUDGET, paths.BENCHMARK_REVISIT)
    with atomic_dir(paths.BENCHMARK_REPORTS) as tmp:
        if bench.media_clips:
            write_media(run, tmp, bench.workloads, mode=bench.modes[0])
    print("\n".join(lines))
    print("\n".join(ranking_lines(summary)))
    processes = f", {d.world} processes" if d.world > 1 else ""
    print(f"benchmark: {len(run.records)} rollouts in {run.seconds:.1f} s (stage {time.perf_counter() - start:.1f} s, "
          f"batch size {bench.batch_size}{processes})")


def main(argv: Sequence[str] = ()) -> int:
    ap = argparse.ArgumentParser(prog="python -m stages.benchmark", description=__doc__)
    add_debug_flag(ap)
    args = ap.parse_args(argv)
    params = load_params_or_exit()
    relaunch_under_torchrun(params.benchmark.nproc_per_node, "stages.benchmark", argv)
    with user_errors("benchmark", args.debug, writes=f"{paths.BENCHMARK_METRICS} and {paths.BENCHMARK_REPORTS}"):
        benchmark(params)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
