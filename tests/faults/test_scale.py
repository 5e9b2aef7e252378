"""Faults at scale: one of two training processes killed, and a disk that fills up while a store
is written. (A Ray worker killed mid-video: tests/data/test_extract_ray.py, marked faults.)"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import yaml

from tests.builders import default_raw_params, write_latents_store
from tests.data.video.synth import _encode
from tests.training.test_dynamics import tiny_raw

pytestmark = pytest.mark.faults
REPO = Path(__file__).resolve().parents[2]


def start_train(work: Path) -> subprocess.Popen:
    env = os.environ | {"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "stages.train"], cwd=work, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def checkpoint_step(work: Path) -> int:
    try:
        return json.loads((work / "models/dynamics/config.json").read_text())["step"]
    except (FileNotFoundError, json.JSONDecodeError):
        return 0


def rank_process(stage: subprocess.Popen, rank: int) -> psutil.Process | None:
    for child in psutil.Process(stage.pid).children(recursive=True):
        try:
            if child.environ().get("RANK") == str(rank):
                return child
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return None


@pytest.mark.slow  # three torchrun launches of two ranks each
def test_one_of_two_training_processes_killed_resumes_from_its_last_checkpoint_to_the_same_weights(tmp_path):
    raw = tiny_raw(steps=40, nproc_per_node=2, log_every=5, checkpoint_every=10)
    runs = {}
    for name in ("uninterrupted", "killed"):
        work = tmp_path / name
        (work / "data").mkdir(parents=True)
        write_latents_store(work / "data/latents.zarr")
        (work / "params.yaml").write_text(yaml.safe_dump(raw))
        runs[name] = work
    clean = start_train(runs["uninterrupted"])
    assert clean.wait(timeout=600) == 0, clean.communicate()[0][-3000:]

    stage = start_train(runs["killed"])
    victim, deadline = None, time.time() + 300
    while victim is None and stage.poll() is None and time.time() < deadline:
        if 10 <= checkpoint_step(runs["killed"]) < 40:
            victim = rank_process(stage, 1)
        time.sleep(0.05)
    assert victim is not None, f"rank 1 was never seen after the first checkpoint:\n{stage.communicate()[0][-3000:]}"
    step_at_kill = checkpoint_step(runs["killed"])
    victim.send_signal(signal.SIGKILL)
    output = stage.communicate(timeout=300)[0]
    assert stage.returncode != 0, "the stage went on without one of its processes"

    rerun = start_train(runs["killed"])
    output = rerun.communicate(timeout=600)[0]
    assert rerun.returncode == 0, output[-3000:]
    assert f"resuming from step {step_at_kill}/40" in output
    for name in ("model.safetensors", "ema.safetensors", "config.json"):
        assert (runs["killed"] / "models/dynamics" / name).read_bytes() == \
            (runs["uninterrupted"] / "models/dynamics" / name).read_bytes(), name
    resumed = json.loads((runs["killed"] / "metrics/train.json").read_text())["resumed_from"]
    assert resumed == [step_at_kill]


def noisy(path: Path) -> Path:
    return _encode(path, "testsrc2=s=160x120:r=30:d=3", vf="noise=alls=60:allf=t")


def in_small_filesystem(work: Path, megabytes: float, script: str) -> subprocess.CompletedProcess:
    """Run `script` (sh) in `work` with `work/data` on a tmpfs of that size, in a private mount
    namespace (the mount disappears with the command); skip where the kernel refuses one."""
    probe = subprocess.run(["unshare", "-rm", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"no private mount namespace here (unshare -rm: {probe.stderr.decode().strip()})")
    env = os.environ | {"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    inner = f"mount -t tmpfs -o size={int(megabytes * 1024)}k tmpfs data && {script}"
    return subprocess.run(["unshare", "-rm", "sh", "-c", inner], cwd=work, env=env, capture_output=True, text=True,
                          timeout=300)


def test_a_full_disk_during_a_store_write_is_a_named_error_and_leaves_nothing_at_a_final_name(tmp_path):
    work = tmp_path / "work"
    (work / "data").mkdir(parents=True)
    raw = tmp_path / "raw"
    for i in range(3):
        noisy(raw / f"v{i}.mp4")  # noise: frames no compressor can shrink much
    used = sum(f.stat().st_size for f in raw.iterdir())
    params = default_raw_params()
    params["extract"].update(size=96, workers=1)
    (work / "params.yaml").write_text(yaml.safe_dump(params))
    listing = "find data -name '*.tmp-*' | sed 's/^/TMP /'; ls data | sed 's/^/LS /'"
    proc = in_small_filesystem(work, used / 2**20 + 0.3, f"cp -r {raw} data/raw && {sys.executable} -m stages.extract; "
                                                        f"echo rc=$?; {listing}")
    out = proc.stdout + proc.stderr
    assert "rc=1" in out, out[-3000:]
    assert "no space left on device" in out and "data/frames.zarr" in out, out[-3000:]
    assert "Traceback" not in out
    assert "LS frames.zarr" not in out and "TMP " not in out, out  # nothing half-written, no leftovers
    assert "LS raw" in out  # what was there before is kept
    shutil.rmtree(work)
