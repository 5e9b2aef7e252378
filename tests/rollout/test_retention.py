"""The budget-reading policies of pipeline.rollout.retention on hand-built FrameMeta lists: the
budget is respected, the newest kept, the right frames chosen, fallbacks without poses or
attention, the same plan for the same input, nothing carried between clips."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from pipeline.rollout.api import FrameMeta, RolloutState, TemporalCachePlan
from pipeline.rollout.loop import apply_plan, run_rollout
from pipeline.rollout.policies import BASELINES, POLICIES, load_policy
from pipeline.rollout.retention import (
    FIFO,
    H2O,
    RKV,
    TOVA,
    PoseRetrieval,
    SinkRecent,
    attention_prior,
    attention_shares,
    candidates_step,
    context_flags,
    pose_distances,
    similarity_matrix,
)
from tests.rollout.toy_host import ToyHost

BUDGET_POLICIES = ["fifo", "sink_recent", "h2o", "tova", "rkv", "random", "pose_retrieval", "pose_coverage"]


def meta(i, n, *, time=None, pose=None, attention=None, sim=1.0, access=0) -> FrameMeta:
    """Frame i of n (oldest first); age counts from the newest; time defaults to i."""
    age = n - 1 - i
    return FrameMeta(chunk_id=i, age=age, dynamic_age=age, recentness=1 / (1 + age), size_mb=0.01,
                     boundary_score=0.0, feature_drift=0.0, temporal_similarity=sim, motion_strength=0.0,
                     keyframe_score=0.0, access_count=access, time=i if time is None else time, pose=pose,
                     attention_mass=attention)


def frames(n, *, poses=None, attention=None, sims=None, times=None, access=None):
    return [meta(i, n, pose=None if poses is None else poses[i],
                 attention=None if attention is None else attention[i],
                 sim=1.0 if sims is None else sims[i], time=None if times is None else times[i],
                 access=0 if access is None else access[i]) for i in range(n)]


MODEL_RATE = 50.0  # a host model's initial pose-bias rate (RolloutState.pose_bias_rate)


def state(step=5, target=None, rate=MODEL_RATE, upcoming=None) -> RolloutState:
    target = upcoming[0] if upcoming and target is None else target
    return RolloutState(step=step, budget_capacity_mb=1.0, total_steps=36, target_pose=target, pose_bias_rate=rate,
                        upcoming_poses=upcoming)


def budget(n) -> dict:
    return {"max_frames": n, "capacity_mb": math.inf if n is None else n * 0.01}


def kept(policy, metas, st, max_frames) -> list[int]:
    """chunk_ids the plan keeps (the loop's rule: keep/demote + newest), checking the plan's form."""
    policy = load_policy(policy) if isinstance(policy, str) else policy
    plan = policy.build_temporal_cache_plan(metas, st, budget(max_frames))
    assert isinstance(plan, TemporalCachePlan)
    assert [d.chunk_id for d in plan.chunk_decisions] == [m.chunk_id for m in metas]
    marked = [d.chunk_id for d in plan.chunk_decisions if d.action != "drop"]
    if max_frames is not None:
        assert len(set(marked) | {len(metas) - 1}) <= max_frames, "more frames marked than the budget"
    keep, _ = apply_plan(plan, len(metas), max_frames, policy.name)
    assert sorted(set(marked) | {len(metas) - 1}) == keep, "the loop's oldest-first cut changed the choice"
    return keep


# ------------------------------------------------------------------ registry
def test_registry_names_baselines_and_ours():
    assert set(BASELINES) == {"recent_window", "packcache", "causalcache_vdm", "flowcache", "full_history",
                              "fifo", "sink_recent", "h2o", "tova", "rkv", "random"}
    assert set(POLICIES) == set(BASELINES) | {"pose_retrieval", "pose_coverage"}
    for name in POLICIES:
        policy = load_policy(name)
        assert policy.name == name
        assert policy.__doc__ and ("arXiv" in policy.__doc__ or name in ("full_history", "recent_window", "random",
                                                                          "pose_coverage"))
    for name in BUDGET_POLICIES:
        assert load_policy(name).uses_budget_state is True


# ------------------------------------------------------------------ common contract
@pytest.mark.parametrize("name", BUDGET_POLICIES)
@pytest.mark.parametrize("max_frames", [1, 2, 3, 5])
@pytest.mark.parametrize("signals", ["none", "poses", "attention", "both"])
def test_budget_respected_and_newest_kept(name, max_frames, signals):
    n = 9
    poses = [(10.0 * (i % 3), 0.0, 45.0 * i) for i in range(n)] if signals in ("poses", "both") else None
    attention = [None if i == n - 1 else (i % 4 + 1) / 30 for i in range(n)] if signals in ("attention", "both") else None
    metas = frames(n, poses=poses, attention=attention, sims=[0.5 + 0.05 * i for i in range(n)])
    keep = kept(name, metas, state(target=(0.0, 0.0, 90.0) if poses else None), max_frames)
    assert len(keep) == min(n, max_frames)
    assert n - 1 in keep


@pytest.mark.parametrize("name", BUDGET_POLICIES)
def test_everything_is_kept_within_the_budget_or_without_one(name):
    metas = frames(5, poses=[(0.0, 0.0, 90.0 * i) for i in range(5)])
    assert kept(name, metas, state(target=(0.0, 0.0, 0.0)), None) == [0, 1, 2, 3, 4]
    assert kept(name, metas, state(target=(0.0, 0.0, 0.0)), 5) == [0, 1, 2, 3, 4]
    assert kept(name, metas[:1], state(step=0), 1) == [0]


@pytest.mark.parametrize("name", BUDGET_POLICIES)
def test_same_input_same_plan_and_no_state_between_clips(name):
    """Stateless: a clip's plan does not depend on what the instance saw before (another clip,
    other steps), and the metas are not modified."""
    policy = load_policy(name)
    clip_a = frames(8, poses=[(5.0 * i, 0.0, 30.0 * i) for i in range(8)],
                    attention=[0.2, 0.01, 0.3, 0.05, 0.1, 0.04, 0.3, None], access=[7, 6, 5, 4, 3, 2, 1, 0])
    clip_b = frames(8, poses=[(0.0, 3.0 * i, -40.0 * i) for i in range(8)],
                    attention=[0.01, 0.5, 0.02, 0.2, 0.03, 0.04, 0.2, None])
    before = copy.deepcopy(clip_a)
    first = policy.build_temporal_cache_plan(clip_a, state(target=(40.0, 0.0, 240.0)), budget(3))
    for step in range(4):  # another clip in between, several steps
        policy.build_temporal_cache_plan(clip_b, state(step=step, target=(0.0, 30.0, 0.0)), budget(3))
    again = load_policy(name).build_temporal_cache_plan(clip_a, state(target=(40.0, 0.0, 240.0)), budget(3))
    assert policy.build_temporal_cache_plan(clip_a, state(target=(40.0, 0.0, 240.0)), budget(3)) == first == again
    assert clip_a == before


@pytest.mark.parametrize("name", BUDGET_POLICIES)
@pytest.mark.parametrize("mode", ["recompute", "kv"])
def test_policies_run_in_the_loop_under_every_budget(name, mode):
    g = torch.Generator().manual_seed(0)
    context = torch.rand(6, 3, 4, 4, generator=g)
    poses = [(float(t), 0.0, 22.5 * t) for t in range(11)]
    for max_frames in (1, 3, None):
        host = ToyHost()
        result = run_rollout(host, load_policy(name), context, 5, max_frames=max_frames, mode=mode,
                             generator=torch.Generator().manual_seed(0), poses=poses)
        assert host.seen_history_lengths == result.kept_per_step
        assert max(result.kept_per_step) <= (max_frames or 99)
        assert all(h[-1] == 5 + s for s, h in enumerate(result.history_per_step))  # the newest is always there


# ------------------------------------------------------------------ baselines
def test_fifo_keeps_the_newest_budget():
    assert kept("fifo", frames(7), state(), 3) == [4, 5, 6]


def test_sink_recent_keeps_the_clip_start_and_the_newest():
    assert kept("sink_recent", frames(7), state(), 3) == [0, 5, 6]
    # the sink is the frame with the smallest clip time, wherever it sits
    metas = frames(5, times=[3, 0, 4, 5, 6])
    assert kept("sink_recent", metas, state(), 3) == [1, 3, 4]
    assert kept("sink_recent", frames(7), state(), 1) == [6]


def test_tova_keeps_what_the_newest_query_attended_most():
    metas = frames(6, attention=[0.30, 0.05, 0.40, 0.05, 0.20, None])
    assert kept("tova", metas, state(), 3) == [0, 2, 5]


def test_h2o_splits_the_budget_between_recent_frames_and_accumulated_attention():
    # accumulated ~ share x steps retained: frame 1 (0.1 x 10) beats frame 0 (0.3 x 2)
    metas = frames(7, attention=[0.3, 0.1, 0.05, 0.05, 0.2, 0.3, None], access=[2, 10, 3, 3, 1, 1, 0])
    assert kept("h2o", metas, state(), 4) == [0, 1, 5, 6]  # 2 recent + 2 heavy hitters (1.0, 0.6 > 0.2, 0.15)
    assert kept("h2o", metas, state(), 3) == [1, 5, 6]


def test_rkv_trades_attention_against_redundancy():
    # two near-identical frames (2, 3) that get the most attention, and a distinct frame 1 (a
    # scene change before it) that gets a little: R-KV keeps one of the twins and the distinct one
    sims = [1.0, 0.1, 0.2, 0.99, 0.2, 0.5]
    metas = frames(6, attention=[0.05, 0.10, 0.30, 0.30, 0.10, None], sims=sims)
    keep = kept("rkv", metas, state(), 3)
    assert 5 in keep and len(keep) == 3
    assert not {2, 3} <= set(keep)
    # the chain: neighbours exact, frames further apart the product of the steps between them
    sim = similarity_matrix(metas)
    assert sim[2][3] == pytest.approx(0.99) and sim[1][3] == pytest.approx(0.2 * 0.99)


def test_attention_falls_back_to_the_model_prior():
    # no attention anywhere: the pose prior of the model (nearest to the target gets most)
    poses = [(0.0, 0.0, 0.0), (0.0, 0.0, 90.0), (0.0, 0.0, 180.0), (0.0, 0.0, 45.0)]
    shares, measured = attention_shares(frames(4, poses=poses), state(target=(0.0, 0.0, 175.0)))
    assert not measured and max(range(4), key=shares.__getitem__) == 2 and math.isclose(sum(shares), 1.0)
    assert kept("tova", frames(4, poses=poses), state(target=(0.0, 0.0, 175.0)), 2) == [2, 3]
    # a host without a pose bias: recentness, poses or not
    assert attention_prior(frames(4, poses=poses), (0.0, 0.0, 175.0), None) == attention_prior(frames(4), None, None)
    # no poses either: recentness
    prior = attention_prior(frames(4), None, MODEL_RATE)
    assert prior == sorted(prior) and math.isclose(sum(prior), 1.0)
    assert kept("tova", frames(4), state(), 2) == [2, 3]
    # measured where reported, the prior spread over the rest of the mass
    metas = frames(4, attention=[0.5, 0.3, None, None], poses=poses)
    shares, measured = attention_shares(metas, state(target=(0.0, 0.0, 175.0)))
    assert measured and shares[:2] == [0.5, 0.3] and math.isclose(sum(shares), 1.0)


# ------------------------------------------------------------------ helpers
def test_pose_distance_is_0_for_one_pose_and_1_for_a_quarter_turn_or_8_typical_steps():
    same, turn, far = pose_distances([(0.0, 0.0, 10.0), (0.0, 0.0, 0.0), (0.0, 0.0, 0.0)],
                                     [(0.0, 0.0, 10.0), (0.0, 0.0, 90.0), (16.0, 0.0, 360.0)], 2.0)
    assert same[0] == 0.0
    assert math.isclose(turn[1], 1.0)
    assert math.isclose(far[2], 1.0)  # 8 steps of 2, full turn


def test_the_candidates_typical_step_is_the_median_move_per_frame():
    poses = [(0.0, 0.0, 0.0), (2.0, 0.0, 0.0), (2.0, 0.0, 22.5), (5.0, 0.0, 0.0), (5.0, 4.0, 0.0)]
    assert candidates_step(frames(5, poses=poses)) == 3.0  # moves 2, (still), 3, 4
    # a gap in time divides the move
    assert candidates_step(frames(2, poses=poses[:2], times=[0, 4])) == 0.5
    assert candidates_step(frames(2, poses=[(0.0, 0.0, 0.0)] * 2)) == 1.0  # never moves: the default


def test_context_flags_from_times_and_step():
    # step 2: frames 0..5 were context (6 frames), 6 and 7 generated
    assert context_flags(frames(8), 2) == [True] * 6 + [False] * 2
    assert context_flags(frames(8), 0) == [True] * 8
    no_time = frames(3)
    for m in no_time:
        m.time = None
    assert context_flags(no_time, 1) == [False] * 3


# ------------------------------------------------------------------ pose retrieval
SPIN = [(0.0, 0.0, 22.5 * i) for i in range(16)]  # a full turn in place: 16 headings


def test_pose_retrieval_keeps_the_frames_seen_from_the_target_pose():
    # a spin in place, then the target looks near where frame 4 looked (90 degrees): 4 is kept;
    # 3 and 5 are one 22.5-degree turn from it (near-duplicates), 2 is two turns away
    metas = frames(16, poses=SPIN)
    assert kept("pose_retrieval", metas, state(target=(0.0, 0.0, 80.0)), 3) == [2, 4, 15]
    assert kept("pose_retrieval", metas, state(target=(0.0, 0.0, 80.0)), 4) == [2, 4, 6, 15]
    assert kept("pose_retrieval", metas, state(target=(0.0, 0.0, 67.5)), 2) == [3, 15]


def test_pose_retrieval_does_not_keep_two_frames_of_one_pose():
    # frames 0 and 1 were seen from the same pose (a pause); 2 two turns away from it
    poses = [(0.0, 0.0, 90.0), (0.0, 0.0, 90.0), (0.0, 0.0, 135.0), (0.0, 0.0, 300.0), (0.0, 0.0, 200.0)]
    assert kept("pose_retrieval", frames(5, poses=poses), state(target=(0.0, 0.0, 90.0)), 3) == [1, 2, 4]
    # a distinct view, however far, goes before a duplicate
    assert kept("pose_retrieval", frames(5, poses=poses), state(target=(0.0, 0.0, 90.0)), 4) == [1, 2, 3, 4]
    # when only duplicates are left they still fill the budget, the closest (then newest) first
    poses = [(0.0, 0.0, 90.0), (0.0, 0.0, 90.0), (0.0, 0.0, 90.0), (0.0, 0.0, 200.0)]
    assert kept("pose_retrieval", frames(4, poses=poses), state(target=(0.0, 0.0, 90.0)), 3) == [1, 2, 3]
    # frames within a turn of the newest add little to it: the one memory slot goes to another view
    poses = [(0.0, 0.0, 0.0), (0.0, 0.0, 180.0), (0.0, 0.0, 22.5), (0.0, 0.0, 0.0)]
    assert kept("pose_retrieval", frames(4, poses=poses), state(target=(0.0, 0.0, 10.0)), 2) == [1, 3]


def test_pose_retrieval_prefers_ground_truth_context_among_equals():
    # frames 1 and 4 share a pose; 4 was generated (step 2: frames 0..3 are context)
    poses = [(0.0, 0.0, 0.0), (0.0, 0.0, 180.0), (0.0, 0.0, 90.0), (0.0, 0.0, 270.0), (0.0, 0.0, 180.0),
             (0.0, 0.0, 45.0)]
    keep = kept("pose_retrieval", frames(6, poses=poses), state(step=2, target=(0.0, 0.0, 180.0)), 2)
    assert keep == [1, 5]


def test_pose_retrieval_uses_position_in_typical_steps():
    # a walk along x (4 units a frame) and back; the target is back near x = 8
    poses = [(4.0 * i, 0.0, 0.0) for i in range(6)] + [(20.0 - 4.0 * i, 0.0, 180.0) for i in range(1, 4)]
    keep = kept("pose_retrieval", frames(9, poses=poses), state(target=(8.0, 0.0, 0.0)), 2)
    assert keep == [2, 8]


def test_pose_retrieval_without_poses_falls_back():
    # no poses, no attention: the budget's FIFO
    assert kept("pose_retrieval", frames(7), state(), 3) == [4, 5, 6]
    # a missing target pose also falls back
    assert kept("pose_retrieval", frames(7, poses=SPIN[:7]), state(target=None), 3) == [4, 5, 6]
    # no poses but attention: R-KV's importance minus redundancy
    metas = frames(6, attention=[0.4, 0.05, 0.05, 0.05, 0.05, None], sims=[1.0, 0.1, 0.9, 0.9, 0.9, 0.9])
    assert kept("pose_retrieval", metas, state(), 2) == kept(RKV(), metas, state(), 2) == [0, 5]


# ------------------------------------------------------------------ pose coverage, random
def test_pose_coverage_keeps_views_the_later_frames_need_not_only_the_next():
    # a spin in place; the next frame looks at 90 degrees, the ones after it turn on to 180 and 270
    metas = frames(16, poses=SPIN)
    upcoming = [(0.0, 0.0, 90.0), (0.0, 0.0, 180.0), (0.0, 0.0, 270.0)]
    assert kept("pose_coverage", metas, state(upcoming=upcoming), 4) == [4, 8, 12, 15]
    # pose retrieval spends its slots around the next view only
    assert 8 not in kept("pose_retrieval", metas, state(target=upcoming[0]), 4)


def test_pose_coverage_fills_leftover_slots_as_pose_retrieval_and_falls_back_without_upcoming_poses():
    metas = frames(16, poses=SPIN)
    # one upcoming view, covered exactly by frame 4: the other slots are pose retrieval's
    assert kept("pose_coverage", metas, state(upcoming=[(0.0, 0.0, 90.0)]), 4) == \
        kept("pose_retrieval", metas, state(target=(0.0, 0.0, 90.0)), 4)
    assert kept("pose_coverage", metas, state(target=(0.0, 0.0, 80.0)), 3) == \
        kept("pose_retrieval", metas, state(target=(0.0, 0.0, 80.0)), 3)


def test_random_keeps_the_newest_and_a_draw_that_depends_only_on_the_history():
    a = kept("random", frames(20), state(step=3), 5)
    assert len(a) == 5 and a[-1] == 19
    assert kept("random", frames(20), state(step=3), 5) == a  # same candidates and step: same draw
    draws = {tuple(kept("random", frames(20), state(step=s), 5)) for s in range(8)}
    assert len(draws) > 4  # another step draws again


def test_policy_classes_are_exported():
    for cls in (FIFO, SinkRecent, H2O, TOVA, RKV, PoseRetrieval):
        assert POLICIES[cls.name] is cls

