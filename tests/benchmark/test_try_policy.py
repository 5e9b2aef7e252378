"""The benchmark stage and try_policy on a tiny project: real zarr stores, real checkpoints of
small random models, real LPIPS; run from the project directory as users do."""

import csv
import json
import re
import shutil
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
import zarr

from pipeline.data.stores import ShardedArrayWriter
from pipeline.networks.checkpoint import save_checkpoint
from pipeline.networks.dynamics import build_dynamics, config_dict
from pipeline.networks.tokenizer import build_tokenizer, tokenizer_config
from tests.builders import default_raw_params, dynamics_config

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("project")
    params = default_raw_params()  # params.yaml + settings.yaml, written here as one params.yaml
    params["benchmark"].update(
        policies=["recent_window", "full_history"], modes=["kv"], workloads={"short": {"context": 3, "predict": 3}},
        budgets={"full": None, "tight": 2}, n_clips=1, seeds=[0], sampling_steps=2, media_clips=1,
    )
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    shutil.copytree(REPO / ".dvc" / "plots", root / ".dvc" / "plots")

    torch.manual_seed(0)
    tok = build_tokenizer(tokenizer_config(dict(arch="conv", latent_channels=4, downsample=4, base_channels=8,
                                                patch_size=8), 64))
    dyn = build_dynamics(config_dict(dynamics_config((4, 16, 16), n_actions=3, dim=32, depth=2, heads=2, kv_heads=2,
                                                     patch_size=4, num_registers=1, temporal_every=2, k_max=4,
                                                     mlp_ratio=4.0, logit_softcap=50.0)))
    torch.nn.init.normal_(dyn.patch_out.weight, std=0.1)
    save_checkpoint(root / "models/tokenizer", kind="tokenizer", config=tok.config, model=tok, ema=tok)
    save_checkpoint(root / "models/dynamics", kind="dynamics", config=config_dict(dyn.config), model=dyn, ema=dyn)

    frames_root = zarr.open_group(str(root / "data/frames.zarr"), mode="w")
    latents_root = zarr.open_group(str(root / "data/latents.zarr"), mode="w")
    rng = np.random.default_rng(0)
    for vid, split in (("v_train", "train"), ("v_test", "test"), ("v_val", "val")):
        frames = rng.integers(0, 255, (20, 64, 64, 3), dtype=np.uint8)
        for r in (frames_root, latents_root):
            r.create_group(vid).attrs.update({"split": split, "fps": 20.0})
        w = ShardedArrayWriter(frames_root[vid], "frames", (64, 64, 3), np.uint8, 8, 32)
        w.append(frames)
        w.close()
        frames_root[vid].create_array("actions", data=rng.integers(0, 3, 20).astype(np.int64))
        with torch.no_grad():
            lat = tok.encode(torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255).numpy().astype(np.float16)
        w = ShardedArrayWriter(latents_root[vid], "latents", lat.shape[1:], np.float16, 8, 32)
        w.append(lat)
        w.close()
    return root


LEFTOVERS = ["reports/benchmark.tmp-4242-0badf00d/short_full.gif", "metrics/benchmark.json.tmp-4242-0badf00d",
             "metrics/benchmark_horizon.csv.tmp-4242-0badf00d", "metrics/benchmark_budget.csv.tmp-4242-0badf00d"]
FOREIGN = ["metrics/train.json.tmp-4242-0badf00d"]  # another stage's: not the benchmark's to remove


@pytest.fixture(scope="module")
def stage_output(project):
    """Runs the benchmark stage once in the project; its stdout."""
    import contextlib
    import io
    import os

    from stages import benchmark as stage

    for leftover in LEFTOVERS + FOREIGN:  # what a run killed while writing would leave
        (project / leftover).parent.mkdir(parents=True, exist_ok=True)
        (project / leftover).write_text("partial")
    cwd, buf = os.getcwd(), io.StringIO()
    os.chdir(project)
    try:
        with contextlib.redirect_stdout(buf):
            stage.main()
    finally:
        os.chdir(cwd)
    return buf.getvalue()


