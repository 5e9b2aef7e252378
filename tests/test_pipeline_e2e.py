"""All stages through real DVC, on tiny params, in a throwaway clone: catches any break between
stages (a contract one stage writes and the next one reads), and what a researcher reads after
it: the headline metrics and the report.

One `dvc repro` (a module fixture) serves every test here; the test that changes the clone runs
last."""

import json

import pytest

from pipeline.report.headline import leaves
from tests.project_clone import make_project_clone

TINY = {
    "download": {"recorder": {"episodes": 3, "max_frames": 60}},
    "extract": {"size": 32},
    "tokenizer": {"steps": 12, "batch_size": 8, "base_channels": 8, "warmup_steps": 2,
                  "val_every": 6, "checkpoint_every": 6, "val_frames": 16},
    "tokenize": {"batch_size": 64},
    "model": {"dim": 32, "depth": 2, "heads": 2, "kv_heads": 1, "temporal_every": 1, "k_max": 4},
    "train": {"steps": 8, "seq_len_short": 4, "seq_len_long": 8, "batch_size_short": 2,
              "batch_size_long": 1, "warmup_steps": 2, "log_every": 4, "val_every": 4, "checkpoint_every": 4},
    "benchmark": {"workloads": {"short": {"context": 3, "predict": 3}, "long": {"context": 10, "predict": 4}},
                  "budgets": {"full": None, "tight": 2}, "n_clips": 2, "sampling_steps": 2, "media_clips": 1},
}

STAGES = ("fingerprint", "download", "extract", "train_tokenizer", "tokenize", "train", "benchmark", "report")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    clone = make_project_clone(tmp_path_factory.mktemp("e2e") / "project")
    clone.set_params(TINY)
    out = clone.run("dvc", "repro", timeout=900).stdout
    return clone, out


@pytest.mark.slow
def test_dvc_repro_runs_all_stages_and_writes_the_headline_and_the_report(tiny_run):
    clone, out = tiny_run
    for stage in STAGES:
        assert f"Running stage '{stage}'" in out

    root = clone.root
    bench = json.loads((root / "metrics/benchmark.json").read_text())
    flat = json.dumps(bench)
    for policy in ("recent_window", "packcache", "causalcache_vdm", "flowcache", "full_history"):
        assert policy in flat
    assert bench["budgets"] == {"full": None, "medium": 8, "tight": 2}
    for name in ("tokenizer.json", "train.json"):
        assert json.loads((root / "metrics" / name).read_text())
    assert (root / "metrics/benchmark_horizon.csv").stat().st_size > 0
    assert any((root / "reports/benchmark").iterdir())
    assert (root / "reports/index.html").is_file() and any((root / "reports/charts").glob("*.svg"))

    # the headline is the one metrics file: a few numbers (and the best policies' names)
    headline = leaves(json.loads((root / "metrics/headline.json").read_text()))
    assert 15 <= len(headline) <= 26 and headline["short.tight.best_policy"].count("/") == 1
    assert list(json.loads(clone.run("dvc", "metrics", "show", "--json").stdout)[""]["data"]) == [
        "metrics/headline.json"]
    # the detail is still one command away
    detail = json.loads(clone.run("dvc", "metrics", "show", "metrics/benchmark.json", "--json").stdout)
    assert "rollouts" in detail[""]["data"]["metrics/benchmark.json"]["data"]

    # nothing left to do: the lock file matches what is on disk
    assert "up to date" in clone.run("dvc", "status").stdout.lower()


@pytest.mark.slow
def test_reruns_are_exactly_the_stages_that_depend_on_a_change(tiny_run):
    clone, _ = tiny_run
    root = clone.root

    # retraining with the same params writes byte-identical checkpoints: the benchmark is not stale,
    # only the report, which shows the training's timings (metrics/train.json, dvclive/)
    clone.run("dvc", "repro", "--force", "--single-item", "train", timeout=600)
    assert sorted(json.loads(clone.run("dvc", "status", "--json").stdout)) == ["report"]

    # changing a train key (params.yaml) reruns train, benchmark and the report only
    out = clone.run("dvc", "exp", "run", "-S", "train.seq_len_long=12", timeout=900).stdout
    ran = {s for s in STAGES if f"Running stage '{s}'" in out}
    assert ran == {"train", "benchmark", "report"}, out

    # a setting (settings.yaml) reruns its stages through their fingerprints
    out = clone.run("dvc", "exp", "run", "-S", "settings.yaml:benchmark.tau_ctx=0.2", timeout=900).stdout
    ran = {s for s in STAGES if f"Running stage '{s}'" in out}
    assert ran == {"fingerprint", "benchmark", "report"}, out

    # editing the dynamics model's code changes the fingerprints of exactly the stages that run it
    with open(root / "pipeline/networks/dynamics.py", "a") as f:
        f.write("\n# an edit\n")
    assert sorted(json.loads(clone.run("dvc", "status", "--json").stdout)) == ["fingerprint"]
    clone.run("dvc", "repro", "fingerprint")
    assert sorted(json.loads(clone.run("dvc", "status", "--json").stdout)) == ["benchmark", "train"]
