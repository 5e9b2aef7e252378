"""Plan application rules and the policy-managed loop, on the deterministic toy host."""

import re

import pytest
import torch

from pipeline.rollout.api import ChunkDecision, TemporalCachePlan
from pipeline.rollout.loop import PlanError, PolicyError, Rollouts, apply_plan, run_rollout
from pipeline.rollout.policies import BASELINES, load_policy
from tests.rollout.toy_host import ToyHost


def plan(*actions) -> TemporalCachePlan:
    return TemporalCachePlan([ChunkDecision(i, a) for i, a in enumerate(actions)])


# ------------------------------------------------------------------ apply_plan
def test_keep_and_demote_stay_drop_leaves():
    keep, demoted = apply_plan(plan("keep", "drop", "demote_to_long_term", "keep"), 4, None, "p")
    assert keep == [0, 2, 3]
    assert demoted == {2}


def test_newest_frame_is_always_kept():
    keep, _ = apply_plan(plan("drop", "drop", "drop"), 3, None, "p")
    assert keep == [2]


def test_frames_without_a_decision_are_dropped():
    keep, _ = apply_plan(TemporalCachePlan([ChunkDecision(1, "keep")]), 4, None, "p")
    assert keep == [1, 3]


def test_oldest_are_dropped_first_to_meet_the_budget():
    keep, demoted = apply_plan(plan(*["demote_to_long_term"] * 2, *["keep"] * 4), 6, 3, "p")
    assert keep == [3, 4, 5]
    assert demoted == set()  # demoted frames that were cut do not count as residents


@pytest.mark.parametrize(
    "bad, message",
    [
        (TemporalCachePlan([ChunkDecision(5, "keep")]), "unknown chunk_id 5"),
        (TemporalCachePlan([ChunkDecision(-1, "keep")]), "unknown chunk_id -1"),
        (TemporalCachePlan([ChunkDecision(0, "evict")]), "unknown action 'evict'"),
        (TemporalCachePlan([ChunkDecision(0, "keep"), ChunkDecision(0, "drop")]), "second decision for chunk_id 0"),
        ([ChunkDecision(0, "keep")], "returned list"),
    ],
)
def test_invalid_plans_fail_naming_policy_and_entry(bad, message):
    with pytest.raises(PlanError, match=message) as err:
        apply_plan(bad, 3, None, "my_policy")
    assert "'my_policy'" in str(err.value)


# ------------------------------------------------------------------ the loop
def clip(n_ctx=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n_ctx, 3, 4, 4, generator=g)


def rollout(policy, *, max_frames, mode="recompute", n_ctx=6, n_predict=5, seed=0, actions=None, host=None):
    host = host or ToyHost()
    return run_rollout(
        host, load_policy(policy) if isinstance(policy, str) else policy, clip(n_ctx), n_predict,
        max_frames=max_frames, mode=mode, generator=torch.Generator().manual_seed(seed), actions=actions,
    ), host


@pytest.mark.parametrize("policy", sorted(BASELINES))
@pytest.mark.parametrize("mode", ["recompute", "kv"])
@pytest.mark.parametrize("max_frames", [1, 2, 4])
def test_budget_holds_at_every_step_the_first_included(policy, mode, max_frames):
    result, host = rollout(policy, max_frames=max_frames, mode=mode, n_ctx=6)
    assert host.seen_history_lengths == result.kept_per_step
    assert len(result.kept_per_step) == 5 and max(result.kept_per_step) <= max_frames
    # the session never held more than the budget: peak bytes <= max_frames frames
    frame_bytes = 3 * 4 * 4 * 4 * (2 if mode == "kv" else 1)
    assert result.peak_retained_bytes <= max_frames * frame_bytes


def test_full_history_under_a_budget_keeps_the_newest_frames():
    result, _ = rollout("full_history", max_frames=4, n_ctx=6, n_predict=3)
    assert result.history_per_step == [[2, 3, 4, 5], [3, 4, 5, 6], [4, 5, 6, 7]]


def test_recent_window_generates_from_the_two_newest_frames():
    result, _ = rollout("recent_window", max_frames=None, n_ctx=5, n_predict=3)
    assert result.history_per_step == [[3, 4], [4, 5], [5, 6]]


def test_unlimited_full_history_keeps_everything():
    result, _ = rollout("full_history", max_frames=None, n_ctx=3, n_predict=4)
    assert result.kept_per_step == [3, 4, 5, 6]
    assert result.generated.shape == (4, 3, 4, 4)


