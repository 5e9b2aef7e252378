"""Clips, rollouts, metrics and outputs of the benchmark, on small real zarr stores and the
deterministic toy host (no trained model needed)."""

import csv
import json
import re

import numpy as np
import pytest
import torch
import zarr

from pipeline.benchmark import run as bm
from pipeline.config import BenchmarkParams
from pipeline.data.stores import ShardedArrayWriter
from tests.rollout.toy_host import ToyHost

VIDEOS = {"a_train": ("train", 60), "b_test": ("test", 40), "c_test": ("test", 12), "d_val": ("val", 40)}


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    root = tmp_path_factory.mktemp("stores")
    frames_root = zarr.open_group(str(root / "frames.zarr"), mode="w")
    latents_root = zarr.open_group(str(root / "latents.zarr"), mode="w")
    host = ToyHost()
    rng = np.random.default_rng(0)
    for vid, (split, n) in VIDEOS.items():
        # a moving gradient: consecutive frames are similar, so the scores are not all noise
        x = np.linspace(0, 1, 64)
        frames = np.stack([(np.add.outer(x, x)[..., None] * 0.5 + 0.3 * np.sin(t / 4 + np.arange(3)))
                           .clip(0, 1) for t in range(n)])
        frames = (frames * 255).astype(np.uint8) + rng.integers(0, 3, frames.shape, dtype=np.uint8)
        for root_, attrs in ((frames_root, {"split": split, "fps": 20.0}), (latents_root, {"split": split})):
            g = root_.create_group(vid)
            g.attrs.update(attrs)
        w = ShardedArrayWriter(frames_root[vid], "frames", (64, 64, 3), np.uint8, 8, 64)
        w.append(frames)
        w.close()
        frames_root[vid].create_array("actions", data=np.arange(n, dtype=np.int64) % 3)
        lat = host.encode(torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255).numpy().astype(np.float16)
        w = ShardedArrayWriter(latents_root[vid], "latents", lat.shape[1:], np.float16, 8, 64)
        w.append(lat)
        w.close()
    return root / "frames.zarr", root / "latents.zarr"


def bench_params(**kw):
    base = dict(policies=["recent_window", "full_history"], modes=["recompute", "kv"],
                workloads={"short": {"context": 3, "predict": 4}, "long": {"context": 10, "predict": 6}},
                budgets={"full": None, "tight": 2}, n_clips=2, seeds=[0], sampling_steps=4, media_clips=1)
    base.update(kw)
    return BenchmarkParams(**base)


@pytest.fixture(scope="module")
def scorer():
    return bm.Scorer()


def run(stores, scorer, bench=None, seed=0):
    bench = bench or bench_params()
    frames, latents = stores
    clips = {name: bm.select_clips(frames, latents, w.context, w.predict, bench.n_clips, seed)
             for name, w in bench.workloads.items()}
    return bm.run_benchmark(ToyHost(), bench, clips, seed=seed, media_clips=bench.media_clips, scorer=scorer,
                            progress=False)


# ------------------------------------------------------------------ clips
def test_clips_come_only_from_test_videos_long_enough(stores):
    frames, latents = stores
    clips = bm.select_clips(frames, latents, 10, 6, 5, seed=0)
    assert {c.video_id for c in clips} == {"b_test"}  # c_test has only 12 frames; train/val never
    short = bm.select_clips(frames, latents, 3, 4, 6, seed=0)
    assert {c.video_id for c in short} == {"b_test", "c_test"}
    for c in short:
        assert c.pixels.shape == (7, 3, 64, 64) and c.context_latents.shape == (3, 3, 32, 32)
        assert 0 <= c.start <= VIDEOS[c.video_id][1] - 7


def test_clip_selection_is_deterministic_in_the_seed(stores):
    frames, latents = stores
    starts = lambda seed: [(c.video_id, c.start) for c in bm.select_clips(frames, latents, 3, 4, 6, seed)]  # noqa: E731
    assert starts(0) == starts(0)
    assert starts(0) != starts(1)


