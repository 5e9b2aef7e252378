"""The tokenize and benchmark stages with several processes (torchrun, 2 gloo ranks on CPU)
write what one process writes, and the benchmark's metrics do not depend on its batch size;
run as users run them, from a tiny project directory (real stores, random small checkpoints)."""

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from pipeline.networks.checkpoint import save_checkpoint
from pipeline.networks.dynamics import build_dynamics, config_dict
from pipeline.networks.pose_memory import PoseStats
from pipeline.networks.tokenizer import build_tokenizer, tokenizer_config
from tests.builders import dynamics_config, write_frames_store
from tests.project_clone import PARAM_FILES, ProjectClone

REPO = Path(__file__).resolve().parents[1]
TIMINGS = {"fps", "policy_time_share", "seconds"}


def stage(root: Path, module: str, **sections) -> subprocess.CompletedProcess:
    """Run ``python -m <module>`` in ``root`` with these params sections updated."""
    ProjectClone(root).set_params(sections, commit=False)
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", module], cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """frames.zarr (32 px, a test video with poses), a tokenizer and a pose-conditioned dynamics
    model (random weights), and latents.zarr from the tokenize stage run by one process."""
    root = tmp_path_factory.mktemp("project")
    for name in PARAM_FILES:
        shutil.copy(REPO / name, root / name)
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["extract"]["size"] = 32
    params["benchmark"].update(  # whole tables replaced (set_params merges them)
        policies=["recent_window", "packcache", "full_history"], modes=["recompute", "kv"],
        workloads={"short": {"context": 3, "predict": 3}, "long": {"context": 7, "predict": 4}},
        budgets={"full": None, "tight": 2}, n_clips=5, sampling_steps=2,
    )
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    ProjectClone(root).set_params({"benchmark": {"seeds": [0], "media_clips": 1}}, commit=False)
    shutil.copytree(REPO / ".dvc" / "plots", root / ".dvc" / "plots")
    write_frames_store(root / "data/frames.zarr", poses_for=("v3",))
    torch.manual_seed(0)
    tok = build_tokenizer(tokenizer_config(dict(arch="conv", latent_channels=4, downsample=4, base_channels=8,
                                                patch_size=8), 32))
    dyn = build_dynamics(config_dict(dynamics_config((4, 8, 8), n_actions=4, dim=32, depth=2, heads=2, kv_heads=1,
                                                     patch_size=2, num_registers=1, temporal_every=2, k_max=4,
                                                     mlp_ratio=4.0, logit_softcap=50.0, poses=PoseStats((0.0, 0.0), 2.0))))
    torch.nn.init.normal_(dyn.patch_out.weight, std=0.1)
    save_checkpoint(root / "models/tokenizer", kind="tokenizer", config=tok.config, model=tok, ema=tok)
    save_checkpoint(root / "models/dynamics", kind="dynamics", config=config_dict(dyn.config), model=dyn, ema=dyn)
    stage(root, "stages.tokenize_frames", tokenize={"nproc_per_node": 1, "batch_size": 7})
    return root


def tree(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.mark.slow  # torchrun: three Python processes import torch (~30-60 s on the shared 2-core machine)
def test_tokenize_with_two_processes_writes_the_store_one_process_writes_byte_for_byte(project):
    one = tree(project / "data/latents.zarr")
    out = stage(project, "stages.tokenize_frames", tokenize={"nproc_per_node": 2, "batch_size": 7}).stdout
    assert "(2 processes)" in out and out.count("tokenize: ") == 1  # rank 0 reports alone
    two = tree(project / "data/latents.zarr")
    assert two.keys() == one.keys() and len(one) > 10
    assert two == one
    assert not [p for p in (project / "data").iterdir() if ".tmp-" in p.name]


def metrics(project: Path) -> dict:
    data = json.loads((project / "metrics/benchmark.json").read_text())
    data.pop("seconds")
    for entry in (m for b in data["rollouts"].values() for p in b.values() for ms in p.values() for m in ms.values()):
        for key in TIMINGS & entry.keys():
            entry.pop(key)
    return data


def table(path: Path) -> list[dict]:
    return [{k: v for k, v in row.items() if k not in TIMINGS} for row in csv.DictReader(open(path))]


def assert_same_numbers(a, b, where=""):
    """Equal structure and strings; numbers equal to float rounding (rows of another batch or
    shard go through BLAS kernels chosen for other matrix sizes)."""
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            assert_same_numbers(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same_numbers(x, y, f"{where}[{i}]")
    elif isinstance(a, float) or isinstance(b, float):
        # gap_closed divides two PSNR differences (here often ~0.01 dB) whose PSNRs (~20 dB) agree to 1e-5:
        # the rounding is amplified by PSNR / difference
        ratio = "gap_closed" in where
        assert a == pytest.approx(b, rel=1e-3 if ratio else 1e-5, abs=1e-3 if ratio else 1e-6), where
    else:
        try:
            assert float(a) == pytest.approx(float(b), rel=1e-5, abs=1e-6), where
        except (TypeError, ValueError):
            assert a == b, where


@pytest.mark.slow  # four benchmark runs, one of them under torchrun
def test_the_benchmark_batched_and_with_two_processes_scores_what_one_rollout_at_a_time_scores(project):
    runs = {}
    for batch, nproc in ((1, 1), (4, 1), (3, 2)):
        out = stage(project, "stages.benchmark", benchmark={"batch_size": batch, "nproc_per_node": nproc}).stdout
        assert f"batch size {batch}" in out and (nproc == 1 or "2 processes" in out)
        runs[(batch, nproc)] = (metrics(project), table(project / "metrics/benchmark_horizon.csv"),
                                table(project / "metrics/benchmark_budget.csv"),
                                sorted(p.name for p in (project / "reports/benchmark").iterdir()),
                                [line for line in out.splitlines() if line.startswith("TEST_METRICS") and "fps" not in line])
    reference = runs[(1, 1)]
    assert reference[0]["rollouts"]["long"]["full"]["full_history"]["kv"]["n_frames_kept"] == 10
    assert reference[3] == ["long_full.gif", "long_tight.gif", "short_full.gif", "short_tight.gif"]
    for key, got in runs.items():
        assert_same_numbers(got[0], reference[0], f"metrics {key}")
        assert_same_numbers(got[1], reference[1], f"horizon {key}")
        assert_same_numbers(got[2], reference[2], f"budget {key}")
        assert got[3] == reference[3] and got[4] == reference[4]
