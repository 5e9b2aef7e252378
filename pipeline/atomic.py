"""Write files and directories so that a crash never leaves something that looks complete: build
under a temporary sibling name (`<name>.tmp-<pid>-<hex>`), then rename (atomic on one filesystem)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Iterator

TMP_MARK = ".tmp-"


def _tmp_sibling(final: Path) -> Path:
    return final.with_name(f"{final.name}{TMP_MARK}{os.getpid()}-{uuid.uuid4().hex[:8]}")


def replace_path(src: Path, dst: Path) -> None:
    """Move src onto dst (file or directory), replacing whatever dst was."""
    src, dst = Path(src), Path(dst)
    if dst.is_dir() and not dst.is_symlink():
        old = _tmp_sibling(dst)
        os.replace(dst, old)
        os.replace(src, dst)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(src, dst)


@contextlib.contextmanager
def atomic_dir(final: str | Path, settle_s: float = 0.0) -> Iterator[Path]:
    """Yield a fresh temporary directory; on success it replaces `final`, on error it is removed.
    `settle_s`: keep removing it that long after an error (a writer's IO thread may recreate files)."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_sibling(final)
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        deadline = time.monotonic() + settle_s
        while True:
            shutil.rmtree(tmp, ignore_errors=True)
            if time.monotonic() >= deadline:
                break
            time.sleep(0.05)
        raise
    replace_path(tmp, final)


@contextlib.contextmanager
def atomic_file(final: str | Path) -> Iterator[Path]:
    """Yield a temporary path to write; on success it is renamed to `final`."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_sibling(final)
    try:
        yield tmp
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, final)


def write_json(path: str | Path, obj) -> None:
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")


def remove_stale_tmp(parent: str | Path, name: str = "") -> None:
    """Delete leftovers of crashed runs in `parent`: temporary siblings (of `name` only, if given)."""
    parent = Path(parent)
    if parent.is_dir():
        for p in parent.iterdir():
            if p.name.startswith(f"{name}{TMP_MARK}" if name else "") and TMP_MARK in p.name:
                shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
