"""How fast `python -m pipeline.play` plays on this machine: frames per second of the model alone
(the rollout step + decode) and of a whole key press (game + model + the page's images), per policy
and budget, at the benchmark's K (sampling_steps) in kv mode. Needs the outputs of `dvc repro`.

    python bench/bench_play.py [--presses 100]

Writes bench/results/play.json and the table of docs/speed.md (between its markers).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from measure import write_block  # noqa: E402

from pipeline.config import load_params  # noqa: E402
from pipeline.hosts.build import benchmark_device, build_host  # noqa: E402
from pipeline.play.session import PlaySession  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TARGET_FPS = 10.0


def measure(session: PlaySession, policy: str, budget: int | None, presses: int, seed: int) -> dict:
    session.configure(policy, budget)
    session.reset(0)
    keys = sorted(session.keys)
    rng = np.random.default_rng(seed)
    model_s, press_s = [], []
    for key in rng.choice(keys, size=presses):
        t0 = time.perf_counter()
        session.press(str(key))
        session.view()  # what the page is sent: the PNGs of both panes and the strips
        press_s.append(time.perf_counter() - t0)
        model_s.append(session.frame_ms / 1000)
    warm = slice(5, None)  # the first frames prefill the context
    return {"policy": policy, "budget": budget, "presses": presses,
            "model_fps": 1 / float(np.mean(model_s[warm])), "press_fps": 1 / float(np.mean(press_s[warm])),
            "model_ms_p95": 1000 * float(np.percentile(model_s[warm], 95))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presses", type=int, default=100)
    ap.add_argument("--out", type=Path, default=ROOT / "bench/results/play.json")
    ap.add_argument("--docs", type=Path, default=ROOT / "docs/speed.md")
    args = ap.parse_args()
    params = load_params()
    device = benchmark_device(params)
    session = PlaySession(params, build_host(params, device), "long", "pose_retrieval", 8)
    rows = []
    try:
        for policy in ("pose_retrieval", "recent_window"):
            for budget in (4, 8, None):
                rows.append(measure(session, policy, budget, args.presses, params.seed))
                print(rows[-1], flush=True)
    finally:
        session.close()
    result = {"machine": f"{os.cpu_count()} cores, {device.type}, torch threads {torch.get_num_threads()}",
              "sampling_steps": params.benchmark.sampling_steps, "size": params.extract.size, "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    lines = [f"Measured on {result['machine']}; K = {result['sampling_steps']} Euler steps, {result['size']} px, kv mode, "
             f"{args.presses} seeded key presses per row from test clip 0 of the long workload (target: "
             f"{TARGET_FPS:g} model frames/s).", "",
             "| policy | budget | model frames/s | key presses/s (game + model + page images) | model ms, p95 |",
             "| --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {r['policy']} | {'all' if r['budget'] is None else r['budget']} | {r['model_fps']:.1f} | "
                     f"{r['press_fps']:.1f} | {r['model_ms_p95']:.0f} |")
    text = "\n".join(lines)
    print(text)
    write_block(args.docs, "play table", text)


if __name__ == "__main__":
    main()
