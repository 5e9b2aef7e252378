"""All six stages through real DVC, on tiny params, in a throwaway clone: catches any break
between stages (a contract one stage writes and the next one reads)."""

import json

import pytest

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
                  "budgets": {"full": None, "tight": 2}, "n_clips": 1, "sampling_steps": 2, "media_clips": 1},
}

STAGES = ("download", "extract", "train_tokenizer", "tokenize", "train", "benchmark")


@pytest.mark.slow
def test_dvc_repro_runs_all_stages_deterministically_and_exp_run_reruns_only_downstream(project_clone):
    project_clone.set_params(TINY)
    out = project_clone.run("dvc", "repro", timeout=900).stdout
    for stage in STAGES:
        assert f"Running stage '{stage}'" in out

    root = project_clone.root
    bench = json.loads((root / "metrics/benchmark.json").read_text())
    flat = json.dumps(bench)
    for policy in ("recent_window", "packcache", "causalcache_vdm", "flowcache", "full_history"):
        assert policy in flat
    for name in ("tokenizer.json", "train.json"):
        assert json.loads((root / "metrics" / name).read_text())
    assert (root / "metrics/benchmark_horizon.csv").stat().st_size > 0
    assert any((root / "reports/benchmark").iterdir())

    # nothing left to do: the lock file matches what is on disk
    assert "up to date" in project_clone.run("dvc", "status").stdout.lower()

    # retraining with the same params writes byte-identical checkpoints: nothing downstream is stale
    project_clone.run("dvc", "repro", "--force", "--single-item", "train", timeout=600)
    assert "up to date" in project_clone.run("dvc", "status").stdout.lower()

    # changing a train key reruns train and benchmark only
    out = project_clone.run("dvc", "exp", "run", "-S", "train.seq_len_long=12", timeout=900).stdout
    for stage in ("download", "extract", "train_tokenizer", "tokenize"):
        assert f"Running stage '{stage}'" not in out
    for stage in ("train", "benchmark"):
        assert f"Running stage '{stage}'" in out

    # editing the dynamics model's code makes exactly the stages that run it stale
    with open(root / "pipeline/networks/dynamics.py", "a") as f:
        f.write("\n# an edit\n")
    assert sorted(json.loads(project_clone.run("dvc", "status", "--json").stdout)) == ["benchmark", "train"]
