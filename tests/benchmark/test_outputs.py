"""What the benchmark writes: metrics JSON, CSV tables, TEST_METRICS lines."""

import csv
import json
import re

import pandas as pd
import pytest

from pipeline.benchmark.clips import select_clips
from pipeline.benchmark.outputs import JSON_KEYS, metrics_json, write_outputs
from pipeline.benchmark.run import run_benchmark
from tests.benchmark.toy import bench_params, make_revisit_stores, run
from tests.rollout.toy_host import ToyHost


def test_benchmark_runs_every_cell_and_writes_stable_outputs(stores, scorer, tmp_path):
    result = run(stores, scorer)
    assert len(result.records) == 2 * 2 * 2 * 2 * 2  # workloads x clips x budgets x policies x modes
    info = {"host": "toy", "sampling_steps": 4}
    summary, refs, lines = write_outputs(result, {"full": None, "tight": 2}, info, tmp_path / "b.json",
                                            tmp_path / "h.csv", tmp_path / "bud.csv")
    data = json.loads((tmp_path / "b.json").read_text())
    assert data["eval_mode"] == "real_rollout"
    assert sorted(data["baselines"]) == ["full_history", "recent_window"]
    cell = data["rollouts"]["short"]["tight"]["recent_window"]["kv"]
    # memory_gain: full_history under a budget; psnr_vs_random: runs with the random policy
    assert set(cell) == set(JSON_KEYS) - {"memory_gain", "memory_gain_ci95", "psnr_vs_random", "psnr_vs_random_ci95"}
    gain = data["rollouts"]["long"]["tight"]["full_history"]["recompute"]
    full = data["rollouts"]["long"]["full"]["full_history"]["recompute"]
    assert gain["memory_gain"] == pytest.approx(full["psnr"] - gain["psnr"]) and gain["memory_gain_ci95"] >= 0
    assert cell["n_frames_kept"] == 2 and cell["peak_kv_memory_mb"] > 0
    assert data["rollouts"]["long"]["full"]["full_history"]["recompute"]["n_frames_kept"] == 15  # 10 + 6 - 1
    assert data["rollouts"]["long"]["tight"]["full_history"]["recompute"]["n_frames_kept"] == 2
    assert cell["temporal_quality_main"] == pytest.approx(min(100, cell["psnr"] / 40 * 100))
    assert set(data["references"]["short"]) == {"persistence", "tokenizer_ceiling", "memory_all_past", "memory_last_2"}
    # the toy host's ceiling (pooling) is far better than its rollouts
    assert data["references"]["short"]["tokenizer_ceiling"]["psnr"] > cell["psnr"]

    assert len(lines) == 2 * 2 * 2 * 2 + 2 * 4  # cells + workloads x references
    pattern = re.compile(r"^TEST_METRICS: workload=\w+ budget=\w+ policy=\w+ mode=\w+ temporal_quality_main=\S+ "
                         r"psnr=\S+ ssim=\S+ lpips=\S+ peak_kv_memory_mb=\S+ fps=\S+ n_frames_kept=\d+ eval_mode=real_rollout$")
    assert sum(bool(pattern.match(line)) for line in lines) == 16

    rows = list(csv.DictReader(open(tmp_path / "h.csv")))
    short_rw = [r for r in rows if r["workload"] == "short" and r["budget"] == "full" and r["mode"] == "kv"
                and r["policy"] == "recent_window"]
    assert [int(r["horizon"]) for r in short_rw] == [1, 2, 3, 4]
    # references appear in every (budget, mode) panel
    assert {(r["budget"], r["mode"]) for r in rows if r["policy"] == "persistence"} == {
        (b, m) for b in ("full", "tight") for m in ("recompute", "kv")}
    budget_rows = list(csv.DictReader(open(tmp_path / "bud.csv")))
    assert len(budget_rows) == 16 and {r["max_frames"] for r in budget_rows} == {"full", "2"}


def test_the_metrics_list_the_baselines_among_the_policies_run_and_not_the_candidates():
    cell = {"psnr": 20.0}
    summary = {("long", "tight", policy, "kv"): cell for policy in ("fifo", "pose_retrieval", "zoo.py:Mine", "full_history")}
    assert metrics_json(summary, {}, {})["baselines"] == ["fifo", "full_history"]


def test_a_revisit_run_reports_returns_bounds_and_the_share_of_the_gap_closed(scorer, tmp_path):
    stores = make_revisit_stores(tmp_path)
    bench = bench_params(policies=["full_history", "random", "pose_coverage", "oracle_copy"], modes=["kv"],
                         workloads={"revisit": {"context": 96, "predict": 16, "revisit_gap": 64}},
                         budgets={"full": None, "tight": 4}, n_clips=1)
    clips = {"revisit": select_clips(*stores, 96, 16, 1, 0, revisit_gap=64, workload="revisit")}
    result = run_benchmark(ToyHost(), bench, clips, seed=0, scorer=scorer, progress=False)
    write_outputs(result, bench.budgets, {}, tmp_path / "b.json", tmp_path / "h.csv", tmp_path / "bud.csv",
                  tmp_path / "r.csv")
    data = json.loads((tmp_path / "b.json").read_text())
    assert data["hindsight_references"] == ["oracle_copy"] and "oracle_copy" not in data["baselines"]
    tight = data["rollouts"]["revisit"]["tight"]
    for cells in tight.values():
        cell = cells["kv"]
        assert cell["returning_frames"] == 13  # 13 of the 16 spin frames return; 3 face the way back
        assert "psnr_vs_random" in cell and "gap_closed" in cell
    assert tight["full_history"]["kv"]["gap_closed"] == pytest.approx(0.0)
    # the oracle keeps the first spin's views: its copies beat the newest 4 frames' (the walk back)
    assert tight["oracle_copy"]["kv"]["memory_oracle_psnr"] > tight["full_history"]["kv"]["memory_oracle_psnr"] + 3
    table = pd.read_csv(tmp_path / "r.csv")
    assert set(table["since_seen"]) == {"1-8", "9-32", "64-127"}  # west +- a step: seen walking back; the rest: the first spin
    assert table.groupby(["budget", "policy"])["frames"].sum().eq(16).all()
