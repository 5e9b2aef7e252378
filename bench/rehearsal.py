"""A scale rehearsal on this machine, and what it predicts for 50 h and 2,500 h of 256 px replays.

    python bench/rehearsal.py                  # >= 10 h of the embedded default at 64 px (about 40 min on 2 cores)
    python bench/rehearsal.py --hours 0.5      # a quick look

1. Runs the stages as DVC runs them on >= ``--hours`` of recorded ViZDoom video (17.5 fps,
   64 px): download (the recorder), extract, train_tokenizer (50 steps), tokenize, train (50
   steps), each with its wall time, time per hour of video and peak memory (the stage's own RSS,
   and PSS summed over its process tree, DataLoader and extract workers included).
2. Calibrates the 256 px path on small samples: extract of a 640x360 video (a YouTube replay's
   size) at 256 px and 20 fps, per core; store bytes per frame; the GPU preset's tokenizer
   (transformer, 256 px) and dynamics model: FLOPs per frame and per training step.
3. Predicts the wall time of 50 h and 2,500 h of 256 px replays on named machines: extract from
   its per-core rate (Ray over every node's cores), tokenize and train from FLOPs at an assumed
   share of the GPU's bf16 peak (no GPU measured here: the assumption is printed with the table).

Writes bench/results/rehearsal.json and the table of docs/scale.md (between its markers).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from measure import project, run_stage, write_block  # noqa: E402

from pipeline.config import merge_files, parse_params, read_param_files  # noqa: E402
from pipeline.data.latent_windows import Batch  # noqa: E402
from pipeline.data.video.ffmpeg import ffmpeg_exe  # noqa: E402
from pipeline.networks.dynamics import DynamicsTransformer, dynamics_config  # noqa: E402
from pipeline.networks.tokenizer import build_tokenizer, tokenizer_config  # noqa: E402
from pipeline.training.dynamics import global_plan, local_loss  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
FPS = 17.5  # the recorder's rate (35 tics/s, frame_skip 2)
REPLAY_FPS = 20.0  # the seed's replays: 344k frames from 5 h
H100_BF16 = 989e12  # dense bf16 FLOP/s of an H100 SXM (datasheet)
ASSUMED_MFU = 0.35  # share of that peak a transformer step of this size reaches (assumed, not measured here)
GPU_PRESET = {"model": {"dim": 512, "depth": 12, "heads": 8, "kv_heads": 2, "temporal_every": 4, "logit_softcap": 0.0,
                        "k_max": 64},
              "train": {"seq_len_short": 32, "seq_len_long": 64, "batch_size_short": 32, "batch_size_long": 8,
                        "steps": 100_000},
              "tokenizer": {"arch": "transformer", "mask_max": 0.9}, "extract": {"size": 256}}
MACHINES = {  # name: (nodes, CPU cores per node, GPUs per node)
    "1 node: 16 cores, 1 H100": (1, 16, 1),
    "1 node: 64 cores, 8 H100": (1, 64, 8),
    "8 nodes: 64 cores, 8 H100 each": (8, 64, 8),
}


def preset_params():
    raw = merge_files(read_param_files(ROOT / "params.yaml"))
    for section, values in GPU_PRESET.items():
        raw[section].update(values)
    return parse_params(raw)


def rehearse(work: Path, hours: float) -> dict:
    """Every stage on >= `hours` of recorded video at 64 px: seconds, per hour, peak memory."""
    frames_per_episode = 9000
    episodes = max(1, math.ceil(hours * 3600 * FPS / frames_per_episode))
    run = project(ROOT, work / "rehearsal", {
        "download": {"max_videos": episodes, "recorder": {"episodes": episodes, "max_frames": frames_per_episode}},
        "tokenizer": {"steps": 50, "val_every": 10**6, "checkpoint_every": 10**6},
        "train": {"steps": 50, "val_every": 10**6, "checkpoint_every": 10**6}})
    stages = {}
    for stage in ("download", "extract", "train_tokenizer", "tokenize_frames", "train"):
        print(f"rehearsal: {stage} ...", flush=True)
        stages[stage] = run_stage(ROOT, run, stage)
    report = json.loads((run / "data/frames_report.json").read_text())
    video_hours = report["n_frames"] / FPS / 3600
    store = sum(f.stat().st_size for f in (run / "data/frames.zarr").rglob("*") if f.is_file())
    for measured in stages.values():
        measured["seconds_per_hour"] = round(measured["seconds"] / video_hours, 1)
        measured["cpu_seconds_per_hour"] = round(measured["cpu_seconds"] / video_hours, 1)
    return {"episodes": episodes, "frames": report["n_frames"], "hours": round(video_hours, 2),
            "frames_store_bytes_per_frame": store / report["n_frames"], "stages": stages}


def calibrate(work: Path) -> dict:
    """The 256 px path on samples: extract rate per core, store bytes a frame, FLOPs of the preset."""
    raw = work / "calibrate/data/raw"
    raw.mkdir(parents=True, exist_ok=True)
    seconds = 60
    subprocess.run([ffmpeg_exe(), "-v", "error", "-y", "-f", "lavfi", "-i", f"testsrc2=s=640x360:r=30:d={seconds}",
                    "-vf", "noise=alls=12:allf=t", "-c:v", "libx264", "-preset", "veryfast", "-crf", "23",
                    "-pix_fmt", "yuv420p", str(raw / "replay.mp4")], check=True)
    run = project(ROOT, work / "calibrate", {"extract": {"size": 256, "fps": REPLAY_FPS, "workers": 1}})
    measured = run_stage(ROOT, run, "extract", threads=1)
    n = json.loads((run / "data/frames_report.json").read_text())["n_frames"]
    store = sum(f.stat().st_size for f in (run / "data/frames.zarr").rglob("*") if f.is_file())

    params = preset_params()
    tok = build_tokenizer(tokenizer_config(params.tokenizer, 256)).eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        tok.encode(torch.rand(1, 3, 256, 256))
    encode_flops = counter.get_total_flops()
    c, h, w = tok.latent_shape
    model = DynamicsTransformer(dynamics_config(params.model, (c, h, w), n_actions=18))
    t = params.train.seq_len_long
    batch = Batch("L", torch.randn(1, t, c, h, w), torch.randint(-1, 18, (1, t)))
    with FlopCounterMode(display=False) as counter:
        loss, _ = local_loss(model, batch, global_plan(batch, params, 0), params.train.bootstrap_space, "cpu")
        loss.backward()
    per_long_window = counter.get_total_flops()  # one window of seq_len_long frames, forward + backward
    tp = params.train
    mean_step = per_long_window * ((1 - tp.long_ratio) * tp.batch_size_short * tp.seq_len_short / t
                                   + tp.long_ratio * tp.batch_size_long)  # FLOPs scale with frames (short windows: fewer)
    return {"extract_frames_per_core_s": n / measured["cpu_seconds"], "extract_peak_rss_mb": measured["peak_rss_mb"],
            "store_bytes_per_frame_256": store / n, "tokenizer_encode_flops_per_frame": encode_flops,
            "latent_shape": [c, h, w], "train_flops_per_step": mean_step, "train_steps": tp.steps,
            "dynamics_params": sum(p.numel() for p in model.parameters())}


def predict(cal: dict) -> list[dict]:
    rows = []
    for hours in (50, 2500):
        frames = hours * 3600 * REPLAY_FPS
        for name, (nodes, cores, gpus) in MACHINES.items():
            gpu_flops = nodes * gpus * H100_BF16 * ASSUMED_MFU
            rows.append({
                "hours": hours, "machine": name, "frames": frames,
                "extract_h": frames / (cal["extract_frames_per_core_s"] * nodes * cores) / 3600,
                "tokenize_h": frames * cal["tokenizer_encode_flops_per_frame"] / gpu_flops / 3600,
                "train_h": cal["train_steps"] * cal["train_flops_per_step"] / gpu_flops / 3600,
                "frames_store_tb": frames * cal["store_bytes_per_frame_256"] / 1e12,
            })
    return rows


def table(result: dict) -> str:
    r, cal = result["rehearsal"], result["calibration"]
    lines = [f"Measured on this machine ({result['machine']}): {r['hours']} h of the embedded default "
             f"({r['frames']:,} frames at 64 px, {r['episodes']} recorded episodes).", "",
             "| stage | wall time | CPU time | CPU time per hour of video | peak RSS | peak PSS, process tree |",
             "| --- | --- | --- | --- | --- | --- |"]
    for stage, m in r["stages"].items():
        lines.append(f"| {stage} | {m['seconds']:,.0f} s | {m['cpu_seconds']:,.0f} s | {m['cpu_seconds_per_hour']:,.1f} s | "
                     f"{m['peak_rss_mb']:,} MB | {m['peak_tree_pss_mb']:,} MB |")
    lines += ["", "(train_tokenizer and train: 50 steps each; their time does not grow with the data. CPU time is the "
              "user + system time of the stage's whole process tree: unlike wall time, it does not grow when other work "
              f"shares the cores; load average during the run: {result['load_average']}.)", "",
              f"Calibration at 256 px: extract of a 640x360 30 fps video at {REPLAY_FPS:g} fps runs "
              f"{cal['extract_frames_per_core_s']:.0f} frames/s per core; a 256 px frame takes "
              f"{cal['store_bytes_per_frame_256'] / 1024:.0f} KiB in the store; the GPU preset's tokenizer encodes a frame in "
              f"{cal['tokenizer_encode_flops_per_frame'] / 1e9:.1f} GFLOP and its dynamics model "
              f"({cal['dynamics_params'] / 1e6:.0f} M parameters, latents {'x'.join(map(str, cal['latent_shape']))}) "
              f"trains a step in {cal['train_flops_per_step'] / 1e12:.1f} TFLOP.", "",
              f"Predicted for 256 px replays at {REPLAY_FPS:g} fps (GPU stages at an assumed {ASSUMED_MFU:.0%} of the H100's "
              f"bf16 peak; no GPU was measured; train is the preset's {cal['train_steps']:,} steps, whatever the hours):", "",
              prediction_table(result)]
    return "\n".join(lines)


def prediction_table(result: dict) -> str:
    lines = ["| video | machine | extract (Ray) | tokenize | train | frames store |", "| --- | --- | --- | --- | --- | --- |"]
    for p in result["prediction"]:
        lines.append(f"| {p['hours']:,} h | {p['machine']} | {hours(p['extract_h'])} | {hours(p['tokenize_h'])} | "
                     f"{hours(p['train_h'])} | {p['frames_store_tb'] * 1000:,.0f} GB |")
    return "\n".join(lines)


def hours(h: float) -> str:
    return f"{h * 60:.0f} min" if h < 1 else f"{h:,.1f} h"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hours", type=float, default=10.0)
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=ROOT / "bench/results/rehearsal.json")
    ap.add_argument("--docs", type=Path, default=ROOT / "docs/scale.md")
    ap.add_argument("--readme", type=Path, default=ROOT / "README.md")
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="rehearsal-"))
    t0 = time.perf_counter()
    memory = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30)
    gpu = "GPU " + torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    result = {"machine": f"{os.cpu_count()} cores, {memory} GiB, {gpu}",
              "rehearsal": rehearse(work, args.hours), "calibration": calibrate(work)}
    result["load_average"] = f"{os.getloadavg()[1]:.1f} over the last 5 minutes, {os.getloadavg()[2]:.1f} over 15"
    result["prediction"] = predict(result["calibration"])
    result["seconds"] = round(time.perf_counter() - t0)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    text = table(result)
    print(text)
    write_block(args.docs, "rehearsal table", text)
    write_block(args.readme, "scale prediction", prediction_table(result))


if __name__ == "__main__":
    main()
