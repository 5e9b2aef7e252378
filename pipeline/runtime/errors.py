"""How the stages and command-line tools end on a user's mistake: exit status 1 and a message on
stderr, no traceback (unless ``--debug`` or ``PIPELINE_DEBUG=1``); any other exception is a bug and
keeps its traceback (docs/faults.md). Imports nothing of the pipeline, so every layer may use it."""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import sys
from typing import Iterator, Mapping

DEBUG_ENV = "PIPELINE_DEBUG"
DEBUG_HINT = f"traceback: --debug or {DEBUG_ENV}=1"
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)  # a user's error in every command: the disk or the quota is full


def debug_requested(flag: bool = False) -> bool:
    return flag or os.environ.get(DEBUG_ENV, "") not in ("", "0")


def add_debug_flag(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--debug", action="store_true", help=f"show the traceback of a user's error (or {DEBUG_ENV}=1)")
    return parser


def advice_for(exc: BaseException, advice: Mapping[type[BaseException], str | None]) -> str | None:
    """The advice of the first (most specific first) type `exc` is an instance of."""
    return next((text for kind, text in advice.items() if isinstance(exc, kind)), None)


@contextlib.contextmanager
def user_errors(prog: str, advice: Mapping[type[BaseException], str | None], debug: bool = False,
                writes: str | None = None) -> Iterator[None]:
    """Around a command: an exception of a type in `advice`, or a full disk, prints its message to
    stderr and exits 1. Its advice adds a line: text + how to see the traceback; "": the latter
    only; None: no line. ``writes``: what the command writes, named when a full disk does not say."""
    try:
        yield
    except BaseException as exc:
        disk_full = isinstance(exc, OSError) and exc.errno in DISK_FULL
        if debug_requested(debug) or not (disk_full or isinstance(exc, tuple(advice))):
            raise
        if disk_full:
            target = exc.filename or writes
            where = f" writing {target}" if target else ""
            print(f"{prog}: no space left on device{where}: free space on that filesystem and rerun (what was being "
                  f"written is removed; finished outputs are kept) ({DEBUG_HINT})", file=sys.stderr)
            raise SystemExit(1) from None
        text = advice_for(exc, advice)
        print(f"{prog}: {exc}", file=sys.stderr)
        if text is not None:
            print(f"{prog}: {text} ({DEBUG_HINT})" if text else f"{prog}: ({DEBUG_HINT})", file=sys.stderr)
        raise SystemExit(1) from None
