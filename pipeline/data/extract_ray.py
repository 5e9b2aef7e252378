"""Extract on Ray (``extract.engine: ray``): one task per video, for data that outgrows one machine.

Each task runs the local engine's own function for one video and writes that video's group into
the temporary store, which must lie on a filesystem every node sees. A task whose worker dies is
retried by Ray (``extract.ray_retries``); a group is written under a temporary name and renamed
when complete, so a dead attempt leaves no half-written group. ``extract.ray_address``: null
starts a Ray instance on this machine (``extract.workers`` CPUs); ``auto`` or ``host:port`` joins
a running cluster, whose nodes need this project installed at the same path.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Callable

from pipeline.config import ExtractParams


class RayClusterError(RuntimeError):
    """Ray could not start or reach the cluster named by extract.ray_address."""


def check_reachable(address: str | None, timeout: float = 5.0) -> None:
    """Fail at once, naming the address, where a host:port cluster does not answer (Ray itself
    keeps retrying for minutes)."""
    if address in (None, "auto") or address.startswith("ray://"):
        return
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except (OSError, ValueError) as exc:
        raise RayClusterError(f"extract.ray_address: no Ray cluster answers at {address!r} ({exc}); start one with "
                              "`ray start --head` there, or set extract.engine: local") from None


def run_on_ray(jobs: list[tuple], cfg: ExtractParams, store: Path, run_one: Callable,
               progress: Callable[[int], None]) -> list[dict]:
    """``run_one(src, info, window, cfg, store)`` of every job as Ray tasks; their results in job order.
    ``progress(frames)`` is called as each video finishes."""
    import ray

    started_here = not ray.is_initialized()
    if started_here:
        check_reachable(cfg.ray_address)
        try:
            ray.init(address=cfg.ray_address, num_cpus=cfg.workers if cfg.ray_address is None else None,
                     include_dashboard=False, log_to_driver=False, configure_logging=False)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            where = "a local Ray instance" if cfg.ray_address is None else f"the Ray cluster at {cfg.ray_address!r}"
            raise RayClusterError(f"extract.ray_address: cannot start or reach {where} ({exc}); start it with "
                                  "`ray start --head` or set extract.engine: local") from None
    try:
        task = ray.remote(run_one).options(num_cpus=1, max_retries=cfg.ray_retries, retry_exceptions=False)
        store = Path(store).resolve()  # the same path on every node
        refs = [task.remote(src, info, window, cfg, store) for src, info, window in jobs]
        frames = {ref: window.expected for ref, (_, _, window) in zip(refs, jobs)}
        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1, timeout=0.5)
            for ref in done:
                progress(frames[ref])
        return ray.get(refs)
    finally:
        if started_here:
            ray.shutdown()
