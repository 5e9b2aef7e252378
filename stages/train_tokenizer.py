"""DVC stage train_tokenizer: data/frames.zarr -> models/tokenizer, metrics/tokenizer.json,
dvclive/tokenizer.

A missing or damaged frames store ends the stage with a message naming the file and no traceback
(`--debug` or PIPELINE_DEBUG=1 shows it); a damaged checkpoint of a killed run is not resumed."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

if not __package__:  # run as a file (`python stages/train_tokenizer.py`): import this checkout's pipeline, as `-m` does
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline import paths
from pipeline.config import load_params_or_exit
from pipeline.data.stores import StoreError
from pipeline.metrics.lpips_weights import LPIPSWeightsError
from pipeline.runtime.errors import add_debug_flag, user_errors
from pipeline.training.optim import NonFiniteLossError
from pipeline.training.tokenizer import train_tokenizer

ADVICE = {
    StoreError: "",  # the message names the file and says what to do
    NonFiniteLossError: "",
    LPIPSWeightsError: "",
}


def main(argv: Sequence[str] = ()) -> int:
    ap = argparse.ArgumentParser(prog="python -m stages.train_tokenizer", description=__doc__)
    args = add_debug_flag(ap).parse_args(argv)
    params = load_params_or_exit()
    with user_errors("train_tokenizer", ADVICE, args.debug, writes=f"{paths.TOKENIZER}"):
        metrics = train_tokenizer(params.tokenizer, params.seed, frames=paths.FRAMES, out_dir=paths.TOKENIZER,
                                  live_dir=paths.TOKENIZER_LIVE, metrics_path=paths.TOKENIZER_METRICS)
    v, p = metrics["val"], metrics["persistence"]
    print(f"train_tokenizer: val PSNR {v['psnr']:.2f} dB (persistence {p['psnr']:.2f} dB), "
          f"SSIM {v['ssim']:.4f}, LPIPS {v['lpips']:.4f}; latents {metrics['latent_shape']}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
