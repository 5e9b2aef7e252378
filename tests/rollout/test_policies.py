"""Every baseline's decisions on hand-built FrameMeta lists, and loading policies by spec."""

import textwrap

import pytest

from pipeline.rollout.api import FrameMeta, RolloutState, TemporalCachePlan
from pipeline.rollout.policies import BASELINES, PolicyLoadError, load_policy

STATE = RolloutState(step=3, budget_capacity_mb=1.0, total_steps=10)
BUDGET = {"max_frames": 8, "capacity_mb": 1.0}


def meta(i, age, *, boundary=0.0, drift=0.0, sim=1.0, motion=0.0, resident=False) -> FrameMeta:
    return FrameMeta(
        chunk_id=i, age=age, dynamic_age=age, recentness=1 / (1 + age), size_mb=0.01,
        boundary_score=boundary, feature_drift=drift, temporal_similarity=sim,
        motion_strength=motion, keyframe_score=motion, long_term_resident=resident,
    )


def actions(policy_name, metas):
    plan = load_policy(policy_name).build_temporal_cache_plan(metas, STATE, BUDGET)
    assert isinstance(plan, TemporalCachePlan)
    assert [d.chunk_id for d in plan.chunk_decisions] == [m.chunk_id for m in metas]
    return [d.action for d in plan.chunk_decisions]


def test_recent_window_keeps_the_two_newest():
    metas = [meta(i, 4 - i) for i in range(5)]  # ages 4..0
    assert actions("recent_window", metas) == ["drop", "drop", "drop", "keep", "keep"]


def test_packcache_rules_in_order():
    metas = [
        meta(0, 5, motion=0.8, drift=0.9),  # keyframe wins over drift -> demote
        meta(1, 4, motion=0.1, drift=0.5),  # drift >= 0.45 -> drop
        meta(2, 3, drift=0.1, sim=0.9),  # recentness 0.25 and similar -> keep
        meta(3, 2, drift=0.1, sim=0.8),  # not similar enough -> drop
        meta(4, 0, drift=0.1, sim=0.95),  # keep
        meta(5, 4, drift=0.1, sim=0.99),  # too old (recentness 0.2) -> drop
    ]
    assert actions("packcache", metas) == ["demote_to_long_term", "drop", "keep", "drop", "keep", "drop"]


def test_causalcache_vdm_promotes_keyframes_and_residents():
    metas = [
        meta(0, 6, motion=0.75),  # keyframe -> demote
        meta(1, 5, resident=True, drift=0.9),  # resident stays resident even if drifted
        meta(2, 4, drift=0.5),  # drift -> drop
        meta(3, 0, drift=0.49),  # keep
    ]
    assert actions("causalcache_vdm", metas) == ["demote_to_long_term", "demote_to_long_term", "drop", "keep"]


def test_flowcache_drops_before_the_newest_boundary_and_scores_flow():
    metas = [
        meta(0, 6),  # before the boundary -> drop (even though flow would be 1)
        meta(1, 5, boundary=0.5),  # an older boundary
        meta(2, 4, boundary=0.45, sim=1.0, drift=0.0),  # newest boundary: flow 1 -> keep
        meta(3, 3, sim=0.6, drift=0.0),  # flow 0.6 -> demote
        meta(4, 2, sim=0.3, drift=0.0),  # flow 0.3, recentness 0.33 -> drop
        meta(5, 5, sim=0.9, motion=0.8),  # keyframe -> keep
        meta(6, 1, sim=0.1),  # recentness 0.5 -> keep
    ]
    assert actions("flowcache", metas) == ["drop", "drop", "keep", "demote_to_long_term", "drop", "keep", "keep"]


def test_flowcache_flow_combines_similarity_drift_and_motion():
    # flow = 0.9 * (1 - 0.1) * (1 - 0.3 * 0.5) = 0.6885 -> demote (not >= 0.70); age 3 -> recentness 0.25
    assert actions("flowcache", [meta(0, 3, sim=0.9, drift=0.1, motion=0.5), meta(1, 0)]) == ["demote_to_long_term", "keep"]
    # flow = 1 * 0.75 * 1 = 0.75 -> keep
    assert actions("flowcache", [meta(0, 3, drift=0.25), meta(1, 0)]) == ["keep", "keep"]


def test_full_history_keeps_everything():
    metas = [meta(i, 9 - i, drift=1.0, sim=0.0) for i in range(10)]
    assert actions("full_history", metas) == ["keep"] * 10


def test_baseline_names_match_the_registry():
    assert {"recent_window", "packcache", "causalcache_vdm", "flowcache", "full_history"} <= set(BASELINES)
    assert all(load_policy(name).name == name for name in BASELINES)


def test_user_policy_loads_from_a_file(tmp_path):
    path = tmp_path / "my_policy.py"
    path.write_text(textwrap.dedent('''
        from pipeline.rollout.api import ChunkDecision, TemporalCachePlan

        class KeepFirstAndLast:
            def build_temporal_cache_plan(self, metas, rollout_state, budget_state):
                last = len(metas) - 1
                return TemporalCachePlan([ChunkDecision(m.chunk_id, "keep" if m.chunk_id in (0, last) else "drop")
                                          for m in metas])
    '''))
    policy = load_policy(f"{path}:KeepFirstAndLast")
    assert policy.name == "KeepFirstAndLast"
    plan = policy.build_temporal_cache_plan([meta(i, 2 - i) for i in range(3)], STATE, BUDGET)
    assert [d.action for d in plan.chunk_decisions] == ["keep", "drop", "keep"]


def test_user_policy_loads_from_a_module():
    policy = load_policy("pipeline.rollout.policies:PackCache")
    assert policy.name == "packcache"


@pytest.mark.parametrize(
    "spec, message",
    [
        ("recnet_window", "not a baseline"),
        ("no/such/file.py:Policy", "file no/such/file.py not found"),
        ("pipeline.no_such_module:Policy", "cannot import module"),
        ("pipeline.rollout.policies:Nope", "has no attribute 'Nope'"),
        ("pipeline.rollout.api:FrameMeta", "failed"),  # needs constructor arguments
    ],
)
def test_bad_policy_specs_fail_naming_the_spec(spec, message):
    with pytest.raises(PolicyLoadError, match=message) as err:
        load_policy(spec)
    assert spec in str(err.value)


def test_class_without_the_method_is_rejected(tmp_path):
    path = tmp_path / "bad.py"
    path.write_text("class NotAPolicy:\n    pass\n")
    with pytest.raises(PolicyLoadError, match="no build_temporal_cache_plan"):
        load_policy(f"{path}:NotAPolicy")
