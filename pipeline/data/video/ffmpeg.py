"""Which ffmpeg binary to run: $FFMPEG_BINARY, else the imageio-ffmpeg wheel's (no system ffmpeg needed;
that wheel ships no ffprobe)."""

from __future__ import annotations

import os
import shutil


def ffmpeg_exe() -> str:
    """$FFMPEG_BINARY if set (must exist), else imageio-ffmpeg's bundled binary."""
    configured = os.environ.get("FFMPEG_BINARY")
    if configured:
        path = shutil.which(configured) or (configured if os.path.isfile(configured) else None)
        if path is None:
            raise FileNotFoundError(f"FFMPEG_BINARY={configured!r}: no such executable")
        return path
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()
