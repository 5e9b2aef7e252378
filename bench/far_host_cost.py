"""What one FAR-generated frame costs: kv vs recompute, short (5) and long (36) context.

FAR_B (the real B config, random weights: cost does not depend on the values) at 64 px
(8x8 latents), ``sampling_steps`` Euler steps per frame, the history given as clean context.
Prints seconds per generated frame (wall and, on CPU, process time: on a shared machine the
latter is the stable figure) and the recompute/kv ratio measured side by side.

    python bench/far_host_cost.py [--device cuda] [--steps 20] [--contexts 5 36] [--repeats 3]
"""

from __future__ import annotations

import argparse
import time

import torch

from pipeline.hosts.far_host import FarHost
from pipeline.hosts.far_weights import VARIANTS, weights_dtype
from pipeline.networks.far import FAR
from pipeline.rollout.api import FrameInfo
from pipeline.rollout.loop import finish_queued_work


class _NoVAE:  # the DCAE plays no part in generation; only its scaling factor is read
    class config:
        scaling_factor = 1.0

    def eval(self):
        return self


def seconds_per_frame(host: FarHost, mode: str, context: torch.Tensor, repeats: int) -> tuple[float, float]:
    """Best-of-``repeats`` (wall, process CPU) seconds to generate one frame after ``context``."""
    times = []
    for r in range(repeats):
        session = host.start(mode, torch.Generator().manual_seed(r))
        for x in context:
            session.append(x, FrameInfo(0))
        finish_queued_work(host.device)
        t0, c0 = time.perf_counter(), time.process_time()
        session.generate(FrameInfo(0))
        finish_queued_work(host.device)
        times.append((time.perf_counter() - t0, time.process_time() - c0))
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--variant", default="FAR_B_UCF101", choices=sorted(VARIANTS))
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--contexts", type=int, nargs="+", default=[5, 36])
    ap.add_argument("--repeats", type=int, default=1, help="best of N")
    ap.add_argument("--threads", type=int, default=1, help="CPU threads (1: process time = compute)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    device = torch.device(args.device)
    torch.manual_seed(0)
    model = FAR(VARIANTS[args.variant].transformer).to(device, weights_dtype(device)).eval()
    host = FarHost(model, _NoVAE(), sampling_steps=args.steps)
    print(f"{args.variant} on {device} ({weights_dtype(device)}, {torch.get_num_threads()} threads), "
          f"{args.steps} steps per frame, 8x8 latents")
    seconds_per_frame(host, "kv", torch.randn(1, 32, 8, 8), 1)  # warm-up: allocations, kernels
    for n in args.contexts:
        context = torch.randn(n, 32, 8, 8)
        (rc, rc_cpu), (kv, kv_cpu) = (seconds_per_frame(host, m, context, args.repeats) for m in ("recompute", "kv"))
        print(f"context {n:3d}: wall recompute {rc:.2f} s/frame, kv {kv:.2f} s/frame ({rc / kv:.2f}x); "
              f"process CPU recompute {rc_cpu:.2f} s, kv {kv_cpu:.2f} s ({rc_cpu / kv_cpu:.2f}x)", flush=True)


if __name__ == "__main__":
    main()
