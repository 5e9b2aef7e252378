"""SIGKILL in every stage, at seeded points of its run, twice in a row (a forced `dvc repro` of the
stage, then the forced rerun after it); then a plain `dvc repro` ends with outputs identical to an
uninterrupted run's (same machine), reruns no other stage, and leaves no temporary file anywhere:
neither the kills' nor those planted before each run, what a kill while the stage writes would
leave (the kill points cannot be relied on to hit those short windows).

FAULTS_SEED=<n> draws other kill points."""

from __future__ import annotations

import re

import numpy as np
import pytest

from tests.faults.harness import SEED, STAGES, copy_project, diff, inject, leftovers, run_watched, snapshot, stages_run
from tests.project_clone import ProjectClone

pytestmark = pytest.mark.faults

KILLS = 2  # stage interruptions per stage before the recovery run
TRIES = 6  # kill points per interruption: each one earlier than the last, if the stage outran it

# What a kill while a stage writes would leave (atomic writes' temporary siblings), planted before
# every run of the stage. (Not data/.raw-partial: only yt-dlp stages there, and on purpose: a killed
# download resumes from its .part files.)
PARTIAL = "tmp-4242-0badf00d"
PLANTED = {
    "download": ["data/raw/atari-boxing-s0-e001.mp4.", "data/raw/manifest.json."],
    "extract": ["data/frames.zarr./atari-boxing-s0-e000/zarr.json", "data/frames_report.json."],
    "train_tokenizer": ["models/tokenizer./model.safetensors", "metrics/tokenizer.json."],
    "tokenize": ["data/latents.zarr./zarr.json", "data/latents_report.json."],
    "train": ["models/dynamics./model.safetensors", "metrics/train.json."],
    "benchmark": ["reports/benchmark./short_full.gif", "metrics/benchmark.json.", "metrics/benchmark_budget.csv.",
                  "metrics/benchmark_horizon.csv."],
}


def plant(root, stage: str) -> None:
    for spec in PLANTED[stage]:
        head, _, rest = spec.partition("./")  # "<output>./<file inside>" or "<output>."
        path = root / (f"{head}.{PARTIAL}/{rest}" if rest else f"{spec}{PARTIAL}")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"partial")


def resumed(output: str) -> str:
    """The resume a training stage's output reports (", resumed from step N/M"), or ""."""
    found = re.findall(r"resuming from step (\d+/\d+)", output)
    return f", resumed from step {found[-1]}" if found else ""


@pytest.fixture(scope="module")
def project(reference, tmp_path_factory) -> ProjectClone:
    return ProjectClone(copy_project(reference.root, tmp_path_factory.mktemp("kills") / "project"))


@pytest.mark.parametrize("stage", STAGES)
def test_a_stage_killed_twice_then_rerun_ends_with_the_outputs_of_an_uninterrupted_run(project, reference, stage):
    rng = np.random.default_rng([SEED, STAGES.index(stage)])
    lines = reference.lines[stage]
    faults, interrupted = [], 0
    while interrupted < KILLS:
        n, delay = int(rng.integers(0, lines + 1)), float(rng.uniform(0.0, 0.2))
        for tries in range(TRIES):
            plant(project.root, stage)
            w = run_watched(project.root, project.env, ["dvc", "repro", "--force", "--single-item", stage], stage,
                            kill_at=(n, delay))
            if w.killed:
                outrun = f", {tries} later point(s) outrun" if tries else ""
                faults.append(inject("kill", stage, f"SIGKILL after line {n}/{lines} + {delay:.2f} s "
                                                    f"({w.stage_seconds(stage):.1f} s into it{outrun}{resumed(w.output)})"))
                interrupted += 1
                break
            assert w.returncode == 0, w.output[-4000:]  # the stage outran the kill point: an earlier one
            n, delay = n // 2, delay / 2
        else:
            pytest.fail(f"{stage}: no kill point interrupted the stage in {TRIES} tries")

    recovery = project.run("dvc", "repro", "--no-run-cache", timeout=600)
    assert set(stages_run(recovery.stdout)) <= {stage}, recovery.stdout  # nothing downstream changed
    assert diff(reference.outputs, snapshot(project.root)) == []
    assert leftovers(project.root) == []
    assert "up to date" in project.run("dvc", "status").stdout.lower()
    faults[-1].detail += f"; rerun: {', '.join(stages_run(recovery.stdout)) or 'nothing to do'}{resumed(recovery.stdout)}"
    for fault in faults:
        fault.survived = True
