"""Play the trained world model beside the real game, in a local page.

    python -m pipeline.play                       # serves http://127.0.0.1:8765/ and opens it
    python -m pipeline.play --port 9000 --no-browser --policy full_history --budget 4
    python -m pipeline.play --record runs/me.mp4  # records from the start; Ctrl-C writes it
    python -m pipeline.play --replay runs/me.mp4  # plays a recording again; exit 1 if a frame differs

Arrows / WASD step the game and the model with the same action; the page shows both, the frames the
policy keeps and those it dropped. Needs the outputs of `dvc repro` (checkpoints, stores).
"""

from __future__ import annotations

import argparse
import errno
import signal
import sys
import threading
import webbrowser
from pathlib import Path

from pipeline.benchmark.clips import BenchmarkError
from pipeline.config import load_params_or_exit
from pipeline.data.stores import StoreError
from pipeline.hosts.build import benchmark_device, build_host, run_info
from pipeline.networks.checkpoint import NoCheckpointError
from pipeline.play import recording
from pipeline.play.game import PlayError
from pipeline.play.server import USER_ERRORS, PlayServer, default_recording_path
from pipeline.play.session import PlaySession
from pipeline.runtime.errors import user_errors

ADVICE = {error: None for error in (*USER_ERRORS, NoCheckpointError, StoreError, BenchmarkError)}


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m pipeline.play", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, default=8765, help="port on 127.0.0.1 (default 8765)")
    ap.add_argument("--no-browser", action="store_true", help="serve only; do not open a browser")
    ap.add_argument("--policy", default="pose_retrieval", help="retention policy: a built-in name, module:Class or file.py:Class")
    ap.add_argument("--budget", type=lambda s: None if s in ("all", "none") else int(s), default=8,
                    help="frames the model may keep (all: unlimited; default 8)")
    ap.add_argument("--workload", default="long", help="benchmark workload whose test clips reset starts from (default long)")
    ap.add_argument("--clip", type=int, default=0, help="test clip to start from")
    ap.add_argument("--record", type=Path, help="record from the start to this .mp4 (+ .json, .npz); written on stop")
    ap.add_argument("--replay", type=Path, help="play this recording again and check every frame against it")
    ap.add_argument("--debug", action="store_true", help="tracebacks instead of one-line errors")
    return ap.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    params = load_params_or_exit()
    with user_errors("play", ADVICE, debug=args.debug, writes=str(args.record) if args.record else None):
        if params.benchmark.host != "pipeline":
            raise PlayError(f"benchmark.host is {params.benchmark.host!r}: play drives this pipeline's own model "
                            "(benchmark.host: pipeline)")
        device = benchmark_device(params)
        host = build_host(params, device)
        checkpoints = run_info(params, device)["checkpoints"]
        session = PlaySession(params, host, args.workload, args.policy, args.budget)
        if args.clip:
            session.reset(args.clip)
        if args.replay:
            raise SystemExit(replay(session, args.replay, checkpoints))
        serve(session, args, lambda s: save(s, args.record or default_recording_path(), checkpoints, params))


def save(session: PlaySession, path: Path, checkpoints: dict, params) -> list[Path]:
    played = session.stop_recording()
    if played is None:
        raise PlayError("not recording: press record first")
    clip = session.clips[played.clip]
    fps = float(session.attrs[clip.video_id].get("fps") or 10)
    written = recording.save(played, path, {"video": clip.video_id, "start": clip.start, "seed": params.seed,
                                            "checkpoints": checkpoints}, fps)
    print(f"play: wrote {', '.join(map(str, written))}", flush=True)
    return written


def replay(session: PlaySession, path: Path, checkpoints: dict) -> int:
    meta, _ = recording.load(path)
    if meta.get("checkpoints") != checkpoints:
        raise PlayError(f"{path}: recorded with other checkpoints ({meta.get('checkpoints')}) than models/ holds "
                        f"({checkpoints}): its frames cannot be replayed")
    played, first_diff = recording.replay(session, path)
    session.close()
    if first_diff is None:
        print(f"play: replayed {played} frames of {path}: game and model frames identical to the recording")
        return 0
    print(f"play: {path}: frame {first_diff} differs from the recording (of {played} replayed)", file=sys.stderr)
    return 1


def serve(session: PlaySession, args, save_recording) -> None:
    try:
        server = PlayServer(args.port, session, save_recording)
    except OSError as exc:
        session.close()
        if exc.errno == errno.EADDRINUSE:
            raise PlayError(f"port {args.port} on 127.0.0.1 is in use: pass another with --port") from None
        raise
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # stop as Ctrl-C does
    if args.record:
        session.start_recording()
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    print(f"play: serving {url} (Ctrl-C stops)", flush=True)
    if not args.no_browser:
        webbrowser.open(url)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        try:
            if session.recording and session.played is not None and session.played.steps:
                save_recording(session)
        finally:
            close_within(session, CLOSE_SECONDS)
            print("play: stopped", flush=True)


CLOSE_SECONDS = 10.0  # Ctrl-C must stop the server even when the game engine does not answer its close


def close_within(session: PlaySession, seconds: float) -> None:
    """Close the session's game; an engine that has not closed after ``seconds`` is left to end with
    this process (seen once in a while under load: the engine's close never returned)."""
    closer = threading.Thread(target=session.close, daemon=True)
    closer.start()
    closer.join(seconds)
    if closer.is_alive():
        print(f"play: the game engine did not close within {seconds:.0f} s; stopping without it", file=sys.stderr,
              flush=True)


if __name__ == "__main__":
    main()
