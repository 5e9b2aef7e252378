"""Checks of the benchmark params before any model loads: a policy spec that does not load or a workload no
held-out video holds raises BenchmarkError naming the key (``benchmark.policies[2]``)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from pipeline.benchmark.clips import BenchmarkError, eligible_videos
from pipeline.benchmark.references import HINDSIGHT
from pipeline.paths import FRAMES
from pipeline.rollout.policies import PolicyLoadError, load_policy


def load_policies(specs: Sequence[str], key: str = "benchmark.policies") -> list:
    """A policy per spec; BenchmarkError naming ``key[i]`` for one that does not load, or two with one name."""
    loaded = []
    for i, spec in enumerate(specs):
        try:
            loaded.append(HINDSIGHT[spec]() if spec in HINDSIGHT else load_policy(spec))
        except PolicyLoadError as exc:
            raise BenchmarkError(f"{key}[{i}]: {exc}") from exc
    names = [p.name for p in loaded]
    if len(set(names)) != len(names):
        raise BenchmarkError(f"{key}: two policies report under one name ({dict(zip(specs, names))})")
    return loaded


def check_workloads(params, names: Sequence[str], frames: str | Path = FRAMES) -> None:
    """Each named workload exists and some clip source holds its context + predict frames."""
    bench = params.benchmark
    for name in names:
        if name not in bench.workloads:
            raise BenchmarkError(f"benchmark.workloads: no workload {name!r} (have {', '.join(bench.workloads)})")
        w = bench.workloads[name]
        try:
            if bench.host == "far" and bench.far.dmlab_npz:
                from pipeline.data.dmlab import episode_paths

                episode_paths(bench.far.dmlab_npz, 1, w.context + w.predict)
            else:
                eligible_videos(frames, w.context, w.predict)
        except (BenchmarkError, FileNotFoundError, ValueError) as exc:
            raise BenchmarkError(f"benchmark.workloads.{name}: {exc}") from exc


def validate_benchmark(params, policies: Sequence[str] | None = None, workloads: Sequence[str] | None = None,
                       policy_key: str = "benchmark.policies", frames: str | Path = FRAMES) -> None:
    """BenchmarkError naming the params key unless every policy loads and every workload fits ``frames``
    (defaults: the params' policies and workloads)."""
    bench = params.benchmark
    load_policies(list(policies if policies is not None else bench.policies), policy_key)
    check_workloads(params, list(workloads if workloads is not None else bench.workloads), frames)
