"""Stage `train`: the dynamics model on data/latents.zarr -> models/dynamics, metrics/train.json,
dvclive/train. With train.nproc_per_node > 1 it relaunches itself under torchrun (DDP); launched
by torchrun directly (e.g. multi-node), it joins the process group it finds."""

from __future__ import annotations

import os
import subprocess
import sys

from pipeline import paths
from pipeline.config import load_params_or_exit


def main() -> None:
    params = load_params_or_exit()
    n = params.train.nproc_per_node
    if n > 1 and "LOCAL_RANK" not in os.environ:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}", "-m", "stages.train"]
        sys.exit(subprocess.call(cmd))
    from pipeline.training.dynamics import (
        train_dynamics,  # after the relaunch: torch loads once per rank
    )

    train_dynamics(
        params,
        latents=paths.LATENTS,
        out_dir=paths.DYNAMICS,
        metrics_path=paths.TRAIN_METRICS,
        live_dir=paths.TRAIN_LIVE,
    )


if __name__ == "__main__":
    main()
