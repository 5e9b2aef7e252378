"""DVC stage `extract`: data/raw -> data/frames.zarr + data/frames_report.json."""

from __future__ import annotations

import sys

from pipeline.config import load_params_or_exit
from pipeline.extract import ExtractError, extract_all

RAW, FRAMES, REPORT = "data/raw", "data/frames.zarr", "data/frames_report.json"


def main() -> int:
    params = load_params_or_exit()
    try:
        report = extract_all(RAW, FRAMES, REPORT, params.extract, params.seed)
    except ExtractError as exc:
        print(f"extract: {exc}", file=sys.stderr)
        return 1
    for e in report["videos"]:
        if e["status"] != "ok":
            print(f"extract: skipped {e['id']}: {e['reason']}", file=sys.stderr)
    print(f"extract: {report['n_ok']} videos, {report['n_frames']} frames at {report['fps']:g} fps "
          f"in {report['seconds']:.1f} s ({report['n_skipped']} skipped) -> {FRAMES}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
