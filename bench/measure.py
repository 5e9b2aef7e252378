"""Run a stage as DVC runs it and watch its memory: shared by the benchmarks that run whole stages."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import yaml

MB = 2**20


def merge(tree: dict, changes: dict) -> dict:
    out = dict(tree)
    for k, v in changes.items():
        out[k] = merge(out.get(k, {}), v) if isinstance(v, dict) else v
    return out


def project(code: Path, where: Path, changes: dict) -> Path:
    """A run directory holding `code`'s params.yaml and settings.yaml, each key of `changes` set in
    the file that holds it (settings.yaml for a key in neither)."""
    where.mkdir(parents=True, exist_ok=True)
    files = {name: yaml.safe_load((code / name).read_text()) or {} for name in ("params.yaml", "settings.yaml")}
    for section, values in changes.items():
        for key, value in values.items():
            holder = next((f for f in files.values() if key in (f.get(section) or {})), files["settings.yaml"])
            holder.setdefault(section, {})
            holder[section][key] = merge(holder[section].get(key) or {}, value) if isinstance(value, dict) else value
    for name, tree in files.items():
        (where / name).write_text(yaml.safe_dump(tree, sort_keys=False))
    return where


def run_stage(code: Path, cwd: Path, stage: str, threads: int | None = None) -> dict:
    """``python -m stages.<stage>`` of checkout `code`, run in `cwd`: wall seconds, peak RSS of the
    stage's process and peak PSS summed over its process tree (workers included; PSS splits the
    pages processes share, so the sum does not count shared libraries twice), and the CPU seconds
    of the whole tree (user + system of every process the stage waited for): unlike wall time, they
    do not grow when other work shares the cores."""
    env = os.environ | {"PYTHONPATH": str(code), "OMP_NUM_THREADS": str(threads or os.cpu_count())}
    start, cpu_before = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen([sys.executable, "-m", f"stages.{stage}"], cwd=cwd, env=env, stdout=log,
                                stderr=subprocess.STDOUT)
        main, peak_rss, peak_pss = psutil.Process(proc.pid), 0, 0
        while proc.poll() is None:
            try:
                peak_rss = max(peak_rss, main.memory_info().rss)
                pss = 0
                for p in (main, *main.children(recursive=True)):
                    try:
                        pss += p.memory_full_info().pss
                    except (psutil.NoSuchProcess, psutil.AccessDenied):
                        pass
                peak_pss = max(peak_pss, pss)
            except psutil.NoSuchProcess:
                break
            time.sleep(0.2)
        seconds = time.perf_counter() - start
        log.seek(0)
        output = log.read().decode(errors="replace")
    if proc.wait() != 0:
        raise SystemExit(f"{stage} failed in {cwd}:\n{output[-3000:]}")
    cpu = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_seconds = cpu.ru_utime + cpu.ru_stime - cpu_before.ru_utime - cpu_before.ru_stime
    return {"seconds": round(seconds, 1), "cpu_seconds": round(cpu_seconds, 1), "peak_rss_mb": round(peak_rss / MB),
            "peak_tree_pss_mb": round(peak_pss / MB)}


def write_block(page: Path, name: str, text: str) -> None:
    """Replace the block between ``<!-- name -->`` and ``<!-- end name -->`` in a docs page (a
    generated table), leaving the rest of the page as it is."""
    begin, end = f"<!-- {name} -->", f"<!-- end {name} -->"
    content = page.read_text()
    if begin not in content or end not in content:
        raise SystemExit(f"{page}: no {begin} ... {end} block to write the table into")
    head, rest = content.split(begin, 1)
    page.write_text(f"{head}{begin}\n{text.strip()}\n{end}{rest.split(end, 1)[1]}")
