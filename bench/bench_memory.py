"""Peak memory of the two training stages when the data set grows 5x, for one or more checkouts.

    python bench/bench_memory.py                                # this checkout, 4 vs 20 episodes at 256 px
    python bench/bench_memory.py --code /path/to/old/checkout   # ... side by side with another checkout
    python bench/bench_memory.py --stages train --work DIR      # remeasure one stage; keep the other rows

Records the embedded default (ViZDoom my_way_home) with 4 and with 20 episodes, extracts them at
``extract.size`` 256, and runs ``train_tokenizer``, ``tokenize`` and ``train`` as the stages run
(``python -m stages.<stage>``, same settings, few steps), watching each training stage's process
tree: peak RSS of its main process, and peak PSS summed over the tree (DataLoader workers
included; PSS splits the pages they share). Data and latents are made once, by this checkout;
each checkout trains on them with its own code. Measurements are kept by the commit that made them
(bench/results/memory.json): a rerun replaces that commit's rows of the stages it ran and keeps the
rest, so the table can show a stage before and after a change.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from measure import MB, project, run_stage, write_block  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("train_tokenizer", "train")


def overrides(episodes: int, size: int, steps: int) -> dict:
    # 500-frame episodes: 4 vs 20 episodes are 2,000 vs 10,000 frames (1.5 GB more raw frames at 256 px)
    return {"download": {"max_videos": episodes, "recorder": {"episodes": episodes, "max_frames": 500}},
            "extract": {"size": size},
            "tokenizer": {"steps": steps, "val_every": 10**6, "checkpoint_every": 10**6},
            "train": {"steps": max(2, steps // 4), "val_every": 10**6, "checkpoint_every": 10**6}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--code", type=Path, action="append", default=[], help="another checkout to measure beside this one")
    ap.add_argument("--episodes", type=int, nargs=2, default=[4, 20])
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--steps", type=int, default=20, help="tokenizer steps (train: a quarter)")
    ap.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES), help="the training stages to measure")
    ap.add_argument("--work", type=Path, default=None, help="keep the data here (default: a temporary directory)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench/results/memory.json")
    ap.add_argument("--docs", type=Path, default=ROOT / "docs/scale.md")
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-memory-"))
    codes = {commit_of(code): code for code in (ROOT, *(c.resolve() for c in args.code))}
    results: dict = {"episodes": args.episodes, "size": args.size, "runs": {}}
    if args.out.is_file():  # earlier measurements of the same sizes stay, unless remeasured
        earlier = json.loads(args.out.read_text())
        if (earlier["episodes"], earlier["size"]) == (args.episodes, args.size):
            results = earlier
    for episodes in args.episodes:
        data = project(ROOT, work / f"data-{episodes}", overrides(episodes, args.size, args.steps))
        if not (data / "data/latents.zarr").is_dir():
            for stage in ("download", "extract", "train_tokenizer", "tokenize_frames"):
                print(f"{episodes} episodes: {stage} ...", flush=True)
                run_stage(ROOT, data, stage)
        frames = sum(f.stat().st_size for f in (data / "data/frames.zarr").rglob("*") if f.is_file())
        raw = json.loads((data / "data/frames_report.json").read_text())["n_frames"] * args.size**2 * 3
        entry = results["runs"].setdefault(str(episodes), {"code": {}})
        entry.update({"frames": raw // (args.size**2 * 3), "raw_frame_mb": round(raw / MB), "store_mb": round(frames / MB)})
        for name, code in codes.items():
            run = project(code, work / f"run-{episodes}-{abs(hash(str(code))) % 10**6}",
                          overrides(episodes, args.size, args.steps))
            shutil.rmtree(run / "data", ignore_errors=True)
            (run / "data").mkdir()
            for store in ("frames.zarr", "latents.zarr"):
                (run / "data" / store).symlink_to(data / "data" / store)
            for stage in args.stages:
                print(f"{episodes} episodes, {name}: {stage} ...", flush=True)
                entry["code"].setdefault(name, {})[stage] = run_stage(code, run, stage)
    text = memory_table(results)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    write_block(args.docs, "memory table", text)


def commit_of(code: Path) -> str:
    """A checkout named by its commit (and whether its code, pipeline/ and stages/, differs from it)."""
    head = subprocess.run(["git", "-C", str(code), "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout
    dirty = subprocess.run(["git", "-C", str(code), "status", "--porcelain", "--untracked-files=no", "--", "pipeline",
                            "stages"], capture_output=True, text=True).stdout
    return f"commit {head.strip() or '?'}" + (" + uncommitted changes" if dirty.strip() else "")


def memory_table(results: dict) -> str:
    small, large = (results["runs"][str(e)] for e in results["episodes"])
    lines = [f"{results['size']} px frames: {small['frames']:,} vs {large['frames']:,} frames "
             f"({large['raw_frame_mb'] - small['raw_frame_mb']:,} MB more raw frames).", "",
             "| code | stage | peak RSS, small | peak RSS, large | growth | tree PSS growth |",
             "| --- | --- | --- | --- | --- | --- |"]
    for label, stages in large["code"].items():
        for stage in (s for s in STAGES if s in stages and s in small["code"].get(label, {})):
            a, b = small["code"][label][stage], stages[stage]
            lines.append(f"| {label} | {stage} | {a['peak_rss_mb']:,} MB | {b['peak_rss_mb']:,} MB | "
                         f"{b['peak_rss_mb'] - a['peak_rss_mb']:+,} MB | {b['peak_tree_pss_mb'] - a['peak_tree_pss_mb']:+,} MB |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
