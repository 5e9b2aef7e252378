"""Rollouts of the benchmark on small real zarr stores and the deterministic toy host (no
trained model needed): every cell, scores, seeds, and the reuse of rollouts across budgets."""

import pytest
import torch

from pipeline.benchmark.summary import summarize
from tests.benchmark.toy import bench_params, run


def test_metric_values_on_known_images(scorer):
    target = torch.full((2, 3, 64, 64), 0.6)
    pred = torch.full((2, 3, 64, 64), 0.5)  # MSE 0.01 -> PSNR 20 dB
    out = scorer(pred, target)
    assert out["psnr"] == pytest.approx([20.0, 20.0], abs=1e-4)
    assert all(0 < s < 1 for s in out["ssim"])
    same = scorer(target, target)
    assert same["ssim"] == pytest.approx([1.0, 1.0]) and same["lpips"] == pytest.approx([0.0, 0.0], abs=1e-6)


def test_kv_and_recompute_score_the_same_under_full_history(stores, scorer):
    summary = summarize(run(stores, scorer, bench_params(policies=["full_history"], budgets={"full": None})))
    for workload in ("short", "long"):
        a, b = summary[(workload, "full", "full_history", "recompute")], summary[(workload, "full", "full_history", "kv")]
        assert a["psnr"] == b["psnr"] and a["lpips"] == b["lpips"]


def test_same_seed_same_metrics(stores, scorer):
    bench = bench_params(modes=["kv"], workloads={"short": {"context": 3, "predict": 4}})
    strip = lambda s: {k: {m: v for m, v in e.items() if m not in ("fps", "policy_time_share")} for k, e in s.items()}  # noqa: E731
    a = strip(summarize(run(stores, scorer, bench)))
    b = strip(summarize(run(stores, scorer, bench)))
    c = strip(summarize(run(stores, scorer, bench, seed=5)))
    assert a == b
    assert a != c


def test_a_rollout_within_a_smaller_budget_is_reused_and_identical(stores, scorer):
    bench = bench_params(policies=["recent_window", "full_history"], modes=["kv"])
    both = run(stores, scorer, bench)
    reused = {(r.cell.workload, r.cell.budget, r.cell.policy) for r in both.records if r.reused}
    # recent_window keeps 2 frames: the tight (2) rollouts are those of the full budget
    assert reused == {("short", "tight", "recent_window"), ("long", "tight", "recent_window")}
    alone = run(stores, scorer, bench_params(policies=["recent_window"], modes=["kv"], budgets={"tight": 2}))
    key = lambda rs: [(r.cell.workload, r.clip, r.per_frame) for r in rs  # noqa: E731
                      if r.cell.budget == "tight" and r.cell.policy == "recent_window"]
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


def test_under_no_budget_policies_that_keep_every_frame_share_one_rollout_identical_to_their_own(stores, scorer):
    policies = ["full_history", "h2o", "random", "oracle_copy"]
    together = run(stores, scorer, bench_params(policies=policies, modes=["kv"]))
    reused = {(r.cell.workload, r.cell.budget, r.cell.policy) for r in together.records if r.reused}
    assert reused == {(w, "full", p) for w in ("short", "long") for p in policies[1:]}
    key = lambda rs, p: [(r.cell.workload, r.clip, r.per_frame, r.kept_per_step)  # noqa: E731
                         for r in rs if r.cell.budget == "full" and r.cell.policy == p]
    for policy in policies[1:]:  # each run on its own gives what it shared
        alone = run(stores, scorer, bench_params(policies=[policy], modes=["kv"], budgets={"full": None}))
        assert not any(r.reused for r in alone.records)
        assert key(together.records, policy) == key(alone.records, policy) == key(together.records, "full_history")


def test_a_policy_that_replaces_the_keep_all_rule_runs_its_own_rollout_under_no_budget(stores, scorer, tmp_path):
    path = tmp_path / "capped.py"
    path.write_text(
        "from pipeline.rollout.retention import SinkRecent\n"
        "class Capped(SinkRecent):\n"
        "    name = 'capped'\n"
        "    def build_temporal_cache_plan(self, metas, state, budget_state):  # a budget of 2 even when there is none\n"
        "        return super().build_temporal_cache_plan(metas, state, {**budget_state, 'max_frames': 2})\n"
    )
    records = run(stores, scorer, bench_params(policies=["full_history", f"{path}:Capped"], modes=["kv"])).records
    capped = [r for r in records if r.cell.policy == "capped" and r.cell.budget == "full"]
    assert capped and not any(r.reused for r in capped)
    assert max(max(r.kept_per_step) for r in capped) <= 2


