"""DVC stage `tokenize`: data/frames.zarr + models/tokenizer -> data/latents.zarr +
data/latents_report.json. With tokenize.nproc_per_node > 1 it relaunches itself under torchrun:
the videos are sharded by rank and rank 0 renames the store into place once all are written
(pipeline.data.encode).

A missing or damaged store or checkpoint ends the stage with a message naming the file and no
traceback (`--debug` or PIPELINE_DEBUG=1 shows it)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Sequence

if not __package__:  # run as a file (`python stages/tokenize_frames.py`): import this checkout's pipeline, as `-m` does
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline import paths
from pipeline.atomic import remove_stale_tmp, write_json
from pipeline.config import load_params_or_exit
from pipeline.runtime.errors import add_debug_flag, user_errors
from pipeline.runtime.launch import relaunch_under_torchrun


def main(argv: Sequence[str] = ()) -> int:
    ap = argparse.ArgumentParser(prog="python -m stages.tokenize_frames", description=__doc__)
    args = add_debug_flag(ap).parse_args(argv)
    params = load_params_or_exit()
    relaunch_under_torchrun(params.tokenize.nproc_per_node, "stages.tokenize_frames", argv)
    import torch  # after the relaunch: torch loads once per rank

    from pipeline.data.encode import encode_store
    from pipeline.data.stores import StoreError
    from pipeline.networks.checkpoint import CheckpointError, checkpoint_hash, load_trained
    from pipeline.networks.tokenizer import KIND, build_tokenizer
    from pipeline.runtime.device import pick_device
    from pipeline.runtime.distributed import close_distributed, init_distributed

    advice = {StoreError: "", CheckpointError: ""}  # their messages name the file and say what to do
    start = time.perf_counter()
    d = init_distributed()
    if d.main:
        remove_stale_tmp(paths.LATENTS_REPORT.parent, paths.LATENTS_REPORT.name)  # what a killed run left
    with user_errors("tokenize", advice, args.debug, writes=f"{paths.LATENTS}"):
        device = d.device if d.world > 1 else pick_device()
        if device.type == "cpu" and d.world > 1:
            torch.set_num_threads(max(1, torch.get_num_threads() // d.world))  # the ranks share the cores
        tokenizer = load_trained(paths.TOKENIZER, KIND, build_tokenizer, device)
        tokenizer_hash = checkpoint_hash(paths.TOKENIZER)
        summary = encode_store(paths.FRAMES, tokenizer, tokenizer_hash, paths.LATENTS, params.tokenize.batch_size,
                               device, dist=d)
    close_distributed(d)
    if d.main:
        # An output DVC does not cache: after a kill DVC reruns the stage, which sweeps the temporary
        # store the kill left, rather than checking data/latents.zarr out of its cache and leaving it.
        write_json(paths.LATENTS_REPORT, {**summary, "tokenizer_hash": tokenizer_hash,
                                          "seconds": round(time.perf_counter() - start, 3)})
        print(f"tokenize: {summary['frames']} frames of {summary['videos']} videos -> {paths.LATENTS}, "
              f"latents {summary['latent_shape']}" + (f" ({d.world} processes)" if d.world > 1 else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
