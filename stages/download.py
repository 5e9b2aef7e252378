"""DVC stage `download`: fetch every `download.sources` entry into data/raw (+ manifest.json).

A source that cannot be fetched, a damaged manifest or a missing cookies file ends the stage with
a message naming it and no traceback (`--debug` or PIPELINE_DEBUG=1 shows it)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Sequence

if not __package__:  # run as a file (`python stages/download.py`): import this checkout's pipeline, as `-m` does
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline import paths
from pipeline.config import load_params_or_exit
from pipeline.data.sources import DownloadFailed, SourceBlockedError, SourceError, download
from pipeline.data.sources.manifest import ManifestError
from pipeline.runtime.errors import add_debug_flag, user_errors

SEE_MANIFEST = f"see {paths.RAW}/manifest.json for every video's status"
ADVICE = {
    SourceError: None,  # found before any work, nothing was written: the message says it all
    ManifestError: None,
    DownloadFailed: SEE_MANIFEST,
    SourceBlockedError: SEE_MANIFEST,
}


def main(argv: Sequence[str] = ()) -> int:
    args = add_debug_flag(argparse.ArgumentParser(prog="python -m stages.download", description=__doc__)).parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    params = load_params_or_exit()
    with user_errors("download", ADVICE, args.debug, writes=f"{paths.RAW}"):
        entries = download(params.download, seed=params.seed, out_dir=paths.RAW)
    ok = sum(e.status == "ok" for e in entries)
    print(f"download: {ok}/{len(entries)} videos ready in {paths.RAW} (manifest: {paths.RAW}/manifest.json)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
