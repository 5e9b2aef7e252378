"""The DVC project works from a fresh git clone: `dvc repro download`, `dvc exp run -S ...`."""

from __future__ import annotations

import json

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
