"""How the benchmark's commands (the stage, try_policy) end on a user's mistake.

A user's error -- a policy that raises or returns a plan the loop cannot apply, a policy spec that
does not load, params the data cannot support -- ends the command with exit status 1 and a
message that names the policy or params key and what to do, without a traceback. ``--debug`` or
``PIPELINE_DEBUG=1`` shows the traceback. Any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Iterator

from pipeline.benchmark.clips import BenchmarkError
from pipeline.rollout.loop import PlanError, PolicyError
from pipeline.rollout.policies import PolicyLoadError

DEBUG_ENV = "PIPELINE_DEBUG"
TRY_POLICY = "python -m pipeline.benchmark.try_policy --policy <spec>"
ADVICE = {  # most specific first
    PolicyError: f"the error is in the policy's code: fix it, then try it alone with `{TRY_POLICY}`",
    PlanError: "the policy's plan breaks the rollout API (pipeline/rollout/api.py): fix the policy",
    PolicyLoadError: "a policy is a baseline name, module:Class or path/to/file.py:Class",
    BenchmarkError: "fix the setting named above",
}
USER_ERRORS = tuple(ADVICE)


def debug_requested(flag: bool = False) -> bool:
    return flag or os.environ.get(DEBUG_ENV, "") not in ("", "0")


def advice(exc: BaseException) -> str:
    return next(text for kind, text in ADVICE.items() if isinstance(exc, kind))


@contextlib.contextmanager
def user_errors(prog: str, debug: bool = False) -> Iterator[None]:
    """Around a command: a user's error prints two lines to stderr and exits with status 1."""
    try:
        yield
    except USER_ERRORS as exc:
        if debug_requested(debug):
            raise
        print(f"{prog}: {exc}", file=sys.stderr)
        print(f"{prog}: {advice(exc)} (traceback: --debug or {DEBUG_ENV}=1)", file=sys.stderr)
        raise SystemExit(1) from None
