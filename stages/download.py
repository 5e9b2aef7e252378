"""DVC stage `download`: fetch every `download.sources` entry into data/raw (+ manifest.json)."""

from __future__ import annotations

import logging
import sys

from pipeline import paths
from pipeline.config import load_params_or_exit
from pipeline.data.sources import DownloadFailed, SourceBlockedError, SourceError, download


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    params = load_params_or_exit()
    try:
        entries = download(params.download, seed=params.seed, out_dir=paths.RAW)
    except SourceError as exc:  # found before any work: nothing was written
        sys.exit(f"download: {exc}")
    except (DownloadFailed, SourceBlockedError) as exc:
        sys.exit(f"download failed: {exc}\n(see {paths.RAW}/manifest.json for every video's status)")
    ok = sum(e.status == "ok" for e in entries)
    print(f"download: {ok}/{len(entries)} videos ready in {paths.RAW} (manifest: {paths.RAW}/manifest.json)")


if __name__ == "__main__":
    main()