def test_stage_writes_metrics_tables_and_media(project, stage_output):
    lines = [line for line in stage_output.splitlines() if line.startswith("TEST_METRICS:")]
    assert len(lines) == 2 * 2 + 4  # budgets x policies (one mode) + four references (two of them copy oracles)
    data = json.loads((project / "metrics/benchmark.json").read_text())
    assert data["rollouts"]["short"]["tight"]["full_history"]["kv"]["n_frames_kept"] == 2
    assert data["rollouts"]["short"]["full"]["full_history"]["kv"]["n_frames_kept"] == 5
    assert data["sampling_steps"] == 2 and data["eval_mode"] == "real_rollout"
    rows = list(csv.DictReader(open(project / "metrics/benchmark_horizon.csv")))
    assert {r["policy"] for r in rows} == {"recent_window", "full_history", "persistence", "tokenizer_ceiling",
                                              "memory_all_past", "memory_last_2"}
    assert sorted(p.name for p in (project / "reports/benchmark").iterdir()) == ["short_full.gif", "short_tight.gif"]
    assert "short / budget tight / kv: PSNR dB (± s.e.), paired gap to full_history (± 95% CI)" in stage_output


def test_try_policy_runs_a_user_policy_and_compares_with_the_baselines(project, stage_output, monkeypatch, capsys):
    from pipeline.benchmark import try_policy

    monkeypatch.chdir(project)
    (project / "mine.py").write_text(textwrap.dedent('''
        from pipeline.rollout.api import ChunkDecision, TemporalCachePlan

        class OldestAndNewest:
            name = "oldest_and_newest"

            def build_temporal_cache_plan(self, metas, rollout_state, budget_state):
                keep = {0, len(metas) - 1}
                return TemporalCachePlan([ChunkDecision(m.chunk_id, "keep" if m.chunk_id in keep else "drop") for m in metas])
    '''))
    before = (project / "metrics/benchmark.json").read_text()
    assert try_policy.main(["--policy", "mine.py:OldestAndNewest", "--workload", "short", "--budget", "tight"]) == 0
    out = capsys.readouterr().out
    assert "TEST_METRICS: workload=short budget=tight policy=oldest_and_newest mode=kv" in out
    table = out[out.index("* = this run"):]
    assert "* oldest_and_newest" in table and "  recent_window" in table and "  full_history" in table
    assert (project / "metrics/benchmark.json").read_text() == before  # try_policy writes nothing
    assert "paired gap" not in out  # full_history did not run alongside: nothing to pair with


def test_try_policy_with_full_history_alongside_reports_the_paired_gap(project, stage_output, monkeypatch, capsys):
    from pipeline.benchmark import try_policy

    monkeypatch.chdir(project)
    assert try_policy.main(["--policy", "packcache", "--policy", "full_history", "--budget", "tight", "--clips", "3"]) == 0
    out = capsys.readouterr().out
    ranking = out[out.index("short / budget tight / kv: PSNR dB"):]
    assert re.search(r"^  packcache +\d+\.\d\d ± \d+\.\d\d +[+-]\d+\.\d\d ± \d+\.\d\d$", ranking, re.MULTILINE)
    assert re.search(r"^  full_history +\d+\.\d\d ± \d+\.\d\d +\+0\.00 ± 0\.00$", ranking, re.MULTILINE)


def test_try_policy_rejects_an_unknown_budget(project, monkeypatch):
    from pipeline.benchmark import try_policy

    monkeypatch.chdir(project)
    with pytest.raises(SystemExit, match="--budget 'huge'"):
        try_policy.main(["--policy", "packcache", "--budget", "huge"])


def test_the_stage_sweeps_the_temporary_outputs_a_killed_run_left(project, stage_output):
    assert not any((project / leftover).exists() for leftover in LEFTOVERS)
    assert [p.name for p in (project / "reports").iterdir()] == ["benchmark"]
    assert all((project / foreign).is_file() for foreign in FOREIGN)


@pytest.mark.parametrize("clips", ["-1", "0", "two"])
def test_try_policy_rejects_a_clip_count_that_is_not_a_positive_integer_naming_the_flag(clips, capsys):
    from pipeline.benchmark import try_policy

    with pytest.raises(SystemExit) as info:
        try_policy.main(["--policy", "packcache", "--clips", clips])
    assert info.value.code == 2
    assert "argument --clips:" in capsys.readouterr().err


BOOM = textwrap.dedent('''
    from pipeline.rollout.api import ChunkDecision, TemporalCachePlan

    class Boom:
        name = "boom"

        def build_temporal_cache_plan(self, metas, rollout_state, budget_state):
            if rollout_state.step == 1:
                raise ValueError("no plan for you")
            return TemporalCachePlan([ChunkDecision(m.chunk_id, "keep") for m in metas])
''')


