"""Stage `train`: the dynamics model on data/latents.zarr -> models/dynamics, metrics/train.json,
dvclive/train. With train.nproc_per_node > 1 it relaunches itself under torchrun (DDP); launched
by torchrun directly (e.g. multi-node), it joins the process group it finds."""

from __future__ import annotations

from pipeline import paths
from pipeline.config import load_params_or_exit
from pipeline.launch import relaunch_under_torchrun


def main() -> None:
    params = load_params_or_exit()
    relaunch_under_torchrun(params.train.nproc_per_node, "stages.train")
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
