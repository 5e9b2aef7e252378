"""A loopback HTTP server and small real mp4 files for the download tests (no internet)."""

from __future__ import annotations

import socket
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from pipeline.config import DownloadParams
from pipeline.data.video.ffmpeg import ffmpeg_exe


def make_mp4(path: Path, pattern: str = "testsrc", size: str = "64x48", rate: int = 10, frames: int = 10) -> bytes:
    """Encode a tiny real H.264 mp4 with ffmpeg's test sources; returns its bytes."""
    subprocess.run(
        [ffmpeg_exe(), "-v", "error", "-y", "-f", "lavfi", "-i", f"{pattern}=size={size}:rate={rate}",
         "-frames:v", str(frames), "-c:v", "libx264", "-pix_fmt", "yuv420p", "-f", "mp4", str(path)],
        check=True,
    )  # fmt: skip
    return path.read_bytes()


@pytest.fixture(scope="session")
def clips(tmp_path_factory) -> dict[str, bytes]:
    d = tmp_path_factory.mktemp("clips")
    return {
        "a": make_mp4(d / "a.mp4", "testsrc"),
        "b": make_mp4(d / "b.mp4", "testsrc2", size="80x60", rate=5, frames=8),
        "c": make_mp4(d / "c.mp4", "rgbtestsrc"),
    }


class LoopbackServer:
    """Serves registered routes on 127.0.0.1 and logs every request.

    Routes: ("file", bytes), ("status", code), ("cut", bytes) = announce the full length, send
    half, drop the connection; ("html", text).
    """

    def __init__(self) -> None:
        self.routes: dict[str, tuple[str, object]] = {}
        self.requests: list[tuple[str, str]] = []  # (method, path)
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # keep test output clean
                pass

            def do_HEAD(self) -> None:
                self._serve(body=False)

            def do_GET(self) -> None:
                self._serve(body=True)

            def _serve(self, body: bool) -> None:
                path = self.path.split("?")[0]  # routes ignore the query string
                server.requests.append((self.command, path))
                kind, value = server.routes.get(path, ("status", 404))
                if kind == "status":
                    self.send_response(value)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                data = value.encode() if kind == "html" else value
                self.send_response(200)
                self.send_header("Content-Type", "text/html" if kind == "html" else "video/mp4")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if not body:
                    return
                if kind == "cut":
                    self.wfile.write(data[: len(data) // 2])
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True
                    return
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def gets(self, path: str) -> int:
        return sum(1 for m, p in self.requests if m == "GET" and p == path)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = LoopbackServer()
    yield s
    s.close()


@pytest.fixture
def params():
    """DownloadParams for tests: no retries, no sleeps (each test says what it changes)."""

    def make(sources: list[str], **overrides) -> DownloadParams:
        return DownloadParams(sources=sources, **{"retries": 0, **overrides})

    return make
