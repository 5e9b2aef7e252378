"""metrics/headline.json: a few numbers per run, the same ones whatever the run's size."""

import pytest

from pipeline.benchmark.summary import GAP_KEY, PAIRED_BASELINE
from pipeline.report import headline as hl
from pipeline.report.headline import headline, leaves
from tests.report.conftest import benchmark_json, cell


def test_the_headline_names_match_the_benchmarks():
    assert (hl.PAIRED_BASELINE, hl.GAP) == (PAIRED_BASELINE, GAP_KEY)


def test_the_headline_of_a_run():
    h = headline(benchmark_json(), {"val": {"psnr": 37.7}}, {"tau_min": 0.0625, "tau_max": 1.0})
    assert h["tokenizer_val_psnr"] == 37.7 and (h["train_tau_min"], h["train_tau_max"]) == (0.0625, 1.0)
    assert h["benchmark_seconds"] == 12.5
    short = h["short"]
    # the model: full_history at the unlimited budget, in the first mode
    assert (short["model_psnr"], short["model_lpips"]) == (23.0, 0.08)
    assert (short["persistence_psnr"], short["persistence_lpips"]) == (21.0, 0.09)
    # per limited budget the best paired gap among every policy and mode (full_history left out)
    assert short["tight"] == {"best_policy": "packcache/recompute", "best_gap": 0.6, "best_gap_ci95": 0.9}
    assert "full" not in short  # the unlimited budget is the model's, not a policy race
    assert "memory_headroom_psnr" not in short  # no copy-oracle references in this run


def test_the_headline_stays_small_and_numeric_but_for_the_policy_names():
    flat = leaves(headline(benchmark_json(), {"val": {"psnr": 37.7}}, {"tau_min": 0.1, "tau_max": 1.0}))
    assert len(flat) <= 25
    assert {k for k, v in flat.items() if not isinstance(v, float)} == {"short.tight.best_policy", "long.tight.best_policy"}


def test_memory_headroom_comes_from_the_copy_oracle_references_when_the_run_has_them():
    oracles = {"memory_all_past": {"psnr": 30.0, "lpips": 0.01}, "memory_last_4": {"psnr": 27.5, "lpips": 0.02},
               "memory_last_1": {"psnr": 25.0, "lpips": 0.03}}
    h = headline(benchmark_json({"long": oracles}))
    assert h["long"]["memory_headroom_psnr"] == pytest.approx(2.5)
    assert "memory_headroom_psnr" not in h["short"]


def test_a_run_without_intervals_or_baseline_still_has_a_headline():
    bench = benchmark_json()
    for by_policy in bench["rollouts"]["short"].values():
        by_policy.pop("full_history")
        for by_mode in by_policy.values():
            for m in by_mode.values():
                m[GAP_KEY] = m[f"{GAP_KEY}_ci95"] = None
    h = headline(bench)  # no tokenizer or train metrics either
    assert "model_psnr" not in h["short"] and "tight" not in h["short"]
    assert "tokenizer_val_psnr" not in h and h["long"]["tight"]["best_policy"] == "packcache/recompute"


def test_one_rollout_gives_a_gap_without_an_interval():
    best = hl.best_policy({"a": {"kv": cell(20, 0.2, None)}, "full_history": {"kv": cell(20, 0.0, None)}})
    assert best[:2] == ("a", "kv")
    assert headline({"rollouts": {"w": {"b": {"a": {"kv": cell(20, float("nan"), None)}}}},
                     "budgets": {"b": 2}})["w"] == {}


@pytest.mark.parametrize("budgets, expected", [({"full": None, "tight": 4}, "full"), ({"big": 16, "tight": 4}, "big")])
def test_the_model_budget_is_the_unlimited_one_else_the_largest(budgets, expected):
    assert hl.model_budget(budgets, list(budgets)) == expected
