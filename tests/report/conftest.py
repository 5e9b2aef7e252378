"""A small benchmark result, shaped as metrics/benchmark.json is (two workloads, a limited and an
unlimited budget, two modes), with the other files the report reads."""

import copy
import json

import numpy as np
import pytest
from PIL import Image

POLICIES = ("recent_window", "packcache", "full_history")


def cell(psnr, gap=None, ci95=None, lpips=0.1):
    return {"temporal_quality_main": psnr / 40 * 100, "psnr": psnr, "psnr_sem": 0.3, "psnr_vs_full_history": gap,
            "psnr_vs_full_history_ci95": ci95, "ssim": 0.8, "lpips": lpips, "fps": 50.0, "peak_kv_memory_mb": 0.1,
            "peak_retained_bytes": 1000, "n_frames_kept": 4, "mean_frames_kept": 3.5, "policy_time_share": 0.01}


def benchmark_json(references_extra=None):
    rollouts = {}
    for w, base in (("short", 23.0), ("long", 22.0)):
        rollouts[w] = {
            "full": {"recent_window": {"recompute": cell(base - 0.3, -0.3, 0.2), "kv": cell(base - 0.3, -0.29, 0.2)},
                     "packcache": {"recompute": cell(base - 0.1, -0.1, 0.4), "kv": cell(base - 0.1, -0.1, 0.4)},
                     "full_history": {"recompute": cell(base, 0.0, 0.0, lpips=0.08), "kv": cell(base, 0.0, 0.0)}},
            "tight": {"recent_window": {"recompute": cell(base - 0.5, 0.4, 0.1), "kv": cell(base - 0.5, 0.5, 0.3)},
                      "packcache": {"recompute": cell(base - 0.2, 0.6, 0.9), "kv": cell(base - 0.2, 0.1, 0.05)},
                      "full_history": {"recompute": cell(base - 0.9, 0.0, 0.0), "kv": cell(base - 0.9, 0.0, 0.0)}},
        }
    refs = {w: {"persistence": {"temporal_quality_main": 50, "psnr": 21.0, "ssim": 0.8, "lpips": 0.09},
                "tokenizer_ceiling": {"temporal_quality_main": 94, "psnr": 37.0, "ssim": 0.98, "lpips": 0.002}}
            for w in rollouts}
    for w, extra in (references_extra or {}).items():
        refs[w].update(copy.deepcopy(extra))
    return {"eval_mode": "real_rollout", "host": "pipeline", "sampling_steps": 4, "n_clips": 4, "n_seeds": 1,
            "device": "cpu", "seconds": 12.5, "budgets": {"full": None, "tight": 4}, "references": refs,
            "rollouts": rollouts}


@pytest.fixture
def run_dir(tmp_path):
    """metrics/, dvclive/ and reports/benchmark of a small run, as the stages write them."""
    bench = benchmark_json()
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics/benchmark.json").write_text(json.dumps(bench))
    (tmp_path / "metrics/tokenizer.json").write_text(json.dumps({"val": {"psnr": 37.7, "ssim": 0.98, "lpips": 0.003}}))
    (tmp_path / "metrics/train.json").write_text(json.dumps({"tau_min": 0.0625, "tau_max": 1.0, "steps": 600}))
    rows = ["workload,budget,mode,policy,horizon,psnr,ssim,lpips"]
    for w in bench["rollouts"]:
        for b in bench["budgets"]:
            for m in ("recompute", "kv"):
                for p in (*POLICIES, "persistence", "tokenizer_ceiling"):
                    rows += [f"{w},{b},{m},{p},{h},{25 - h * 0.5},0.8,{0.05 + h * 0.01}" for h in (1, 2, 3)]
    (tmp_path / "metrics/benchmark_horizon.csv").write_text("\r\n".join(rows) + "\r\n")
    for stage, names in (("tokenizer", ("train/loss", "val/psnr", "val/persistence_psnr")),
                         ("train", ("train/loss", "train/lr", "val/psnr_tau_0.1", "val/input_psnr_tau_0.1",
                                    "val/persistence_psnr"))):
        for name in names:
            tsv = tmp_path / "dvclive" / stage / "plots/metrics" / f"{name}.tsv"
            tsv.parent.mkdir(parents=True, exist_ok=True)
            key = name.split("/")[-1]
            tsv.write_text(f"step\t{key}\n" + "".join(f"{s}\t{1.0 / s if 'loss' in key else 20 + s / 100}\n"
                                                     for s in (100, 200, 300)))
    media = tmp_path / "reports/benchmark"
    media.mkdir(parents=True)
    frames = [Image.fromarray(np.full((8, 20, 3), 40 * i, np.uint8)) for i in range(3)]
    for w in bench["rollouts"]:
        for b in ("full", "tight"):
            frames[0].save(media / f"{w}_{b}.gif", save_all=True, append_images=frames[1:], duration=100)
    return tmp_path
