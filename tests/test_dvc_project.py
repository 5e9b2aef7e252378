"""The DVC project works from a fresh git clone: `dvc repro download`, `dvc exp run -S ...`."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from pipeline.config import SETTINGS_FILE
from pipeline.fingerprint import FAR_CODE, SHARED_MODULES, STAGES, code_of, fingerprint
from tests.project_clone import PROJECT_ROOT

TINY_RECORDER = {"download": {"recorder": {"episodes": 3, "max_frames": 24}}}


def manifest(clone) -> list[dict]:
    return json.loads((clone.root / "data/raw/manifest.json").read_text())["videos"]


def test_dvc_repro_download_runs_offline_and_a_second_repro_changes_nothing(project_clone):
    project_clone.set_params(TINY_RECORDER)
    project_clone.run("dvc", "repro", "download")

    videos = manifest(project_clone)
    assert [v["status"] for v in videos] == ["ok"] * 3
    assert all((project_clone.root / "data/raw" / f"{v['id']}.mp4").is_file() for v in videos)
    assert "download" in (project_clone.root / "dvc.lock").read_text()
    stamp = (project_clone.root / "data/raw/manifest.json").stat().st_mtime_ns

    again = project_clone.run("dvc", "repro", "download")
    assert "didn't change" in again.stdout
    assert (project_clone.root / "data/raw/manifest.json").stat().st_mtime_ns == stamp


def test_dvc_exp_run_with_a_params_override_reruns_download(project_clone):
    project_clone.set_params(TINY_RECORDER)

    project_clone.run("dvc", "exp", "run", "download", "-S", "download.max_videos=1")

    assert [v["id"] for v in manifest(project_clone)] == ["vizdoom-my-way-home-s0-e000"]
    exps = json.loads(project_clone.run("dvc", "exp", "show", "--json").stdout)
    text = json.dumps(exps)
    assert '"max_videos": 1' in text and '"max_videos": 24' in text  # the experiment beside the baseline


def queue_finished(clone) -> str:
    """`dvc queue status` once no experiment is queued or running (polled; 5 minutes at most)."""
    deadline = time.monotonic() + 300
    while True:
        status = clone.run("dvc", "queue", "status").stdout
        if not re.search(r"\b(Queued|Running)\b", status) or time.monotonic() > deadline:
            return status
        time.sleep(1)


@pytest.mark.slow
def test_a_sweep_runs_on_dvcs_own_queue(project_clone):
    # the README's sweep, on the cheap stage: queue experiments, start workers, wait, compare
    project_clone.set_params(TINY_RECORDER)
    for n in (1, 2):
        project_clone.run("dvc", "exp", "run", "--queue", "download", "-S", f"download.max_videos={n}", "-n", f"videos-{n}")
    assert "Queued" in project_clone.run("dvc", "queue", "status").stdout
    project_clone.run("dvc", "queue", "start", "-j", "2")
    status = queue_finished(project_clone)
    assert re.search(r"videos-1\s.*Success", status) and re.search(r"videos-2\s.*Success", status), status

    rows = list(csv.DictReader(io.StringIO(project_clone.run("dvc", "exp", "show", "--csv").stdout)))
    runs = {r["Experiment"]: r for r in rows if r["Experiment"]}
    assert {name: runs[name]["download.max_videos"] for name in ("videos-1", "videos-2")} == {"videos-1": "1", "videos-2": "2"}
    assert runs["videos-1"]["fingerprints/download.txt"] == runs["videos-2"]["fingerprints/download.txt"]


def test_the_stage_rejects_a_misspelt_key_naming_it(project_clone):
    project_clone.set_params({"download": {"max_heigth": 480}})
    proc = project_clone.run("python", "-m", "stages.download", check=False)
    assert proc.returncode != 0
    assert "download.max_heigth: unknown key (did you mean max_height?)" in proc.stderr
    assert not (project_clone.root / "data/raw").exists()  # failed before any work


# ---------------------------------------------------------------------------------------------
# Code and settings reach each stage through fingerprints/<stage>.txt (pipeline/fingerprint.py)
# ---------------------------------------------------------------------------------------------
def dvc_stages() -> dict:
    return yaml.safe_load((PROJECT_ROOT / "dvc.yaml").read_text())["stages"]


def test_every_stage_depends_on_its_fingerprint_and_lists_no_code_file():
    stages = dvc_stages()
    assert set(stages) == {"fingerprint", *STAGES}
    assert stages["fingerprint"]["deps"] == ["pipeline", "stages", SETTINGS_FILE]
    for name, (module, sections) in STAGES.items():
        stage = stages[name]
        assert stage["cmd"] == f"python -m {module}", name
        assert stage["deps"][0] == f"fingerprints/{name}.txt", name
        assert [d for d in stage["deps"] if d.endswith(".py") or d in ("pipeline", "stages")] == [], name
        # a stage's params.yaml sections are among the sections its fingerprint takes from settings.yaml
        assert set(stage.get("params", [])) <= set(sections), name


def test_a_fingerprint_holds_exactly_the_code_a_stage_imports():
    train = code_of("train", PROJECT_ROOT)
    assert "stages/train.py" in train and "pipeline/networks/dynamics.py" in train
    assert "pipeline/networks/tokenizer.py" not in train  # train never runs the tokenizer
    assert not set(train) & SHARED_MODULES
    assert "pipeline/benchmark/outputs.py" in code_of("benchmark", PROJECT_ROOT)
    # the report: its own package and the key names it shares with the benchmark's writer, nothing that runs rollouts
    assert [f for f in code_of("report", PROJECT_ROOT) if f.startswith("pipeline/")] == sorted(
        ["pipeline/benchmark/keys.py", *(f.relative_to(PROJECT_ROOT).as_posix()
                                         for f in (PROJECT_ROOT / "pipeline/report").glob("*.py"))])


def copy_code(root: Path) -> Path:
    for d in ("pipeline", "stages"):
        shutil.copytree(PROJECT_ROOT / d, root / d, ignore=shutil.ignore_patterns("__pycache__"))
    return root


def test_an_edit_changes_the_fingerprints_of_exactly_the_stages_that_run_the_file(tmp_path):
    root = copy_code(tmp_path)
    settings = yaml.safe_load((PROJECT_ROOT / SETTINGS_FILE).read_text())
    before = {s: fingerprint(s, settings, root) for s in STAGES}
    with open(root / "pipeline/networks/dynamics.py", "a") as f:
        f.write("\n# an edit\n")
    after = {s: fingerprint(s, settings, root) for s in STAGES}
    assert sorted(s for s in STAGES if before[s] != after[s]) == ["benchmark", "train"]

    (root / "pipeline/config.py").write_text((root / "pipeline/config.py").read_text() + "\n# shared\n")
    assert {s: fingerprint(s, settings, root) for s in STAGES} == after  # the schema is no stage's code


def test_a_setting_changes_the_fingerprints_of_exactly_the_stages_that_read_its_section(tmp_path):
    settings = yaml.safe_load((PROJECT_ROOT / SETTINGS_FILE).read_text())
    before = {s: fingerprint(s, settings, PROJECT_ROOT) for s in STAGES}
    settings["download"]["recorder"]["crf"] = 23
    settings["benchmark"]["tau_ctx"] = 0.2
    after = {s: fingerprint(s, settings, PROJECT_ROOT) for s in STAGES}
    assert sorted(s for s in STAGES if before[s] != after[s]) == ["benchmark", "download"]
    assert '"crf": 23' in after["download"]


def test_the_far_host_code_and_settings_rerun_the_benchmark_only_when_it_is_the_host(tmp_path):
    root = copy_code(tmp_path)
    settings = yaml.safe_load((PROJECT_ROOT / SETTINGS_FILE).read_text())
    before = {host: {s: fingerprint(s, settings, root, host) for s in STAGES} for host in ("pipeline", "far")}
    assert "pipeline/hosts/far_host.py" in code_of("benchmark", root, "far")
    assert not FAR_CODE & set(code_of("benchmark", root))
    with open(root / "pipeline/hosts/far_host.py", "a") as f:
        f.write("\n# an edit\n")
    settings["benchmark"]["far"]["sampling_steps"] = 10
    after = {host: {s: fingerprint(s, settings, root, host) for s in STAGES} for host in ("pipeline", "far")}
    assert after["pipeline"] == before["pipeline"]
    assert sorted(s for s in STAGES if before["far"][s] != after["far"][s]) == ["benchmark"]


def test_the_fingerprint_stage_writes_one_file_per_stage(tmp_path):
    root = copy_code(tmp_path)
    for name in ("params.yaml", SETTINGS_FILE):
        shutil.copy(PROJECT_ROOT / name, root / name)
    proc = subprocess.run([sys.executable, "-m", "stages.fingerprint"], cwd=root, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(root)}, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in (root / "fingerprints").iterdir()) == sorted(f"{s}.txt" for s in STAGES)
    text = (root / "fingerprints/train.txt").read_text()
    assert "code pipeline/networks/dynamics.py " in text and "settings model " in text