def test_clip_actions_are_the_actions_that_led_to_each_frame(stores):
    frames, latents = stores
    for c in bm.select_clips(frames, latents, 3, 4, 4, seed=0):
        recorded = np.arange(VIDEOS[c.video_id][1]) % 3
        expected = [recorded[t - 1] if t > 0 else -1 for t in range(c.start, c.start + 7)]
        assert c.actions.tolist() == expected


def test_no_long_enough_test_video_is_a_clear_error(stores):
    frames, latents = stores
    with pytest.raises(bm.BenchmarkError, match="no test video has the 100 frames a 50 -> 50 workload needs"):
        bm.select_clips(frames, latents, 50, 50, 1, seed=0)


# ------------------------------------------------------------------ metrics
def test_temporal_quality_maps_psnr_linearly_capped_at_40_db():
    assert bm.temporal_quality(20.0) == 50.0
    assert bm.temporal_quality(48.0) == 100.0


def test_metric_values_on_known_images(scorer):
    target = torch.full((2, 3, 64, 64), 0.6)
    pred = torch.full((2, 3, 64, 64), 0.5)  # MSE 0.01 -> PSNR 20 dB
    out = scorer(pred, target)
    assert out["psnr"] == pytest.approx([20.0, 20.0], abs=1e-4)
    assert all(0 < s < 1 for s in out["ssim"])
    same = scorer(target, target)
    assert same["ssim"] == pytest.approx([1.0, 1.0]) and same["lpips"] == pytest.approx([0.0, 0.0], abs=1e-6)


def test_benchmark_runs_every_cell_and_writes_stable_outputs(stores, scorer, tmp_path):
    result = run(stores, scorer)
    assert len(result.records) == 2 * 2 * 2 * 2 * 2  # workloads x clips x budgets x policies x modes
    info = {"host": "toy", "sampling_steps": 4}
    summary, refs, lines = bm.write_outputs(result, {"full": None, "tight": 2}, info, tmp_path / "b.json",
                                            tmp_path / "h.csv", tmp_path / "bud.csv")
    data = json.loads((tmp_path / "b.json").read_text())
    assert data["eval_mode"] == "real_rollout"
    cell = data["rollouts"]["short"]["tight"]["recent_window"]["kv"]
    assert set(cell) == set(bm.JSON_KEYS)
    assert cell["n_frames_kept"] == 2 and cell["peak_kv_memory_mb"] > 0
    assert data["rollouts"]["long"]["full"]["full_history"]["recompute"]["n_frames_kept"] == 15  # 10 + 6 - 1
    assert data["rollouts"]["long"]["tight"]["full_history"]["recompute"]["n_frames_kept"] == 2
    assert cell["temporal_quality_main"] == pytest.approx(min(100, cell["psnr"] / 40 * 100))
    assert set(data["references"]["short"]) == {"persistence", "tokenizer_ceiling"}
    # the toy host's ceiling (pooling) is far better than its rollouts
    assert data["references"]["short"]["tokenizer_ceiling"]["psnr"] > cell["psnr"]

    assert len(lines) == 2 * 2 * 2 * 2 + 2 * 2
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


def test_kv_and_recompute_score_the_same_under_full_history(stores, scorer):
    summary = bm.summarize(run(stores, scorer, bench_params(policies=["full_history"], budgets={"full": None})))
    for workload in ("short", "long"):
        a, b = summary[(workload, "full", "full_history", "recompute")], summary[(workload, "full", "full_history", "kv")]
        assert a["psnr"] == b["psnr"] and a["lpips"] == b["lpips"]


def test_same_seed_same_metrics(stores, scorer):
    bench = bench_params(modes=["kv"], workloads={"short": {"context": 3, "predict": 4}})
    strip = lambda s: {k: {m: v for m, v in e.items() if m not in ("fps", "policy_time_share")} for k, e in s.items()}  # noqa: E731
    a = strip(bm.summarize(run(stores, scorer, bench)))
    b = strip(bm.summarize(run(stores, scorer, bench)))
    c = strip(bm.summarize(run(stores, scorer, bench, seed=5)))
    assert a == b
    assert a != c


