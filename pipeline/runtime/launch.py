"""A stage whose ``nproc_per_node`` asks for several processes relaunches itself under torchrun.
Torch-free on purpose: the launching process only waits for its ranks, so it never imports torch."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Sequence


def relaunch_under_torchrun(nproc_per_node: int, module: str, args: Sequence[str] = ()) -> None:
    """With ``nproc_per_node > 1`` and not already a torchrun rank, run ``python -m <module> <args>``
    under torchrun (--standalone) and exit with its status; otherwise return (this process works)."""
    if nproc_per_node > 1 and "LOCAL_RANK" not in os.environ:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc_per_node}",
               "-m", module, *args]
        sys.exit(subprocess.call(cmd))
