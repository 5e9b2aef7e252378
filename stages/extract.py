"""DVC stage `extract`: data/raw -> data/frames.zarr + data/frames_report.json."""

from __future__ import annotations

import sys

from pipeline import paths
from pipeline.config import load_params_or_exit
from pipeline.data.extract import ExtractError, extract_all


def main() -> int:
    params = load_params_or_exit()
    try:
        report = extract_all(paths.RAW, paths.FRAMES, paths.FRAMES_REPORT, params.extract, params.seed)
    except ExtractError as exc:
        print(f"extract: {exc}", file=sys.stderr)
        return 1
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
    sys.exit(main())
