"""How the benchmark's commands end on a user's error: exit status 1 and a message naming the policy,
params key or file and the fix, no traceback (``--debug`` / PIPELINE_DEBUG=1 shows it); bugs keep theirs."""

from __future__ import annotations

import contextlib
from typing import Iterator

from pipeline.benchmark.clips import BenchmarkError
from pipeline.data.stores import StoreError
from pipeline.metrics.lpips_weights import LPIPSWeightsError
from pipeline.networks.checkpoint import CheckpointError
from pipeline.rollout.loop import PlanError, PolicyError
from pipeline.rollout.policies import PolicyLoadError
from pipeline.runtime.errors import DEBUG_ENV
from pipeline.runtime.errors import user_errors as _user_errors

__all__ = ["ADVICE", "DEBUG_ENV", "user_errors"]

TRY_POLICY = "python -m pipeline.benchmark.try_policy --policy <spec>"
ADVICE = {  # most specific first
    PolicyError: f"the error is in the policy's code: fix it, then try it alone with `{TRY_POLICY}`",
    PlanError: "the policy's plan breaks the rollout API (pipeline/rollout/api.py): fix the policy",
    PolicyLoadError: "a policy is a baseline name, module:Class or path/to/file.py:Class",
    BenchmarkError: "fix the setting named above",
    CheckpointError: "",  # the message names the file and says what to do
    StoreError: "",
    LPIPSWeightsError: "",
}


@contextlib.contextmanager
def user_errors(prog: str, debug: bool = False, writes: str | None = None) -> Iterator[None]:
    """Around a command: a user's error prints its message and advice to stderr and exits with status 1."""
    with _user_errors(prog, ADVICE, debug, writes):
        yield