HARNESS_STYLE_POLICY = '''
class VideoTemporalKVPolicy:
    """recent_window's rule, written as for the published harness: its names are not imported."""

    def build_temporal_cache_plan(self, chunk_meta_list: List[FrameMeta], rollout_state, budget_state) -> TemporalCachePlan:
        decisions = [ChunkDecision(chunk_id=m.chunk_id, action="keep" if m.recentness >= 0.34 else "drop",
                                   priority=m.recentness) for m in chunk_meta_list]
        return TemporalCachePlan(chunk_decisions=decisions, retention_family="recency")
'''


def test_a_harness_style_policy_file_loads_unchanged_and_scores_what_the_same_builtin_rule_scores(stores, scorer, tmp_path):
    path = tmp_path / "custom_policy.py"
    path.write_text(HARNESS_STYLE_POLICY)
    bench = bench_params(policies=["recent_window", f"{path}:VideoTemporalKVPolicy"], modes=["recompute", "kv"],
                         protocol="harness")
    records = run(stores, scorer, bench).records
    by_policy = {}
    for r in records:
        by_policy.setdefault(r.cell.policy, []).append((r.cell.workload, r.cell.budget, r.cell.mode, r.clip,
                                                         r.per_frame, r.kept_per_step))
    assert by_policy["recent_window"] == by_policy["VideoTemporalKVPolicy"]
    assert by_policy["recent_window"][0][-1][0] > 2  # the harness: the first frame from the whole context


TIMINGS = ("fps", "policy_time_share", "seconds")


def metrics_without_timings(run_) -> dict:
    """The metrics JSON of a run, minus what measures time."""
    from pipeline.benchmark.outputs import metrics_json
    from pipeline.benchmark.summary import summarize_references

    data = metrics_json(summarize(run_), summarize_references(run_), {})
    for modes in (m for b in data["rollouts"].values() for p in b.values() for m in p.values()):
        for entry in modes.values():
            for key in TIMINGS:
                entry.pop(key, None)
    return data


def test_the_metrics_do_not_depend_on_the_batch_size_or_the_sharding(stores, scorer):
    from pipeline.benchmark.run import merge_runs

    bench = bench_params(n_clips=3, batch_size=1)
    one = run(stores, scorer, bench)
    four = run(stores, scorer, bench.model_copy(update={"batch_size": 4}))
    assert metrics_without_timings(four) == metrics_without_timings(one)  # exactly
    assert [(r.cell, r.clip, r.per_frame, r.kept_per_step, r.reused) for r in four.records] == \
        [(r.cell, r.clip, r.per_frame, r.kept_per_step, r.reused) for r in one.records]  # same order too
    for a, b in zip(one.records, four.records):
        assert (a.pixels is None) == (b.pixels is None) and (a.pixels is None or torch.equal(a.pixels, b.pixels))

    frames, latents = stores
    from pipeline.benchmark.clips import select_clips
    from pipeline.benchmark.run import run_benchmark
    from tests.rollout.toy_host import ToyHost

    clips = {name: select_clips(frames, latents, w.context, w.predict, bench.n_clips, 0)
             for name, w in bench.workloads.items()}
    shares = [run_benchmark(ToyHost(), bench, clips, seed=0, media_clips=bench.media_clips, scorer=scorer,
                            progress=False, batch_size=2, shard=(rank, 2)).share() for rank in (0, 1)]
    merged = merge_runs(shares, clips, bench.budgets, bench)
    assert metrics_without_timings(merged) == metrics_without_timings(one)
    assert [r.per_frame for r in merged.records] == [r.per_frame for r in one.records]
    assert len({r.clip for r in shares[0]["records"]}) == 2 and {r.clip for r in shares[1]["records"]} == {1}


def test_frame_scores_do_not_depend_on_which_rollouts_share_a_chunk(scorer):
    """Decoded and scored in chunks of one size across rollouts: a frame's numbers are the same
    whatever came before it (oneDNN convolutions otherwise pick algorithms by batch size)."""
    from pipeline.benchmark.run import FrameScorer
    from tests.rollout.toy_host import ToyHost

    g = torch.Generator().manual_seed(0)
    videos = [(torch.rand(n, 3, 32, 32, generator=g), torch.rand(n, 3, 64, 64, generator=g)) for n in (5, 11, 3, 9, 14)]

    def scores(order, chunk):
        out = {}
        frames = FrameScorer(ToyHost(), scorer, chunk=chunk)
        for i in order:
            frames.put(*videos[i], lambda px, s, i=i: out.__setitem__(i, (px, s)))
        frames.flush()
        return out

    a, b = scores([0, 1, 2, 3, 4], 16), scores([3, 4, 2, 1, 0], 16)
    assert a.keys() == b.keys() == {0, 1, 2, 3, 4}
    for i in a:
        assert a[i][1] == b[i][1] and torch.equal(a[i][0], b[i][0]) and len(a[i][1]["lpips"]) == len(videos[i][0])
