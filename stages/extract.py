"""DVC stage `extract`: data/raw -> data/frames.zarr + data/frames_report.json.

Missing or unusable raw videos end the stage with a message naming them and no traceback
(`--debug` or PIPELINE_DEBUG=1 shows it)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

if not __package__:  # run as a file (`python stages/extract.py`): import this checkout's pipeline, as `-m` does
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline import paths
from pipeline.config import load_params_or_exit
from pipeline.data.extract import ExtractError, extract_all
from pipeline.runtime.errors import add_debug_flag, user_errors

ADVICE = {ExtractError: ""}  # the message names the file or video and says what to do


def main(argv: Sequence[str] = ()) -> int:
    args = add_debug_flag(argparse.ArgumentParser(prog="python -m stages.extract", description=__doc__)).parse_args(argv)
    params = load_params_or_exit()
    with user_errors("extract", ADVICE, args.debug, writes=f"{paths.FRAMES}"):
        report = extract_all(paths.RAW, paths.FRAMES, paths.FRAMES_REPORT, params.extract, params.seed)
    for e in report["videos"]:
        if e["status"] != "ok":
            print(f"extract: skipped {e['id']}: {e['reason']}", file=sys.stderr)
        elif e.get("warning"):
            print(f"extract: warning: {e['id']}: {e['warning']}", file=sys.stderr)
    rate = f"{report['fps']:g} fps" if report["fps"] else "each video's own rate"
    print(f"extract: {report['n_ok']} videos, {report['n_frames']} frames at {rate} "
          f"in {report['seconds']:.1f} s ({report['n_skipped']} skipped) -> {paths.FRAMES}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
