"""Aggregation of the benchmark: the quality score, standard errors and paired gaps."""

import re

import numpy as np
import pytest

from pipeline.benchmark.outputs import ranking_lines
from pipeline.benchmark.summary import summarize, temporal_quality
from tests.benchmark.toy import bench_params, run


def test_temporal_quality_maps_psnr_linearly_capped_at_40_db():
    assert temporal_quality(20.0) == 50.0
    assert temporal_quality(48.0) == 100.0


def test_each_policy_gets_a_standard_error_and_a_paired_gap_to_full_history(stores, scorer):
    result = run(stores, scorer)
    summary = summarize(result)
    for (workload, budget, policy, mode), e in summary.items():
        recs = [r for r in result.records if (r.cell.workload, r.cell.budget, r.cell.policy, r.cell.mode)
                == (workload, budget, policy, mode)]  # fmt: skip
        base = {(r.clip, r.seed): np.mean(r.per_frame["psnr"]) for r in result.records
                if (r.cell.workload, r.cell.budget, r.cell.policy, r.cell.mode)
                == (workload, budget, "full_history", mode)}  # fmt: skip
        gaps = [np.mean(r.per_frame["psnr"]) - base[(r.clip, r.seed)] for r in recs]
        assert e["psnr_vs_full_history"] == pytest.approx(np.mean(gaps))
        assert e["psnr_sem"] == pytest.approx(np.std([np.mean(r.per_frame["psnr"]) for r in recs], ddof=1) / np.sqrt(2))
        assert e["psnr_vs_full_history_ci95"] >= 0
    assert summary[("short", "full", "full_history", "kv")]["psnr_vs_full_history"] == 0.0
    lines = ranking_lines(summary)
    assert lines[0] == "short / budget full / recompute: PSNR dB (± s.e.), paired gap to full_history (± 95% CI)"
    assert re.match(r"^  (recent_window|full_history) +\d+\.\d\d ± \d+\.\d\d +[+-]\d+\.\d\d ± \d+\.\d\d$", lines[1])


def test_without_full_history_there_is_no_gap_but_still_a_standard_error(stores, scorer):
    summary = summarize(run(stores, scorer, bench_params(policies=["recent_window"])))
    for e in summary.values():
        assert e["psnr_vs_full_history"] is None and e["psnr_vs_full_history_ci95"] is None
        assert e["psnr_sem"] is not None


def test_a_clips_sampling_seeds_count_as_one_observation(stores, scorer):
    from pipeline.benchmark.stats import paired_difference

    result = run(stores, scorer, bench_params(seeds=[0, 1], workloads={"long": {"context": 10, "predict": 6}}))
    summary = summarize(result)

    def clip_means(policy, budget):
        recs = [r for r in result.records if (r.cell.budget, r.cell.policy, r.cell.mode) == (budget, policy, "kv")]
        return [np.mean([np.mean(r.per_frame["psnr"]) for r in recs if r.clip == c]) for c in (0, 1)]

    entry = summary[("long", "tight", "recent_window", "kv")]
    expected = paired_difference(clip_means("recent_window", "tight"), clip_means("full_history", "tight"))
    assert (entry["psnr_vs_full_history"], entry["psnr_vs_full_history_ci95"]) == pytest.approx(expected)
    assert entry["psnr_sem"] == pytest.approx(np.std(clip_means("recent_window", "tight"), ddof=1) / np.sqrt(2))
    gain = summary[("long", "tight", "full_history", "kv")]
    expected = paired_difference(clip_means("full_history", "full"), clip_means("full_history", "tight"))
    assert (gain["memory_gain"], gain["memory_gain_ci95"]) == pytest.approx(expected)