def sibling(project: Path, root: Path, models: bool = True, **benchmark) -> Path:
    """A project in ``root`` that shares ``project``'s data (and models) with other benchmark params."""
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["benchmark"].update(benchmark)
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    (root / "data").symlink_to(project / "data")
    if models:
        (root / "models").symlink_to(project / "models")
    (root / "boom.py").write_text(BOOM)
    return root


def test_try_policy_names_a_policy_that_raises_without_a_traceback(project, monkeypatch, capsys):
    from pipeline.benchmark import try_policy

    monkeypatch.chdir(project)
    monkeypatch.delenv("PIPELINE_DEBUG", raising=False)
    (project / "boom.py").write_text(BOOM)
    with pytest.raises(SystemExit) as info:
        try_policy.main(["--policy", "boom.py:Boom", "--budget", "tight"])
    assert info.value.code == 1
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("try_policy:")]  # not tqdm's
    assert err[0] == "try_policy: policy 'boom' (boom.py:Boom) raised ValueError at step 1: no plan for you"
    assert len(err) == 2 and "PIPELINE_DEBUG=1" in err[1]
    from pipeline.rollout.loop import PolicyError

    with pytest.raises(PolicyError):
        try_policy.main(["--policy", "boom.py:Boom", "--budget", "tight", "--debug"])


def test_the_stage_names_a_policy_that_raises_and_shows_the_traceback_only_in_debug(project, tmp_path):
    import os
    import subprocess
    import sys

    root = sibling(project, tmp_path, policies=["recent_window", "boom.py:Boom"])
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("PIPELINE_DEBUG", None)
    proc = subprocess.run([sys.executable, "-m", "stages.benchmark"], cwd=root, env=env, capture_output=True, text=True)
    assert proc.returncode == 1
    assert "benchmark: policy 'boom' (boom.py:Boom) raised ValueError at step 1: no plan for you" in proc.stderr
    assert "Traceback" not in proc.stderr
    debug = subprocess.run([sys.executable, "-m", "stages.benchmark"], cwd=root, env={**env, "PIPELINE_DEBUG": "1"},
                           capture_output=True, text=True)
    assert debug.returncode != 0 and "Traceback" in debug.stderr and "ValueError: no plan for you" in debug.stderr


@pytest.mark.parametrize("benchmark, message", [
    ({"policies": ["recent_window", "full_history", "packcash"]},
     "benchmark: benchmark.policies[2]: policy 'packcash': not a baseline or built-in policy (recent_window, packcache, "
     "causalcache_vdm, flowcache, full_history, fifo, sink_recent, h2o, tova, rkv, random, pose_retrieval, pose_coverage)"),
    ({"policies": ["my_policy.py:Mine"]}, "benchmark: benchmark.policies[0]: policy 'my_policy.py:Mine': file "
     "my_policy.py not found"),
    ({"workloads": {"short": {"context": 3, "predict": 3}, "long": {"context": 12, "predict": 12}}},
     "benchmark: benchmark.workloads.long: data/frames.zarr: no test video has the 24 frames a 12 -> 12 workload "
     "needs (v_test: 20)"),
])
def test_the_stage_checks_policies_and_workloads_before_loading_models_or_touching_outputs(
        project, tmp_path, monkeypatch, capsys, benchmark, message):
    from stages import benchmark as stage

    root = sibling(project, tmp_path, models=False, **benchmark)  # without models: loading them would fail
    monkeypatch.chdir(root)
    monkeypatch.delenv("PIPELINE_DEBUG", raising=False)
    with pytest.raises(SystemExit) as info:
        stage.main()
    assert info.value.code == 1
    assert capsys.readouterr().err.startswith(message)
    assert not (root / "metrics").exists() and not (root / "reports").exists()


def test_try_policy_on_the_val_split_scores_other_clips_and_says_it_is_not_paired(project, stage_output, monkeypatch,
                                                                                   capsys):
    from pipeline.benchmark import try_policy

    monkeypatch.chdir(project)
    assert try_policy.main(["--policy", "full_history", "--budget", "tight", "--clips", "3"]) == 0
    test_out = capsys.readouterr().out
    assert try_policy.main(["--policy", "full_history", "--budget", "tight", "--clips", "3", "--split", "val"]) == 0
    val_out = capsys.readouterr().out
    line = "TEST_METRICS: workload=short budget=tight policy=full_history mode=kv"
    psnr = [re.search(re.escape(line) + r".* psnr=(\S+)", out).group(1) for out in (test_out, val_out)]
    assert psnr[0] != psnr[1]  # other videos
    assert "split=test" in val_out and "not a paired comparison" in val_out