def test_kv_and_recompute_are_identical_under_full_history():
    actions = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10]
    a, _ = rollout("full_history", max_frames=None, mode="recompute", actions=actions)
    b, _ = rollout("full_history", max_frames=None, mode="kv", actions=actions)
    assert torch.equal(a.generated, b.generated)
    assert a.history_per_step == b.history_per_step


def test_same_seed_same_rollout_and_another_seed_differs():
    a, _ = rollout("packcache", max_frames=4, seed=1)
    b, _ = rollout("packcache", max_frames=4, seed=1)
    c, _ = rollout("packcache", max_frames=4, seed=2)
    assert torch.equal(a.generated, b.generated)
    assert not torch.equal(a.generated, c.generated)


def test_stepping_with_actions_given_as_they_come_generates_what_a_whole_rollout_does():
    actions = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10]
    whole, _ = rollout("full_history", max_frames=3, mode="kv", actions=actions)
    given = actions[:6]  # the context's; each next action arrives just before its frame
    stepped = Rollouts(ToyHost(), [load_policy("full_history")], [clip(6)], max_frames=3, mode="kv",
                       generators=[torch.Generator().manual_seed(0)], actions=[given], poses=[None], total_steps=5)
    frames = []
    for action in actions[6:]:
        given.append(action)
        frames.append(stepped.step()[0])
    assert torch.equal(torch.stack(frames), whole.generated)
    assert stepped.rows[0].result.history_per_step == whole.history_per_step


def test_a_budget_changed_between_steps_holds_from_the_next_frame():
    stepped = Rollouts(ToyHost(), [load_policy("full_history")], [clip(6)], max_frames=None, mode="kv",
                       generators=[torch.Generator().manual_seed(0)], actions=[None], poses=[None], total_steps=4)
    stepped.step()
    stepped.rows[0].set_budget(2)
    stepped.step()
    assert stepped.rows[0].result.kept_per_step == [6, 2]
    assert stepped.rows[0].budget_state["max_frames"] == 2


def test_actions_reach_the_host_aligned_to_generated_frames():
    base, _ = rollout("full_history", max_frames=None, n_ctx=2, n_predict=2, actions=[0, 0, 0, 0])
    acted, _ = rollout("full_history", max_frames=None, n_ctx=2, n_predict=2, actions=[0, 0, 0, 5])
    assert torch.equal(base.generated[0], acted.generated[0])  # frame 2's action unchanged
    assert not torch.equal(base.generated[1], acted.generated[1])  # frame 3's action differs


class Recorder:
    """Records what the loop shows a policy, keeps everything."""

    name = "recorder"

    def __init__(self):
        self.calls = []

    def build_temporal_cache_plan(self, metas, state, budget):
        self.calls.append(([m.age for m in metas], state.step, dict(budget), [m.long_term_resident for m in metas],
                           state.pose_bias_rate))
        return TemporalCachePlan([ChunkDecision(m.chunk_id, "demote_to_long_term" if m.chunk_id == 0 else "keep") for m in metas])


def test_policy_sees_the_context_before_the_first_frame_and_each_new_frame():
    rec = Recorder()
    rollout(rec, max_frames=3, n_ctx=4, n_predict=3)
    ages = [c[0] for c in rec.calls]
    assert ages[0] == [3, 2, 1, 0]  # whole context, before anything is generated
    assert ages[1] == [3, 2, 1, 0]  # context frames 1..3 kept (budget 3) + the new frame 4
    assert [c[1] for c in rec.calls] == [0, 1, 2]
    assert rec.calls[0][2]["max_frames"] == 3
    assert rec.calls[0][2]["capacity_mb"] == pytest.approx(3 * 3 * 4 * 4 * 4 / 2**20)


def test_the_policy_sees_the_hosts_pose_bias_rate_where_the_host_has_one():
    rec, host = Recorder(), ToyHost()
    rollout(rec, max_frames=3, n_predict=2, host=host)
    assert {c[4] for c in rec.calls} == {None}
    host.pose_bias_rate = 12.5
    rollout(rec, max_frames=3, n_predict=2, host=host)
    assert rec.calls[-1][4] == 12.5


def test_demoted_frames_become_long_term_residents():
    rec = Recorder()
    rollout(rec, max_frames=None, n_ctx=3, n_predict=3)
    assert rec.calls[0][3] == [False, False, False]
    assert rec.calls[1][3] == [True, False, False, False]


class Broken:
    name = "broken"

    def build_temporal_cache_plan(self, metas, state, budget):
        return TemporalCachePlan([ChunkDecision(len(metas) + 3, "keep")])


