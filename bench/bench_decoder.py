"""The conv decoder's x2 upsampling, side by side in one run: ``nn.Upsample(mode="nearest")`` (torch's
interpolate kernel) against ``Upsample2x`` (an expand and a reshape, the same values), alone at each of
the decoder's upsampling inputs and inside the whole decoder (forward; forward + backward as the
tokenizer trains), at the default params' sizes and a benchmark batch of latents.

    python bench/bench_decoder.py [--frames 176 --repeats 5]

Writes the table between the ``decoder table`` markers of docs/speed.md and bench/results/decoder.json.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import torch

from pipeline.config import load_params
from pipeline.networks.tokenizer import Upsample2x, build_tokenizer, tokenizer_config

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from measure import write_block  # noqa: E402


def best_seconds(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)  # the least disturbed by other work on the machine


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=176, help="latent frames per decoder call (16 clips x 11)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", type=Path, default=ROOT / "bench/results/decoder.json")
    ap.add_argument("--docs", type=Path, default=ROOT / "docs/speed.md")
    args = ap.parse_args()
    torch.manual_seed(0)
    params = load_params(ROOT / "params.yaml")
    tokenizer = build_tokenizer(tokenizer_config(params.tokenizer, params.extract.size))
    ours = tokenizer.decoder
    torchs = copy.deepcopy(ours)
    interpolate = torch.nn.Upsample(scale_factor=2, mode="nearest")
    ups = [i for i, layer in enumerate(torchs.net) if isinstance(layer, Upsample2x)]
    for i in ups:
        torchs.net[i] = interpolate
    latents = torch.randn(args.frames, *tokenizer.latent_shape)

    rows, inputs = [], []
    with torch.no_grad():
        x = latents
        for i, layer in enumerate(ours.net):
            if i in ups:
                inputs.append(x)
            x = layer(x)
        for x in inputs:
            assert torch.equal(Upsample2x()(x), interpolate(x))
            rows.append((f"x2 upsampling alone, input {tuple(x.shape)}",
                         best_seconds(lambda x=x: interpolate(x), args.repeats),
                         best_seconds(lambda x=x: Upsample2x()(x), args.repeats)))
        assert torch.equal(ours(latents), torchs(latents))
        rows.append(("decoder forward", best_seconds(lambda: torchs(latents), args.repeats),
                     best_seconds(lambda: ours(latents), args.repeats)))

    def train_step(decoder):
        decoder.zero_grad(set_to_none=True)
        decoder(latents).square().mean().backward()

    rows.append(("decoder forward + backward", best_seconds(lambda: train_step(torchs), args.repeats),
                 best_seconds(lambda: train_step(ours), args.repeats)))

    results = {"frames": args.frames, "threads": torch.get_num_threads(),
               "rows": [{"what": w, "interpolate_s": a, "expand_s": b} for w, a, b in rows]}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    lines = [f"{args.frames} latent frames per call, {results['threads']} threads, best of {args.repeats}; "
             "the two give identical values (checked in the run).", "",
             "| measure | nn.Upsample (interpolate) | Upsample2x (expand) | speed-up |", "| --- | --- | --- | --- |"]
    lines += [f"| {w} | {a * 1e3:,.1f} ms | {b * 1e3:,.1f} ms | x{a / b:.2f} |" for w, a, b in rows]
    text = "\n".join(lines)
    print(text)
    write_block(args.docs, "decoder table", text)


if __name__ == "__main__":
    main()
