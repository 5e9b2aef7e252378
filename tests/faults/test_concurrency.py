"""Two `dvc repro` in one project at once: the second one gets DVC's lock error and runs nothing;
the first one completes with the outputs of an uninterrupted run."""

from __future__ import annotations

import re
import subprocess
import time

import psutil
import pytest

from tests.faults.harness import copy_project, diff, inject, leftovers, snapshot, stages_run, stale_stages
from tests.project_clone import ProjectClone

pytestmark = pytest.mark.faults


def test_a_second_dvc_repro_while_one_runs_gets_the_lock_error_and_the_first_completes(reference, tmp_path):
    project = ProjectClone(copy_project(reference.root, tmp_path / "project"))
    first = subprocess.Popen(["dvc", "repro", "--force", "--single-item", "benchmark"], cwd=project.root, env=project.env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        while not any("stages.benchmark" in " ".join(p.cmdline()) for p in psutil.Process(first.pid).children(recursive=True)):
            assert first.poll() is None and time.monotonic() < deadline, "the first run never started its stage"
            time.sleep(0.02)
        fault = inject("concurrent repro", "dvc repro", "a second `dvc repro` while a first one runs the benchmark")
        second = project.run("dvc", "repro", check=False, timeout=120)
        out, _ = first.communicate(timeout=600)
    finally:
        if first.poll() is None:
            first.kill()
    # DVC's locks: the repository's (a run that starts at the same instant) or, later, its per-output
    # read/write locks ("'data/latents.zarr' is busy, it is being blocked by: (PID ...)": the benchmark reads it)
    assert second.returncode != 0, second.stdout
    assert "is busy, it is being blocked by" in second.stderr or "Unable to acquire lock" in second.stderr, second.stderr
    assert "Running stage" not in second.stdout
    assert first.returncode == 0 and stages_run(out) == ["benchmark"], out
    assert diff(reference.outputs, snapshot(project.root)) == []
    assert leftovers(project.root) == []
    assert stale_stages(project.run("dvc", "status").stdout) == []
    fault.detail += "; it stopped: " + re.sub(r"'/\S+/project/", "'", second.stderr.strip().splitlines()[0])[:90]
    fault.survived = True
