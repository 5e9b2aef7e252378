"""The local page and its JSON calls, on the standard library's threading HTTP server; one lock
serialises the session (one person plays).

    GET  /            the page                     POST /key {"key"}           a key press
    GET  /state       what the page draws          POST /reset {"clip"}        a test clip's context
    POST /configure {"policy", "budget"}           POST /record {"on": bool}  start / stop (writes files)

An error answers {"error": "<one line>"} (and prints that line); the session stays as it was.
"""

from __future__ import annotations

import json
import sys
import threading
from datetime import datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib.resources import files
from pathlib import Path
from typing import Callable

from pipeline.play.game import PlayError
from pipeline.play.session import PlaySession
from pipeline.rollout.loop import PlanError, PolicyError
from pipeline.rollout.policies import PolicyLoadError

USER_ERRORS = (PlayError, PolicyLoadError, PolicyError, PlanError)


class PlayServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, port: int, session: PlaySession, save: Callable[[PlaySession], list[Path]]):
        super().__init__(("127.0.0.1", port), PlayHandler)
        self.session, self.save = session, save
        self.lock = threading.Lock()
        self.page = files("pipeline.play").joinpath("page.html").read_bytes()


class PlayHandler(BaseHTTPRequestHandler):
    server: PlayServer

    def log_message(self, format, *args):  # noqa: A002 - the base class's name; requests are not logged
        pass

    def do_GET(self):  # noqa: N802 - http.server's spelling
        if self.path in ("/", "/index.html"):
            self._send(HTTPStatus.OK, self.server.page, "text/html; charset=utf-8")
        elif self.path == "/state":
            self._call(lambda s, body: None)
        else:
            self._json(HTTPStatus.NOT_FOUND, {"error": f"no page {self.path}"})

    def do_POST(self):  # noqa: N802
        routes = {
            "/key": lambda s, b: s.press(str(b.get("key"))),
            "/reset": lambda s, b: s.reset(int(b.get("clip", s.clip))),
            "/configure": lambda s, b: s.configure(b.get("policy"), b["budget"] if "budget" in b else "unchanged"),
            "/record": self._record,
        }
        if self.path not in routes:
            return self._json(HTTPStatus.NOT_FOUND, {"error": f"no call {self.path}"})
        self._call(routes[self.path])

    def _record(self, session: PlaySession, body: dict):
        if body.get("on"):
            session.start_recording()
            return None
        written = self.server.save(session)
        return {"written": [str(p) for p in written]}

    def _call(self, action):
        try:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length) or b"{}") if length else {}
            with self.server.lock:
                extra = action(self.server.session, body) or {}
                state = self.server.session.view()
            self._json(HTTPStatus.OK, {**state, **extra})
        except USER_ERRORS as exc:
            self._error(HTTPStatus.BAD_REQUEST, f"{type(exc).__name__}: {exc}")
        except (ValueError, KeyError, TypeError) as exc:
            self._error(HTTPStatus.BAD_REQUEST, f"bad request to {self.path}: {type(exc).__name__}: {exc}")
        except Exception as exc:  # the page must hear of it; the server keeps serving
            self._error(HTTPStatus.INTERNAL_SERVER_ERROR, f"{type(exc).__name__}: {exc}")

    def _error(self, status: HTTPStatus, line: str):
        line = " ".join(line.split())
        print(f"play: {line}", file=sys.stderr, flush=True)
        self._json(status, {"error": line})

    def _json(self, status: HTTPStatus, payload: dict):
        self._send(status, json.dumps(payload).encode(), "application/json")

    def _send(self, status: HTTPStatus, body: bytes, content_type: str):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)


def default_recording_path() -> Path:
    return Path("recordings") / f"play-{datetime.now():%Y%m%d-%H%M%S}.mp4"
