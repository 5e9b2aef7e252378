"""One process or several on this node: a stage whose ``nproc_per_node`` key asks for more than
one relaunches itself under torchrun (``python -m torch.distributed.run --standalone``), and
each rank then joins the process group (``pipeline.runtime.distributed.init_distributed``).
Launched by torchrun directly (e.g. multi-node), a stage joins the group it finds.

Torch-free on purpose: the launching process only waits for its ranks, so it never imports
torch (each rank does, once).
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Sequence


def relaunch_under_torchrun(nproc_per_node: int, module: str, args: Sequence[str] = ()) -> None:
    """With ``nproc_per_node > 1`` and not already a torchrun rank, run ``python -m <module>
    <args>`` under torchrun with that many processes and exit with its status; otherwise return
    (this process does the work: alone, or as one rank of the group)."""
    if nproc_per_node > 1 and "LOCAL_RANK" not in os.environ:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc_per_node}",
               "-m", module, *args]
        sys.exit(subprocess.call(cmd))
