"""Fault injection on a real DVC project: run a stage under `dvc repro`, SIGKILL it at a point of
its progress, compare a project's outputs with an uninterrupted run's, find temporary leftovers.

A *kill point* is (n, delay): after the stage's n-th line of output (progress bars count, one
line per refresh; 0 = DVC's `> python -m stages.<x>` line, so the stage is still importing), wait
`delay` seconds, then SIGKILL DVC and the stage (their process group), if the stage's process
still runs. The points are drawn from a seeded generator over the line counts of the
uninterrupted run, so they spread over each stage's work on any machine; a point that the stage
outruns (it ended first) is retried at an earlier one.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from pipeline.atomic import TMP_MARK

SEED = int(os.environ.get("FAULTS_SEED", "20250607"))  # of the kill points
STAGES = ("download", "extract", "train_tokenizer", "tokenize", "train", "benchmark")
MODULES = {"tokenize": "tokenize_frames"}  # a stage's module under stages/, where it differs from its name

# What an uninterrupted run writes differently each time: wall times and rates, and the resume log
# of a training run (the steps a run resumed from are in its metrics file on purpose).
VOLATILE_JSON = {
    "data/frames_report.json": {"seconds", "frames_per_second"},
    "data/latents_report.json": {"seconds"},
    "metrics/tokenizer.json": {"train_seconds_this_run", "loader_wait_share", "resumed_from"},
    "metrics/train.json": {"batches_per_s", "frames_per_s", "train_seconds_this_run", "loader_wait_share", "resumed_from"},
    "dvclive/train/metrics.json": {"batches_per_s"},
    "metrics/benchmark.json": {"seconds", "fps", "policy_time_share"},
    "metrics/headline.json": {"benchmark_seconds"},
}
VOLATILE_COLUMNS = {"metrics/benchmark_budget.csv": {"fps", "policy_time_share"},
                    "metrics/benchmark_horizon.csv": {"fps", "policy_time_share"}}
VOLATILE_TSV = {"dvclive/train/plots/metrics/train/batches_per_s.tsv"}  # its steps are compared, not its values
# Stage `report` renders every metrics file, wall times included, so a rerun of any stage that
# writes metrics reruns it too: its page and charts show the new timings. They are views of the
# results, compared through metrics/headline.json (normalized above), not byte for byte.
VIEW_STAGES = {"report"}
VIEWS = {"reports/index.html", "reports/charts", "docs/results.md", "docs/charts"}
NOT_OUTPUTS = {".git", ".dvc", "dvc.lock"}  # DVC's own state; `dvc status` checks dvc.lock against the outputs


def module(stage: str) -> str:
    return MODULES.get(stage, stage)


def _drop_keys(obj, keys: set[str]):
    if isinstance(obj, dict):
        return {k: _drop_keys(v, keys) for k, v in obj.items() if k not in keys}
    if isinstance(obj, list):
        return [_drop_keys(v, keys) for v in obj]
    return obj


def normalized(rel: str, data: bytes) -> bytes:
    """A file's content with what legitimately differs between two uninterrupted runs taken out."""
    if rel in VOLATILE_JSON:
        return json.dumps(_drop_keys(json.loads(data), VOLATILE_JSON[rel]), sort_keys=True).encode()
    if rel in VOLATILE_COLUMNS:
        rows = list(csv.DictReader(io.StringIO(data.decode())))
        return json.dumps([{k: v for k, v in r.items() if k not in VOLATILE_COLUMNS[rel]} for r in rows]).encode()
    if rel in VOLATILE_TSV:
        return "\n".join(line.split("\t")[0] for line in data.decode().splitlines()).encode()
    return data


def snapshot(root: Path) -> dict[str, str]:
    """sha256 of every file the project holds besides its code and DVC's state, normalized."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if rel.split("/")[0] in NOT_OUTPUTS or not path.is_file() or "__pycache__" in rel:
            continue
        if rel.split("/")[0] in ("pipeline", "stages") or any(rel == v or rel.startswith(v + "/") for v in VIEWS):
            continue
        out[rel] = hashlib.sha256(normalized(rel, path.read_bytes())).hexdigest()
    return out


def diff(a: dict[str, str], b: dict[str, str]) -> list[str]:
    return sorted(f"{k}: {'missing' if k not in b else 'extra' if k not in a else 'differs'}"
                  for k in a.keys() | b.keys() if a.get(k) != b.get(k))  # fmt: skip


def leftovers(root: Path) -> list[str]:
    """Temporary files and directories anywhere in the project (outside git's and DVC's own)."""
    found = []
    for path in root.rglob("*"):
        rel = path.relative_to(root).as_posix()
        if rel.split("/")[0] in (".git", ".dvc"):
            continue
        if TMP_MARK in path.name or path.name.endswith(".tmp") or path.name == ".tmp" or rel == "data/.raw-partial":
            found.append(rel)
    return sorted(found)


# ---------------------------------------------------------------------------------------------
# running and killing
# ---------------------------------------------------------------------------------------------
@dataclass
class Watched:
    """One `dvc repro`, watched: its output lines, each stage's share, and whether it was killed."""

    cmd: list[str]
    lines: list[str] = field(default_factory=list)
    stage_lines: dict[str, int] = field(default_factory=dict)  # lines since DVC started the stage (its command first)
    stage_start: dict[str, float] = field(default_factory=dict)  # time.monotonic() when DVC started it
    end: float = 0.0
    killed: bool = False  # by the kill point, which found the stage's own process running
    returncode: int | None = None

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def stage_seconds(self, stage: str) -> float:
        """From DVC starting the stage to the next stage's start, the end of `dvc repro` or the kill."""
        later = [t for t in self.stage_start.values() if t > self.stage_start[stage]]
        return min(later, default=self.end) - self.stage_start[stage]


