"""extract.engine: ray against a real Ray cluster started on loopback (a head and a second node):
the store equals the local engine's, frame for frame, on the default recordings and on videos
where one worker is killed mid-video."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zarr

from pipeline.config import DownloadParams, ExtractParams
from pipeline.data.extract import extract_all
from pipeline.data.sources import download
from tests.data.video.synth import make_video

pytestmark = pytest.mark.slow  # a Ray cluster: two nodes of Python processes on the shared 2-core machine

RAY = str(Path(sys.executable).parent / "ray")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ray_cluster():
    """The address of a two-node Ray cluster on 127.0.0.1 (1 CPU a node); stopped after the module."""
    env = os.environ | {"RAY_USAGE_STATS_ENABLED": "0", "OMP_NUM_THREADS": "1"}
    port = free_port()
    common = ["--num-cpus=1", "--node-ip-address=127.0.0.1", "--disable-usage-stats"]
    subprocess.run([RAY, "start", "--head", f"--port={port}", "--include-dashboard=false", *common],
                   check=True, env=env, capture_output=True, timeout=180)
    try:
        subprocess.run([RAY, "start", f"--address=127.0.0.1:{port}", *common], check=True, env=env, capture_output=True,
                       timeout=180)
        yield f"127.0.0.1:{port}"
    finally:
        subprocess.run([RAY, "stop", "--force"], env=env, capture_output=True, timeout=120)


def store_contents(path: Path) -> dict:
    """Every video's arrays and attributes, and the root's attributes."""
    root = zarr.open_group(str(path), mode="r")
    out = {"": dict(root.attrs)}
    for vid in sorted(root.group_keys()):
        g = root[vid]
        out[vid] = {"attrs": dict(g.attrs), **{name: g[name][:] for name in sorted(g.array_keys())}}
    return out


def assert_same_store(a: Path, b: Path) -> None:
    x, y = store_contents(a), store_contents(b)
    assert x.keys() == y.keys()
    for vid in x:
        if vid == "":
            assert x[vid] == y[vid]
            continue
        assert x[vid].keys() == y[vid].keys(), vid
        for name in x[vid]:
            if name == "attrs":
                assert x[vid][name] == y[vid][name], vid
            else:
                np.testing.assert_array_equal(x[vid][name], y[vid][name], err_msg=f"{vid}/{name}")


def ray_params(address: str, **kw) -> ExtractParams:
    return ExtractParams(**{"size": 32, "engine": "ray", "ray_address": address, **kw})


def test_ray_writes_the_store_the_local_engine_writes_on_the_default_recordings(tmp_path, ray_cluster):
    raw = tmp_path / "raw"
    params = DownloadParams(sources=["vizdoom:my_way_home"], max_videos=3,
                            recorder={"episodes": 3, "max_frames": 60})
    download(params, 0, raw)
    local = extract_all(raw, tmp_path / "local.zarr", tmp_path / "local.json", ExtractParams(size=32, workers=1), 0)
    ray = extract_all(raw, tmp_path / "ray.zarr", tmp_path / "ray.json", ray_params(ray_cluster), 0)
    assert local["n_ok"] == ray["n_ok"] == 3
    assert [v["split"] for v in local["videos"]] == [v["split"] for v in ray["videos"]]
    assert_same_store(tmp_path / "local.zarr", tmp_path / "ray.zarr")
    assert not list((tmp_path / "ray.zarr").glob("*.tmp-*"))


def test_a_bad_video_is_reported_by_ray_as_the_local_engine_reports_it(tmp_path, ray_cluster):
    raw = tmp_path / "raw"
    make_video(raw / "good.mp4", 64, 48, seconds=1.0)
    (raw / "broken.mp4").write_bytes(b"not a video at all")
    local = extract_all(raw, tmp_path / "local.zarr", tmp_path / "local.json", ExtractParams(size=16), 0)
    ray = extract_all(raw, tmp_path / "ray.zarr", tmp_path / "ray.json", ray_params(ray_cluster, size=16), 0)
    strip = lambda report: [{k: v for k, v in e.items() if k != "seconds"} for e in report["videos"]]  # noqa: E731
    assert strip(local) == strip(ray) and local["n_skipped"] == 1


def test_an_unreachable_cluster_is_named_and_nothing_is_written(tmp_path):
    raw = tmp_path / "raw"
    make_video(raw / "a.mp4", 64, 48, seconds=0.5)
    from pipeline.data.extract_ray import RayClusterError

    with pytest.raises(RayClusterError, match=r"extract\.ray_address.*127\.0\.0\.1:1"):
        extract_all(raw, tmp_path / "f.zarr", tmp_path / "f.json", ray_params("127.0.0.1:1"), 0)
    assert not (tmp_path / "f.zarr").exists() and not list(tmp_path.glob("f.zarr.tmp-*"))


@pytest.mark.faults
def test_a_ray_worker_killed_mid_video_is_retried_and_the_store_equals_the_uninterrupted_one(tmp_path, ray_cluster):
    raw = tmp_path / "raw"
    for i in range(3):
        make_video(raw / f"v{i}.mp4", 320, 240, fps=30, seconds=10.0, source="testsrc2")
    cfg = dict(size=32, chunk_frames=8, shard_frames=16)
    extract_all(raw, tmp_path / "local.zarr", tmp_path / "local.json", ExtractParams(workers=1, **cfg), 0)

    out = tmp_path / "ray.zarr"
    code = ("import sys; from pipeline.config import ExtractParams; from pipeline.data.extract import extract_all; "
            f"extract_all({str(raw)!r}, {str(out)!r}, {str(tmp_path / 'ray.json')!r}, "
            f"ExtractParams(engine='ray', ray_address={ray_cluster!r}, **{cfg!r}), 0)")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    killed = None
    deadline = time.time() + 240
    while killed is None and proc.poll() is None and time.time() < deadline:
        for group in tmp_path.glob("ray.zarr.tmp-*/v*.tmp-*"):
            # a video being written: kill the worker writing it (its pid names the group)
            killed = int(group.name.split(".tmp-")[1].split("-")[0])
            os.kill(killed, signal.SIGKILL)
            break
        time.sleep(0.001)
    output, _ = proc.communicate(timeout=300)
    assert killed is not None, f"no worker was caught mid-video:\n{output[-3000:]}"
    assert proc.returncode == 0, output[-3000:]
    assert_same_store(tmp_path / "local.zarr", out)
    assert not list(out.glob("*.tmp-*")) and not list(tmp_path.glob("ray.zarr.tmp-*"))
    shutil.rmtree(out)
