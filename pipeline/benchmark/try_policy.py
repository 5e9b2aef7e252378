"""Try a retention policy outside DVC, against the existing checkpoints and latents:

    python -m pipeline.benchmark.try_policy --policy my_policy.py:MyPolicy --workload short --budget tight
    python -m pipeline.benchmark.try_policy --policy packcache --policy my.mod:Other --budget 6 --mode kv

The stage's clips, seeds and noise (paired with its numbers); prints TEST_METRICS lines and a table beside
the baselines in metrics/benchmark.json, writes nothing. `--policy full_history` adds paired gaps with 95%
intervals. `--debug` or PIPELINE_DEBUG=1 shows a policy error's traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pipeline import paths
from pipeline.benchmark.cli import user_errors
from pipeline.benchmark.clips import workload_clips
from pipeline.benchmark.outputs import metrics_lines, ranking_lines
from pipeline.benchmark.run import Scorer, run_benchmark
from pipeline.benchmark.summary import GAP_KEY, summarize, summarize_references
from pipeline.benchmark.validate import validate_benchmark
from pipeline.config import load_params
from pipeline.hosts.build import benchmark_device, build_host, run_info
from pipeline.runtime.errors import add_debug_flag
from pipeline.runtime.seeding import seed_everything

COLUMNS = {"temporal_quality_main": "tq_main", "psnr": "psnr", "ssim": "ssim", "lpips": "lpips", "fps": "fps",
           "peak_kv_memory_mb": "peak_MiB", "mean_frames_kept": "mean_kept"}


def parse_budget(value: str, budgets: dict) -> tuple[str, int | None]:
    if value in budgets:
        return value, budgets[value]
    if value.isdigit() and int(value) >= 1:
        return value, int(value)
    raise SystemExit(f"--budget {value!r}: not one of benchmark.budgets ({', '.join(budgets)}) nor a frame count >= 1")


def positive_int(value: str) -> int:
    """argparse type of a count >= 1 (argparse names the flag in its error)."""
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {value!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {n}")
    return n


def baseline_rows(path: Path, workload: str, budget: str, modes: list[str], info: dict) -> tuple[list, dict]:
    if not path.is_file():
        print(f"(no {path}: run `dvc repro benchmark` for the baselines' results)")
        return [], {}
    data = json.loads(path.read_text())
    stage = {"split": "test", **data}  # the stage scores the test clips
    mismatch = [k for k in ("host", "sampling_steps", "n_clips", "n_seeds", "checkpoints", "split")
                if k in stage and stage[k] != info.get(k)]
    if mismatch:
        print(f"note: {path} was made with other settings ({', '.join(f'{k}={stage[k]}' for k in mismatch)}): "
              "not a paired comparison")
    cells = data.get("rollouts", {}).get(workload, {}).get(budget, {})
    rows = [(policy, mode, e) for policy, by_mode in cells.items() for mode, e in by_mode.items() if mode in modes]
    return rows, data.get("references", {}).get(workload, {})


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--policy", action="append", required=True,
                    help="baseline name, module:Class or path/to/file.py:Class (repeatable)")
    ap.add_argument("--workload", default="short", help="a name of benchmark.workloads (default short)")
    ap.add_argument("--budget", default="medium", help="a name of benchmark.budgets or a frame count (default medium)")
    ap.add_argument("--mode", action="append", choices=["recompute", "kv"], help="default: benchmark.modes")
    ap.add_argument("--clips", type=positive_int, help="override benchmark.n_clips (then not paired with the stage)")
    ap.add_argument("--split", choices=["test", "val"], default="test",
                    help="clips from the test videos (the stage's, paired with it) or the validation videos: design a "
                         "policy on val, then score it once on test")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--baselines", default=str(paths.BENCHMARK_METRICS), help="results to compare with")
    add_debug_flag(ap)
    return ap.parse_args(argv)


def print_table(summary: dict, refs: dict, args, budget: str, max_frames: int | None, modes: list[str],
                info: dict) -> None:
    """This run's cells beside the baselines' last results (by PSNR), then the references."""
    rows, old_refs = baseline_rows(Path(args.baselines), args.workload, budget, modes, info)
    new = {(p, m) for (_, _, p, m) in summary}
    table = [(f"* {p}", m, e) for (_, _, p, m), e in summary.items()]
    table += [(f"  {p}", m, e) for p, m, e in rows if (p, m) not in new]
    table.sort(key=lambda r: -r[2]["psnr"])
    print(f"\n{args.workload} / budget {budget} ({'unlimited' if max_frames is None else max_frames} frames); "
          f"* = this run, others from {args.baselines}")
    print(f"{'policy':<26}{'mode':<11}" + "".join(f"{label:>11}" for label in COLUMNS.values()))
    for name, mode, e in table:
        print(f"{name:<26}{mode:<11}" + "".join(f"{e.get(c, float('nan')):>11.4g}" for c in COLUMNS))
    for name, e in (old_refs or refs).items():
        print(f"  {name:<24}{'reference':<11}" + "".join(f"{e.get(c, float('nan')):>11.4g}" for c in list(COLUMNS)[:4]))


def try_policies(args) -> None:
    params = load_params(args.params)
    bench = params.benchmark
    if args.clips is not None:
        bench = bench.model_copy(update={"n_clips": args.clips})
        params = params.model_copy(update={"benchmark": bench})
    budget, max_frames = parse_budget(args.budget, bench.budgets)
    modes = args.mode or list(bench.modes)
    validate_benchmark(params, policies=args.policy, workloads=[args.workload], policy_key="--policy")
    seed_everything(params.seed)
    device = benchmark_device(params)
    host = build_host(params, device)
    clips = workload_clips(params, [args.workload], split=args.split)
    run = run_benchmark(host, bench, clips, seed=params.seed, policies=args.policy, budgets={budget: max_frames},
                        modes=modes, scorer=Scorer(device))
    summary, refs = summarize(run), summarize_references(run)
    print("\n".join(metrics_lines(summary, refs)))
    print_table(summary, refs, args, budget, max_frames, modes, {**run_info(params, device), "split": args.split})
    if any(e[GAP_KEY] is not None for e in summary.values()):
        print("\n" + "\n".join(ranking_lines(summary)))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with user_errors("try_policy", args.debug):
        try_policies(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
