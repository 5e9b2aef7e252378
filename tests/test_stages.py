"""Every stage ends a user's error (an input missing because a stage was run out of order, a damaged
input) with a message that names the file and what to do, exit status 1 and no traceback;
--debug or PIPELINE_DEBUG=1 shows the traceback."""

import importlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.runtime.errors import DEBUG_ENV

REPO = Path(__file__).resolve().parents[1]
HINT = "(traceback: --debug or PIPELINE_DEBUG=1)"

# stage module -> (what it is missing or what is damaged, the message it prints)
CASES = {
    "download": ("data/raw/manifest.json", "download: data/raw/manifest.json: not a manifest this pipeline wrote"),
    "extract": ("data/raw", "extract: data/raw: no such directory (run the download stage first)"),
    "train_tokenizer": ("data/frames.zarr", "train_tokenizer: data/frames.zarr: not a zarr store (run `dvc repro extract` "
                                            "first; `dvc repro` runs the stages in order)"),
    "tokenize_frames": ("models/tokenizer", "tokenize: models/tokenizer/config.json: no checkpoint here (run the stage "
                                            "that trains it first: `dvc repro`)"),
    "train": ("data/latents.zarr", "train: data/latents.zarr: not a zarr store (run `dvc repro tokenize` first; "
                                   "`dvc repro` runs the stages in order)"),
    "benchmark": ("data/frames.zarr", "benchmark: data/frames.zarr: not a zarr store (run `dvc repro extract` first"),
}


@pytest.fixture
def project(tmp_path, monkeypatch):
    """An empty project: params.yaml, no data (a damaged manifest for download, which needs none)."""
    for name in ("params.yaml", "settings.yaml"):
        shutil.copy(REPO / name, tmp_path / name)
    (tmp_path / "data/raw").mkdir(parents=True)
    (tmp_path / "data/raw/manifest.json").write_text('{"videos": [{"id": ')  # cut short
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(DEBUG_ENV, raising=False)
    return tmp_path


def stage_errors(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if not line.startswith(("INFO", "sources:"))]


@pytest.mark.parametrize("module", list(CASES))
def test_a_stage_run_out_of_order_names_the_missing_input_in_two_lines(project, module, capsys):
    what, message = CASES[module]
    if module != "download":
        shutil.rmtree(project / "data/raw")
    stage = importlib.import_module(f"stages.{module}")
    with pytest.raises(SystemExit) as info:
        stage.main()
    assert info.value.code == 1
    err = stage_errors(capsys)
    assert err[0].startswith(message) and what in err[0]
    assert err[1:] == [f"{message.split(':')[0]}: {HINT}"] or module == "download"  # download's message says what to do
    assert "Traceback" not in "\n".join(err)

    with pytest.raises(Exception) as debug:  # --debug: the error itself, with its traceback
        stage.main(["--debug"])
    assert not isinstance(debug.value, SystemExit) and str(debug.value).startswith(message.split(": ", 1)[1])


def test_pipeline_debug_shows_the_traceback_of_a_stage_run_as_dvc_runs_it(project):
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    env.pop(DEBUG_ENV, None)
    plain = subprocess.run([sys.executable, "-m", "stages.extract"], cwd=project, env=env, capture_output=True, text=True)
    assert plain.returncode == 1 and plain.stderr.splitlines() == [
        "extract: data/raw/manifest.json: not a manifest this pipeline wrote (JSONDecodeError('Expecting value: line 1 "
        "column 20 (char 19)')); delete it to start over", f"extract: {HINT}"]
    debug = subprocess.run([sys.executable, "-m", "stages.extract"], cwd=project, env={**env, DEBUG_ENV: "1"},
                           capture_output=True, text=True)
    assert debug.returncode == 1 and "Traceback" in debug.stderr and "ExtractError: data/raw/manifest.json" in debug.stderr


def test_a_stage_file_run_directly_imports_the_pipeline_beside_it(project):
    """`python stages/<x>.py` (not `-m stages.<x>`) works like `-m`: with this checkout's pipeline, not
    an installed one, here a copy whose stage paths all start with here/."""
    ignore = shutil.ignore_patterns("__pycache__")
    for d in ("pipeline", "stages"):
        shutil.copytree(REPO / d, project / d, ignore=ignore)
    paths = project / "pipeline/paths.py"
    paths.write_text(paths.read_text().replace('Path("data/', 'Path("here/data/').replace('Path("models/', 'Path("here/models/'))
    (project / "here").mkdir()
    shutil.move(project / "data", project / "here/data")
    shutil.copytree(project / "here/data", project / "with_raw")
    shutil.rmtree(project / "here/data/raw")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", DEBUG_ENV)} | {"OMP_NUM_THREADS": "1"}
    procs = {}
    for module in CASES:
        if module == "download":  # the damaged manifest is where the copy's paths look for it
            shutil.copytree(project / "with_raw/raw", project / "here/data/raw")
        procs[module] = subprocess.Popen([sys.executable, f"stages/{module}.py"], cwd=project, env=env,
                                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        if module == "download":
            procs[module].wait(timeout=120)  # before the other stages find its raw directory
            shutil.rmtree(project / "here/data/raw")
    for module, proc in procs.items():
        _, err = proc.communicate(timeout=300)
        prog, message = CASES[module][1].split(": ", 1)
        lines = [line for line in err.splitlines() if not line.startswith(("INFO", "sources:"))]
        assert proc.returncode == 1 and lines[0].startswith(f"{prog}: here/{message}"), (module, err)
        assert "Traceback" not in err