def test_media_grid_has_a_column_per_policy(stores, scorer, tmp_path):
    import imageio.v3 as iio

    bench = bench_params()
    result = run(stores, scorer, bench)
    paths = bm.write_media(result, tmp_path, bench.workloads, mode="recompute")
    assert sorted(p.name for p in paths) == ["long_full.gif", "long_tight.gif", "short_full.gif", "short_tight.gif"]
    frames = iio.imread(tmp_path / "short_tight.gif")
    # 4 predicted frames; 4 columns (truth, persistence, 2 policies) of 128 px tiles + gaps, 1 clip row
    assert frames.shape[0] == 4 and frames.shape[2] == 4 * (128 + 2)


def test_a_rollout_within_a_smaller_budget_is_reused_and_identical(stores, scorer):
    bench = bench_params(policies=["recent_window", "full_history"], modes=["kv"])
    both = run(stores, scorer, bench)
    reused = {(r.cell.workload, r.cell.budget, r.cell.policy) for r in both.records if r.reused}
    # recent_window keeps 2 frames: the tight (2) rollouts are those of the full budget
    assert reused == {("short", "tight", "recent_window"), ("long", "tight", "recent_window")}
    alone = run(stores, scorer, bench_params(policies=["recent_window"], modes=["kv"], budgets={"tight": 2}))
    key = lambda rs: [(r.cell.workload, r.clip, r.per_frame) for r in rs if r.cell.budget == "tight" and r.cell.policy == "recent_window"]  # noqa: E731
    assert key(both.records) == key(alone.records)


def test_policies_that_may_read_the_budget_are_always_rerun(stores, scorer, tmp_path):
    path = tmp_path / "window.py"
    path.write_text(
        "from pipeline.rollout.policies import RecentWindow\n"
        "class MyWindow(RecentWindow):\n"
        "    name = 'my_window'\n"
        "    uses_budget_state = True\n"
    )
    result = run(stores, scorer, bench_params(policies=[f"{path}:MyWindow"], modes=["kv"]))
    assert not any(r.reused for r in result.records)


def test_each_policy_gets_a_standard_error_and_a_paired_gap_to_full_history(stores, scorer):
    result = run(stores, scorer)
    summary = bm.summarize(result)
    for (workload, budget, policy, mode), e in summary.items():
        recs = [r for r in result.records if (r.cell.workload, r.cell.budget, r.cell.policy, r.cell.mode)
                == (workload, budget, policy, mode)]  # fmt: skip
        base = {(r.clip, r.seed): np.mean(r.per_frame["psnr"]) for r in result.records
                if (r.cell.workload, r.cell.budget, r.cell.policy, r.cell.mode) == (workload, budget, "full_history", mode)}  # fmt: skip
        gaps = [np.mean(r.per_frame["psnr"]) - base[(r.clip, r.seed)] for r in recs]
        assert e["psnr_vs_full_history"] == pytest.approx(np.mean(gaps))
        assert e["psnr_sem"] == pytest.approx(np.std([np.mean(r.per_frame["psnr"]) for r in recs], ddof=1) / np.sqrt(2))
        assert e["psnr_vs_full_history_ci95"] >= 0
    assert summary[("short", "full", "full_history", "kv")]["psnr_vs_full_history"] == 0.0
    lines = bm.ranking_lines(summary)
    assert lines[0] == "short / budget full / recompute: PSNR dB (± s.e.), paired gap to full_history (± 95% CI)"
    assert re.match(r"^  (recent_window|full_history) +\d+\.\d\d ± \d+\.\d\d +[+-]\d+\.\d\d ± \d+\.\d\d$", lines[1])


def test_without_full_history_there_is_no_gap_but_still_a_standard_error(stores, scorer):
    summary = bm.summarize(run(stores, scorer, bench_params(policies=["recent_window"])))
    for e in summary.values():
        assert e["psnr_vs_full_history"] is None and e["psnr_vs_full_history_ci95"] is None
        assert e["psnr_sem"] is not None
