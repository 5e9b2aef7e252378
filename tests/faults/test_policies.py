"""A zoo of broken retention policies against the real checkpoints of the reference run, through
try_policy (the benchmark stage's rollouts, clips and error handling): each one that breaks the
rollout API ends with two lines naming the policy and what is wrong (no traceback); one that
ignores the budget, or takes its time, still gets a rollout that respects the budget."""

from __future__ import annotations

import re
import textwrap

import pytest
import torch

from pipeline.runtime.errors import DEBUG_ENV
from tests.faults.harness import copy_project, inject

pytestmark = pytest.mark.faults

ZOO = textwrap.dedent('''
    import time

    from pipeline.rollout.api import ChunkDecision, TemporalCachePlan


    def keep_all(metas):
        return TemporalCachePlan([ChunkDecision(m.chunk_id, "keep") for m in metas])


    class Raises:
        def build_temporal_cache_plan(self, metas, state, budget):
            raise KeyError("no such frame")


    class ReturnsNone:
        def build_temporal_cache_plan(self, metas, state, budget):
            return None


    class BadChunkId:
        def build_temporal_cache_plan(self, metas, state, budget):
            return TemporalCachePlan([ChunkDecision(len(metas) + 5, "keep")])


    class FloatChunkId:
        def build_temporal_cache_plan(self, metas, state, budget):
            return TemporalCachePlan([ChunkDecision(0.0, "keep")])


    class BadAction:
        def build_temporal_cache_plan(self, metas, state, budget):
            return TemporalCachePlan([ChunkDecision(m.chunk_id, "hoard") for m in metas])


    class Duplicate:
        def build_temporal_cache_plan(self, metas, state, budget):
            return TemporalCachePlan([ChunkDecision(0, "keep"), ChunkDecision(0, "drop")])


    class BrokenInit:
        def __init__(self):
            raise RuntimeError("cannot start")

        def build_temporal_cache_plan(self, metas, state, budget):
            return keep_all(metas)


    class NoMethod:
        pass


    class KeepsEverything:  # ignores the budget: the loop trims the oldest
        def build_temporal_cache_plan(self, metas, state, budget):
            return keep_all(metas)


    class Sleeper:  # slow, and keeps everything: slowness is not limited, the budget is
        def build_temporal_cache_plan(self, metas, state, budget):
            time.sleep(0.2)
            return keep_all(metas)
''')

# policy -> the first line of its error (after "try_policy: "), as a regular expression
BROKEN = {
    "Raises": r"policy 'Raises' \(zoo\.py:Raises\) raised KeyError at step 0: 'no such frame'",
    "ReturnsNone": r"policy 'ReturnsNone': build_temporal_cache_plan returned NoneType, expected a TemporalCachePlan",
    "BadChunkId": r"policy 'BadChunkId': chunk_decisions\[0\] = .*: unknown chunk_id 8 \(the history has 3 frames",
    "FloatChunkId": r"policy 'FloatChunkId': chunk_decisions\[0\] = .*: unknown chunk_id 0\.0",
    "BadAction": r"policy 'BadAction': chunk_decisions\[0\] = .*: unknown action 'hoard' \(expected one of keep, drop",
    "Duplicate": r"policy 'Duplicate': chunk_decisions\[1\] = .*: second decision for chunk_id 0",
    "BrokenInit": r"--policy\[0\]: policy 'zoo\.py:BrokenInit': .*BrokenInit'>\(\) failed: RuntimeError\('cannot start'\)",
    "NoMethod": r"--policy\[0\]: policy 'zoo\.py:NoMethod': NoMethod has no build_temporal_cache_plan method",
}
BUDGET = 2  # the tiny params' "tight" budget


@pytest.fixture(scope="module")
def project(reference, tmp_path_factory):
    root = copy_project(reference.root, tmp_path_factory.mktemp("policies") / "project")
    (root / "zoo.py").write_text(ZOO)
    return root


@pytest.fixture
def in_project(project, monkeypatch):
    monkeypatch.chdir(project)
    monkeypatch.syspath_prepend(str(project))
    monkeypatch.delenv(DEBUG_ENV, raising=False)
    threads = torch.get_num_threads()
    yield project
    torch.set_num_threads(threads)  # try_policy sets benchmark.cpu_threads


def try_policy(*args: str) -> None:
    from pipeline.benchmark import try_policy

    try_policy.main(["--workload", "short", "--budget", "tight", *args])


@pytest.mark.parametrize("policy", list(BROKEN))
def test_a_broken_policy_is_named_with_what_is_wrong(in_project, policy, capsys):
    fault = inject("broken policy", policy, "")
    with pytest.raises(SystemExit) as info:
        try_policy("--policy", f"zoo.py:{policy}")
    assert info.value.code == 1
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("try_policy: ")]
    assert len(lines) == 2 and re.match(rf"try_policy: {BROKEN[policy]}", lines[0]), err
    assert "(traceback: --debug or PIPELINE_DEBUG=1)" in lines[1] and "Traceback" not in err
    fault.detail = re.sub(r" = ChunkDecision\(.*?\)", "", lines[0].removeprefix("try_policy: "))[:110]
    fault.survived = True


@pytest.mark.parametrize("policy", ["KeepsEverything", "Sleeper"])
def test_a_policy_that_ignores_the_budget_or_is_slow_still_gets_a_rollout_within_it(in_project, policy, capsys):
    fault = inject("broken policy", policy, "")
    try_policy("--policy", f"zoo.py:{policy}", "--mode", "recompute", "--mode", "kv")
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("TEST_METRICS: ") and policy in line]
    kept = [int(re.search(r"n_frames_kept=(\d+)", line).group(1)) for line in lines]
    assert len(kept) == 2 and max(kept) <= BUDGET  # both modes, never more frames than the budget
    fault.detail, fault.survived = f"completed, at most {max(kept)} frames kept (budget {BUDGET})", True
