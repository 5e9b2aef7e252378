"""Stage `train`: the dynamics model on data/latents.zarr -> models/dynamics, metrics/train.json,
dvclive/train. With train.nproc_per_node > 1 it relaunches itself under torchrun (DDP); launched
by torchrun directly (e.g. multi-node), it joins the process group it finds.

A missing or damaged latents store, or train windows the videos cannot fill, end the stage with a
message naming the file or key and no traceback (`--debug` or PIPELINE_DEBUG=1 shows it); a
damaged checkpoint of a killed run is not resumed."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

if not __package__:  # run as a file (`python stages/train.py`): import this checkout's pipeline, as `-m` does
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline import paths
from pipeline.config import load_params_or_exit
from pipeline.runtime.errors import add_debug_flag, user_errors
from pipeline.runtime.launch import relaunch_under_torchrun


def main(argv: Sequence[str] = ()) -> int:
    args = add_debug_flag(argparse.ArgumentParser(prog="python -m stages.train", description=__doc__)).parse_args(argv)
    params = load_params_or_exit()
    relaunch_under_torchrun(params.train.nproc_per_node, "stages.train", argv)
    from pipeline.data.latent_windows import WindowError  # after the relaunch: torch loads once per rank
    from pipeline.data.stores import StoreError
    from pipeline.metrics.lpips_weights import LPIPSWeightsError
    from pipeline.training.dynamics import train_dynamics
    from pipeline.training.optim import NonFiniteLossError

    advice = {
        StoreError: "",  # the message names the file or key and says what to do
        WindowError: "",
        NonFiniteLossError: "",
        LPIPSWeightsError: "",
    }
    with user_errors("train", advice, args.debug, writes=f"{paths.DYNAMICS}"):
        train_dynamics(
            params,
            latents=paths.LATENTS,
            out_dir=paths.DYNAMICS,
            metrics_path=paths.TRAIN_METRICS,
            live_dir=paths.TRAIN_LIVE,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
