import json
import subprocess
import sys
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from pipeline.metrics import LPIPS, psnr, ssim
from pipeline.metrics.__main__ import main

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    d = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:48, 0:48]
    a = np.stack([xx * 5, yy * 5, (xx + yy) * 2], -1).astype(np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-20, 21, a.shape), 0, 255).astype(np.uint8)
    iio.imwrite(d / "a.png", a)
    iio.imwrite(d / "b.png", b)
    iio.imwrite(d / "small.png", a[:32, :32])
    return d, a, b


def to_tensor(img):
    return torch.from_numpy(img).permute(2, 0, 1).float().div(255)[None]


def test_cli_json_matches_library_on_two_images(images, capsys):
    d, a, b = images
    assert main([str(d / "a.png"), str(d / "b.png"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["n_frames"] == 1
    assert out["mean"]["psnr"] == pytest.approx(psnr(to_tensor(b), to_tensor(a)).item(), abs=1e-4)
    assert out["mean"]["ssim"] == pytest.approx(ssim(to_tensor(b), to_tensor(a)).item(), abs=1e-5)
    assert out["mean"]["lpips"] == pytest.approx(LPIPS()(to_tensor(b), to_tensor(a)).item(), abs=1e-5)


def test_cli_reads_videos_and_frames_store_groups(frames_store, tmp_path, capsys):
    import zarr

    frames = zarr.open_group(str(frames_store))["v0"]["frames"][:]
    video = tmp_path / "v0.mkv"  # lossless (FFV1) so that the decode is exact
    import imageio_ffmpeg

    writer = imageio_ffmpeg.write_frames(str(video), frames.shape[1:3][::-1], codec="ffv1", pix_fmt_out="bgr0",
                                         macro_block_size=1, fps=20)
    writer.send(None)
    for f in frames:
        writer.send(np.ascontiguousarray(f))
    writer.close()
    assert main([str(frames_store / "v0"), str(video), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["n_frames"] == len(frames)
    assert out["mean"]["psnr"] == pytest.approx(100.0) and out["mean"]["lpips"] == pytest.approx(0.0, abs=1e-6)
    assert main([str(frames_store / "v0"), str(frames_store / "v1"), "--max-frames", "5"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["frame", "psnr", "ssim", "lpips"] and len(table) == 1 + 5 + 1


def test_cli_names_the_problem(images, capsys):
    d, _, _ = images
    assert main([str(d / "a.png"), str(d / "small.png")]) == 2
    assert "frame sizes differ" in capsys.readouterr().err
    assert main([str(d / "a.png"), str(d / "missing.png")]) == 2
    assert "missing.png: no such file" in capsys.readouterr().err


def test_cli_runs_as_a_module(images):
    d, _, _ = images
    proc = subprocess.run([sys.executable, "-m", "pipeline.metrics", str(d / "a.png"), str(d / "b.png")],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1].split()[0] == "mean"
