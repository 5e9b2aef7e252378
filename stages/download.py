"""DVC stage `download`: fetch every `download.sources` entry into data/raw (+ manifest.json)."""

from __future__ import annotations

import logging
import sys

from pipeline.config import load_params_or_exit
from pipeline.sources import DownloadFailed, SourceBlockedError, download

OUT_DIR = "data/raw"


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    params = load_params_or_exit()
    try:
        entries = download(params.download, seed=params.seed, out_dir=OUT_DIR)
    except (DownloadFailed, SourceBlockedError) as exc:
        sys.exit(f"download failed: {exc}\n(see {OUT_DIR}/manifest.json for every video's status)")
    ok = sum(e.status == "ok" for e in entries)
    print(f"download: {ok}/{len(entries)} videos ready in {OUT_DIR} (manifest: {OUT_DIR}/manifest.json)")


if __name__ == "__main__":
    main()
