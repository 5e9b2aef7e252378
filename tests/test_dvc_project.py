"""The DVC project works from a fresh git clone: `dvc repro download`, `dvc exp run -S ...`."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import yaml

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

    assert [v["id"] for v in manifest(project_clone)] == ["atari-boxing-s0-e000"]
    exps = json.loads(project_clone.run("dvc", "exp", "show", "--json").stdout)
    text = json.dumps(exps)
    assert '"max_videos": 1' in text and '"max_videos": 6' in text  # the experiment beside the baseline


def test_the_stage_rejects_a_misspelt_key_naming_it(project_clone):
    project_clone.set_params({"download": {"max_heigth": 480}})
    proc = project_clone.run("python", "-m", "stages.download", check=False)
    assert proc.returncode != 0
    assert "download.max_heigth: unknown key (did you mean max_height?)" in proc.stderr
    assert not (project_clone.root / "data/raw").exists()  # failed before any work


# Every stage imports these; listing them would rerun the whole pipeline on a schema edit (or on a
# reworded error message: pipeline/errors.py only says how a stage ends on a user's error).
SHARED_MODULES = {"pipeline/__init__.py", "pipeline/atomic.py", "pipeline/config.py", "pipeline/errors.py",
                  "pipeline/paths.py"}


def imported_modules(path: Path, seen: set[str] | None = None) -> set[str]:
    """The pipeline modules a file imports, transitively (repository-relative paths)."""
    seen = set() if seen is None else seen
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("pipeline"):
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names if a.name.startswith("pipeline")]
        else:
            continue
        for name in names:
            base = PROJECT_ROOT / name.replace(".", "/")
            module = base.with_suffix(".py") if base.with_suffix(".py").is_file() else base / "__init__.py"
            rel = module.relative_to(PROJECT_ROOT).as_posix()
            if module.is_file() and rel not in seen:
                seen.add(rel)
                imported_modules(module, seen)
    return seen


def stage_module(stage: dict) -> str:
    """The stages/ file a dvc.yaml stage runs (its cmd is `python -m stages.<module>`)."""
    return stage["cmd"].split()[-1].replace(".", "/") + ".py"


def expected_code_deps(stage: dict) -> list[str]:
    module = stage_module(stage)
    return sorted({module} | (imported_modules(PROJECT_ROOT / module) - SHARED_MODULES))


def test_each_stage_depends_on_exactly_the_code_it_runs():
    stages = yaml.safe_load((PROJECT_ROOT / "dvc.yaml").read_text())["stages"]
    for name, stage in stages.items():
        code_deps = {d for d in stage["deps"] if d.endswith(".py")}
        expected = set(expected_code_deps(stage))
        assert code_deps == expected, (name, sorted(code_deps ^ expected))