def test_an_invalid_plan_stops_the_rollout_naming_the_policy():
    with pytest.raises(PlanError, match="policy 'broken'.*unknown chunk_id 9"):
        rollout(Broken(), max_frames=None, n_ctx=6)


class Boom:
    name = "boom"

    def build_temporal_cache_plan(self, metas, rollout_state, budget_state):
        if rollout_state.step == 2:
            raise ValueError("no plan for you")
        return TemporalCachePlan([ChunkDecision(m.chunk_id, "keep") for m in metas])


def test_an_exception_in_a_policy_is_re_raised_naming_the_policy_its_class_and_the_step():
    with pytest.raises(PolicyError) as info:
        rollout(Boom(), max_frames=None)
    assert re.fullmatch(r"policy 'boom' \((\S*/)?test_loop\.py:Boom\) raised ValueError at step 2: no plan for you",
                        str(info.value))
    assert isinstance(info.value.__cause__, ValueError)  # the policy's own error, traceback and all


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="max_frames"):
        rollout("full_history", max_frames=0)
    with pytest.raises(ValueError, match="actions"):
        rollout("full_history", max_frames=None, actions=[0, 1])


# ------------------------------------------------------------------ the harness protocol
class Recording:
    """Keeps the two newest frames, demoting the oldest; remembers what it was shown."""

    name = "recording"

    def __init__(self):
        self.calls = []

    def build_temporal_cache_plan(self, metas, state, budget):
        self.calls.append((state.step, len(metas), [(m.access_count, m.recent_hit_count, m.long_term_resident) for m in metas]))
        actions = ["demote_to_long_term"] + ["drop"] * (len(metas) - 3) + ["keep", "keep"]
        return TemporalCachePlan([ChunkDecision(m.chunk_id, a) for m, a in zip(metas, actions)])


def harness_rollout(policy, max_frames, n_ctx=6, n_predict=5):
    return run_rollout(ToyHost(), policy, clip(n_ctx), n_predict, max_frames=max_frames, mode="recompute",
                       generator=torch.Generator().manual_seed(0), protocol="harness")


def test_the_harness_generates_the_first_frame_from_the_whole_context_then_consults_the_policy_when_over_budget():
    policy = Recording()
    result = harness_rollout(policy, max_frames=3)
    assert result.kept_per_step[0] == 6  # the whole context, whatever the budget
    assert [step for step, *_ in policy.calls] == [1, 2, 3, 4]  # only when the history exceeds 3
    assert result.kept_per_step[1:] == [3, 3, 3, 3]
    for _, _, meta in policy.calls:  # fixed access counters, no long-term residents
        assert all(access == recent == 1 and not resident for access, recent, resident in meta)


def test_the_harness_never_consults_the_policy_within_budget():
    policy = Recording()
    result = harness_rollout(policy, max_frames=None)
    assert policy.calls == [] and result.kept_per_step == [6, 7, 8, 9, 10]


def test_an_unknown_protocol_is_rejected():
    with pytest.raises(ValueError, match="protocol must be one of default, harness"):
        run_rollout(ToyHost(), Recording(), clip(), 2, max_frames=3, mode="kv", generator=torch.Generator(), protocol="mls")


class AttentionHost(ToyHost):
    """The toy host with an attention signal: the newest frame gets everything."""

    def start(self, mode, generator):
        session = super().start(mode, generator)
        session.attention_mass = lambda: [0.0] * (len(session.latents or session.cache) - 1) + [1.0]
        return session


def test_the_hosts_attention_mass_reaches_the_next_plans_frame_meta():
    seen = []

    class Reader:
        name = "reader"

        def build_temporal_cache_plan(self, metas, state, budget):
            seen.append([m.attention_mass for m in metas])
            return TemporalCachePlan([ChunkDecision(m.chunk_id, "keep") for m in metas])

    run_rollout(AttentionHost(), Reader(), clip(4), 3, max_frames=None, mode="recompute",
                generator=torch.Generator().manual_seed(0))
    assert seen[0] == [None] * 4  # nothing generated yet
    assert seen[1] == [0.0, 0.0, 0.0, 1.0, None]  # the frame just generated was not attended to yet


def test_the_host_is_told_which_frames_are_the_clips_own_and_which_it_generated():
    appended = []

    class Observing(ToyHost):
        def start(self, mode, generator):
            session = super().start(mode, generator)
            append = session.append
            session.append = lambda latent, info: (appended.append((info.time, info.observed)), append(latent, info))
            return session

    rollout("full_history", max_frames=None, mode="kv", n_ctx=4, n_predict=3, host=Observing())
    assert appended == [(0, True), (1, True), (2, True), (3, True), (4, False), (5, False)]
