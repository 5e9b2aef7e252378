"""Fixtures of the fault-injection suite: one uninterrupted reference run of all six stages on
tiny params (shared by every module), and the log of the faults injected and survived, printed
at the end of the session."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.faults.harness import LOG, SEED, STAGES, run_watched, snapshot
from tests.project_clone import TINY, ProjectClone, make_project_clone


@dataclass
class Reference:
    clone: ProjectClone
    outputs: dict[str, str]  # snapshot() of the uninterrupted run
    lines: dict[str, int]  # per stage: lines of output after DVC started it
    seconds: dict[str, float]  # per stage: from DVC starting it to DVC starting the next

    @property
    def root(self) -> Path:
        return self.clone.root


@pytest.fixture(scope="session")
def reference(tmp_path_factory) -> Reference:
    """All six stages through one `dvc repro`, uninterrupted, on tiny params."""
    clone = make_project_clone(tmp_path_factory.mktemp("faults") / "reference")
    clone.set_params(TINY)
    w = run_watched(clone.root, clone.env, ["dvc", "repro"])
    assert w.returncode == 0 and sorted(w.stage_lines) == sorted(STAGES), w.output[-4000:]
    assert "up to date" in clone.run("dvc", "status").stdout.lower()
    return Reference(clone, snapshot(clone.root), w.stage_lines, {s: w.stage_seconds(s) for s in STAGES})


def pytest_terminal_summary(terminalreporter):
    if not LOG:
        return
    survived = [f for f in LOG if f.survived]
    lost = [f for f in LOG if not f.survived]
    write = terminalreporter.write_line
    terminalreporter.section("faults injected")
    for f in LOG:
        write(f"  {'survived' if f.survived else 'LOST    '}  {f.kind:<20} {f.target:<16} {f.detail}")
    kinds = {}
    for f in LOG:
        kinds[f.kind] = kinds.get(f.kind, 0) + 1
    by_kind = ", ".join(f"{n} {k}" for k, n in kinds.items())
    write(f"faults: {len(LOG)} injected ({by_kind}), {len(survived)} survived, {len(lost)} lost (FAULTS_SEED={SEED})", bold=True,
          red=bool(lost), green=not lost)