def _stage_processes(pid: int, stage: str) -> list[psutil.Process]:
    try:
        children = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    found = []
    for child in children:
        try:
            if f"stages.{module(stage)}" in " ".join(child.cmdline()):
                found.append(child)
        except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
            pass
    return found


def _alive(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def run_watched(root: Path, env: dict, cmd: list[str], stage: str | None = None,
                kill_at: tuple[int, float] | None = None, timeout: float = 600) -> Watched:
    """Run `cmd` (a `dvc repro`) in `root`; with `kill_at` = (n, delay), SIGKILL it and every
    process it started `delay` s after the n-th line of `stage`'s output, if the stage still runs
    then (else it runs to its end)."""
    w = Watched(cmd)
    proc = subprocess.Popen(cmd, cwd=root, env={**env, "PYTHONUNBUFFERED": "1"}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    launches = {f"> python -m stages.{module(s)}": s for s in STAGES}
    current = [None]

    def read() -> None:
        pending = b""
        while chunk := os.read(proc.stdout.fileno(), 65536):
            parts = re.split(rb"[\r\n]", pending + chunk)
            pending = parts.pop()
            for part in parts:
                line = part.decode(errors="replace").strip()
                if not line:
                    continue
                w.lines.append(line)
                if line in launches:
                    current[0] = launches[line]
                    w.stage_start[current[0]] = time.monotonic()
                    w.stage_lines[current[0]] = 0
                elif current[0] is not None:
                    w.stage_lines[current[0]] += 1
        if pending.strip():
            w.lines.append(pending.decode(errors="replace").strip())

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    deadline = time.monotonic() + timeout
    try:
        if kill_at is not None:
            n, delay = kill_at
            while proc.poll() is None and w.stage_lines.get(stage, -1) < n:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{cmd}: still running after {timeout} s")
                time.sleep(0.005)
            if proc.poll() is None:
                time.sleep(delay)
                stage_procs = [p for p in _stage_processes(proc.pid, stage) if _alive(p)]
                # Only while the stage runs: DVC then only waits for it. After it, DVC rewrites dvc.lock in
                # place and updates git's index: a kill there is DVC's own fault (a truncated dvc.lock, a
                # stale .git/index.lock), which no stage can guard against.
                if stage_procs and proc.poll() is None:
                    w.killed = True
                    os.killpg(proc.pid, signal.SIGKILL)
                    for p in stage_procs:  # in case a stage ever leaves the process group
                        try:
                            p.kill()
                        except psutil.NoSuchProcess:
                            pass
        w.returncode = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        w.end = time.monotonic()
        reader.join(timeout=10)
    return w


def stages_run(output: str) -> list[str]:
    """The stages a `dvc repro` output says it ran, the views (VIEW_STAGES) left out."""
    return [s for s in re.findall(r"Running stage '(\w+)'", output) if s not in VIEW_STAGES]


def stale_stages(status: str) -> list[str]:
    """The stages `dvc status` lists as changed, the views left out (a `--single-item` run leaves
    them stale on purpose)."""
    return [s for s in re.findall(r"^(\w+):$", status, flags=re.M) if s not in VIEW_STAGES]


def copy_project(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, symlinks=True)
    return dst


# ---------------------------------------------------------------------------------------------
# the log the session prints at its end (tests/faults/conftest.py)
# ---------------------------------------------------------------------------------------------
@dataclass
class Fault:
    kind: str  # e.g. "kill", "damaged file", "broken policy", "concurrent repro"
    target: str  # the stage, file or policy
    detail: str
    survived: bool = False  # set once the test has checked the recovery


LOG: list[Fault] = []


def inject(kind: str, target: str, detail: str) -> Fault:
    fault = Fault(kind, target, detail)
    LOG.append(fault)
    return fault
