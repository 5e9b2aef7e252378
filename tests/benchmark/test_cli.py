"""A user's error ends a benchmark command with its message and no traceback; a bug keeps its
traceback; --debug or PIPELINE_DEBUG=1 shows the traceback of a user's error too."""

import pytest

from pipeline.benchmark.cli import DEBUG_ENV, user_errors
from pipeline.benchmark.clips import BenchmarkError
from pipeline.rollout.loop import PlanError, PolicyError


@pytest.fixture(autouse=True)
def no_debug_env(monkeypatch):
    monkeypatch.delenv(DEBUG_ENV, raising=False)


@pytest.mark.parametrize("error, advice", [
    (PolicyError("policy 'mine' (mine.py:Mine) raised ValueError at step 3: bad"), "fix it, then try it alone"),
    (PlanError("policy 'mine': chunk_decisions[0] = 7: unknown chunk_id 7"), "breaks the rollout API"),
    (BenchmarkError("benchmark.policies[2]: policy 'nope': not a baseline"), "fix the setting named above"),
])
def test_a_users_error_prints_two_lines_and_exits_1(error, advice, capsys):
    with pytest.raises(SystemExit) as info, user_errors("benchmark"):
        raise error
    assert info.value.code == 1
    err = capsys.readouterr().err.splitlines()
    assert err[0] == f"benchmark: {error}"
    assert advice in err[1] and "PIPELINE_DEBUG=1" in err[1] and len(err) == 2


def test_debug_shows_the_users_error_itself(monkeypatch):
    with pytest.raises(PolicyError), user_errors("benchmark", debug=True):
        raise PolicyError("policy 'mine' raised")
    monkeypatch.setenv(DEBUG_ENV, "1")
    with pytest.raises(PolicyError), user_errors("benchmark"):
        raise PolicyError("policy 'mine' raised")


def test_a_bug_keeps_its_exception(capsys):
    with pytest.raises(ZeroDivisionError), user_errors("benchmark"):
        _ = 1 / 0
    assert capsys.readouterr().err == ""
