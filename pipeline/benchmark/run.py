"""The rollout benchmark of seeds/001 on any RolloutHost: clips, rollouts, metrics, outputs.

For every workload (context -> predict) x budget x policy x mode x clip x seed, the
policy-managed loop (``pipeline.rollout.loop``) generates latents, the host decodes them and
PSNR / SSIM / LPIPS are measured per frame against the ground truth. Clips come from held-out
(test split) videos only and are drawn deterministically from the global seed; the sampling
noise of a (seed, clip) pair is the same for every policy, budget and mode, so their scores are
paired comparisons.

Outputs: one ``TEST_METRICS: key=value ...`` line per cell (the seed's parser format),
``metrics/benchmark.json`` (nested workload/budget/policy/mode, keys stable for
``dvc metrics diff``) and long-form CSV tables per horizon and per budget for ``dvc plots``.
"""

from __future__ import annotations

import csv
import itertools
import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterable

import numpy as np
import torch
from tqdm import tqdm

from pipeline.atomic import atomic_file, write_json
from pipeline.benchmark.references import REFERENCES, persistence, tokenizer_ceiling
from pipeline.benchmark.stats import paired_difference, standard_error
from pipeline.data.pixels import to_pixels
from pipeline.data.stores import (
    StoreError,
    list_videos,
    open_store,
    read_actions,
    read_array,
)
from pipeline.rollout.loop import run_rollout
from pipeline.rollout.policies import load_policy

METRIC_NAMES = ("psnr", "ssim", "lpips")
EVAL_MODE = "real_rollout"
PSNR_FOR_FULL_SCORE = 40.0  # temporal_quality_main = min(100, PSNR / 40 * 100)
PAIRED_BASELINE = "full_history"  # every policy's PSNR is also reported as a paired gap to this one


class BenchmarkError(RuntimeError):
    """The data cannot support the benchmark as configured (e.g. no test video long enough)."""


def temporal_quality(psnr: float) -> float:
    return min(100.0, psnr / PSNR_FOR_FULL_SCORE * 100.0)


# --------------------------------------------------------------------------------------------
# clips
# --------------------------------------------------------------------------------------------
@dataclass
class Clip:
    video_id: str
    start: int
    pixels: torch.Tensor  # (context + predict, 3, H, W) float in [0, 1]: the ground truth
    context_latents: torch.Tensor | None  # (context, C, h, w); None: the host encodes the pixels
    actions: np.ndarray | None  # (context + predict,) int: the action that led to each frame, -1 none


def select_clips(frames_path: str | Path, latents_path: str | Path | None, context: int, predict: int,
                 n_clips: int, seed: int) -> list[Clip]:
    """``n_clips`` windows of ``context + predict`` frames from test-split videos, deterministic.

    Videos are visited in a seeded order, round robin, each window's start drawn from the same
    seeded generator, so a clip set depends only on (seed, context, predict, n_clips, data).
    """
    length = context + predict
    videos = list_videos(frames_path, split="test")
    if not videos:
        raise BenchmarkError(f"{frames_path}: no video in the test split (extract.splits.test)")
    eligible = [v for v in videos if v.n_frames >= length]
    if not eligible:
        have = ", ".join(f"{v.id}: {v.n_frames}" for v in videos)
        raise BenchmarkError(
            f"{frames_path}: no test video has the {length} frames a {context} -> {predict} workload needs ({have})"
        )
    latents_root = open_store(latents_path) if latents_path is not None else None
    rng = np.random.default_rng([seed, context, predict])
    order = [eligible[i] for i in rng.permutation(len(eligible))]
    clips = []
    for i in range(n_clips):
        video = order[i % len(order)]
        start = int(rng.integers(0, video.n_frames - length + 1))
        latents = None
        if latents_root is not None:
            if video.id not in latents_root:
                raise StoreError(f"{latents_path}: no latents for test video {video.id!r} (rerun the tokenize stage)")
            latents = torch.from_numpy(latents_root[video.id]["latents"][start : start + context]).float()
        pixels = to_pixels(read_array(frames_path, video.id, "frames", start, start + length))
        clips.append(Clip(video.id, start, pixels, latents, _conditioning_actions(frames_path, video, start, length)))
    return clips


def _conditioning_actions(frames_path, video, start: int, length: int) -> np.ndarray | None:
    """The action that led to each clip frame (recorded at the frame before; -1 before the
    video's first frame), the convention the dynamics model is trained with."""
    if not video.has_actions:
        return None
    recorded = read_actions(frames_path, video.id, max(0, start - 1), start + length - 1)
    return np.concatenate([[-1], recorded]) if start == 0 else recorded


# --------------------------------------------------------------------------------------------
# running
# --------------------------------------------------------------------------------------------
@dataclass
class Cell:
    """One rollout configuration: the key of a metrics entry."""

    workload: str
    budget: str
    policy: str
    mode: str


@dataclass
class RolloutRecord:
    cell: Cell
    clip: int
    seed: int
    per_frame: dict[str, list[float]]  # metric -> value per predicted frame
    n_predict: int
    seconds: float
    policy_seconds: float
    peak_retained_bytes: int
    kept_per_step: list[int]
    pixels: torch.Tensor | None = None  # decoded prediction, kept for the media clips
    reused: bool = False  # identical to the rollout under a larger budget (see _unchanged_under)


def _unchanged_under(policy, larger: RolloutRecord, max_frames: int | None) -> bool:
    """A rollout whose history never exceeded ``max_frames`` is, under that budget, the same
    rollout exactly (same plans, nothing cut, same noise) -- if the policy's decisions do not
    read the budget. Baselines declare ``uses_budget_state = False``; other policies are assumed
    to read it and are always rerun."""
    if getattr(policy, "uses_budget_state", True):
        return False
    return max_frames is None or max(larger.kept_per_step) <= max_frames


@dataclass
class BenchmarkRun:
    records: list[RolloutRecord] = field(default_factory=list)
    references: dict[str, dict[str, dict[str, list[list[float]]]]] = field(default_factory=dict)
    # workload -> reference -> metric -> per clip, per frame
    reference_pixels: dict[str, dict[str, list[torch.Tensor]]] = field(default_factory=dict)
    clips: dict[str, list[Clip]] = field(default_factory=dict)
    budget_order: list[str] = field(default_factory=list)  # as in params (runs go largest first)
    seconds: float = 0.0


class Scorer:
    """PSNR / SSIM / LPIPS per frame of a prediction vs its ground truth (pixels in [0, 1])."""

    def __init__(self, device: torch.device | str = "cpu"):
        from pipeline.metrics import LPIPS

        self.lpips = LPIPS().to(device)

    @torch.no_grad()
    def __call__(self, pred: torch.Tensor, target: torch.Tensor) -> dict[str, list[float]]:
        from pipeline.metrics import video_metrics

        values = video_metrics(pred[None].cpu(), target[None].cpu(), self.lpips)
        return {k: [float(x) for x in values[k][0]] for k in METRIC_NAMES}


def sampling_generator(seed: int, sample_seed: int, clip: int) -> torch.Generator:
    """The noise of one (seed, clip) pair, identical for every policy, budget and mode."""
    state = np.random.SeedSequence([seed, sample_seed, clip]).generate_state(1)[0]
    return torch.Generator().manual_seed(int(state))


def run_benchmark(host, bench, clips: dict[str, list[Clip]], *, seed: int, policies: Iterable[str] | None = None,
                  budgets: dict[str, int | None] | None = None, modes: Iterable[str] | None = None,
                  media_clips: int = 0, scorer: Scorer | None = None, progress: bool = True) -> BenchmarkRun:
    """All rollouts of ``bench`` (BenchmarkParams) on ``clips`` (workload -> clips).

    ``policies``/``budgets``/``modes`` default to those of ``bench``; ``media_clips`` first
    clips keep their decoded pixels for the report videos.
    """
    specs = list(policies if policies is not None else bench.policies)
    budgets = dict(budgets if budgets is not None else bench.budgets)
    modes = list(modes if modes is not None else bench.modes)
    loaded = [load_policy(spec) for spec in specs]
    names = [p.name for p in loaded]
    if len(set(names)) != len(names):
        raise ValueError(f"benchmark.policies: two policies report under one name ({dict(zip(specs, names))})")
    # Largest budget first, so a smaller budget can reuse a rollout that never reached it.
    budgets_desc = sorted(budgets.items(), key=lambda kv: -math.inf if kv[1] is None else -kv[1])
    scorer = scorer or Scorer()
    run = BenchmarkRun(clips=clips, budget_order=list(budgets))
    start = time.perf_counter()
    total = sum(len(c) for c in clips.values()) * len(bench.seeds) * len(budgets) * len(loaded) * len(modes)
    bar = tqdm(total=total, desc="benchmark rollouts", unit="rollout", disable=not progress)
    for workload, wclips in clips.items():
        n_ctx, n_pred = bench.workloads[workload].context, bench.workloads[workload].predict
        for ci, clip in enumerate(wclips):
            _score_references(run, host, scorer, workload, clip, n_ctx, keep_pixels=ci < media_clips)
            context = clip.context_latents if clip.context_latents is not None else host.encode(clip.pixels[:n_ctx])
            context = context.to(getattr(host, "device", "cpu"))
            for sample_seed, policy, mode in itertools.product(bench.seeds, loaded, modes):
                keep_pixels = ci < media_clips and sample_seed == bench.seeds[0]
                previous: RolloutRecord | None = None
                for budget, max_frames in budgets_desc:
                    cell = Cell(workload, budget, policy.name, mode)
                    if previous is not None and _unchanged_under(policy, previous, max_frames):
                        record = replace(previous, cell=cell, reused=True)
                    else:
                        result = run_rollout(host, policy, context, n_pred, max_frames=max_frames, mode=mode,
                                             generator=sampling_generator(seed, sample_seed, ci), actions=clip.actions)
                        pred = host.decode(result.generated).cpu()
                        record = RolloutRecord(
                            cell=cell, clip=ci, seed=sample_seed, per_frame=scorer(pred, clip.pixels[n_ctx:]),
                            n_predict=n_pred, seconds=result.seconds, policy_seconds=result.policy_seconds,
                            peak_retained_bytes=result.peak_retained_bytes, kept_per_step=result.kept_per_step,
                            pixels=pred if keep_pixels else None,
                        )
                    run.records.append(record)
                    previous = record
                    bar.update()
    bar.close()
    run.seconds = time.perf_counter() - start
    return run


def _score_references(run: BenchmarkRun, host, scorer: Scorer, workload: str, clip: Clip, n_ctx: int,
                      keep_pixels: bool) -> None:
    target = clip.pixels[n_ctx:]
    refs = run.references.setdefault(workload, {r: {m: [] for m in METRIC_NAMES} for r in REFERENCES})
    pixels = run.reference_pixels.setdefault(workload, {r: [] for r in REFERENCES})
    for name, pred in (("persistence", persistence(clip.pixels[:n_ctx], len(target))),
                       ("tokenizer_ceiling", tokenizer_ceiling(host, target).cpu())):
        for metric, values in scorer(pred, target).items():
            refs[name][metric].append(values)
        if keep_pixels:
            pixels[name].append(pred)


# --------------------------------------------------------------------------------------------
# aggregation and outputs
# --------------------------------------------------------------------------------------------
def _key(cell: Cell) -> tuple[str, str, str, str]:
    return (cell.workload, cell.budget, cell.policy, cell.mode)


def _metric_means(per_metric: dict[str, list[list[float]]]) -> dict:
    """Per metric: the mean over rollouts and frames, and the per-horizon mean curve
    (values are per rollout, per predicted frame)."""
    entry: dict = {}
    for m, values in per_metric.items():
        arr = np.array(values)  # (rollouts, n_predict)
        entry[m] = float(arr.mean())
        entry[f"{m}_horizon"] = arr.mean(axis=0).tolist()
    return entry


def summarize(run: BenchmarkRun) -> dict[tuple[str, str, str, str], dict]:
    """Per cell: mean metrics, per-horizon curves, speed and memory, and how sure the PSNR is:
    its standard error over rollouts and its paired gap to PAIRED_BASELINE (same clips, same
    noise; see pipeline.benchmark.stats) with a 95% confidence half-width."""
    groups: dict[tuple, list[RolloutRecord]] = {}
    for rec in run.records:
        groups.setdefault(_key(rec.cell), []).append(rec)
    # workload, budget, policy, mode, each in the order it first appears (the params' order)
    firsts = [list(dict.fromkeys(k[i] for k in groups)) for i in range(4)]
    budget_order = list(dict.fromkeys(b for b in run.budget_order if b in firsts[1])) or firsts[1]
    firsts[1] = budget_order + [b for b in firsts[1] if b not in budget_order]
    groups = dict(sorted(groups.items(), key=lambda kv: tuple(firsts[i].index(kv[0][i]) for i in range(4))))
    out = {}
    for key, recs in groups.items():
        entry = _metric_means({m: [r.per_frame[m] for r in recs] for m in METRIC_NAMES})
        frames = sum(r.n_predict for r in recs)
        seconds = sum(r.seconds for r in recs)
        kept = [k for r in recs for k in r.kept_per_step]
        entry.update(
            temporal_quality_main=temporal_quality(entry["psnr"]),
            fps=frames / seconds if seconds > 0 else math.inf,
            peak_retained_bytes=max(r.peak_retained_bytes for r in recs),
            n_frames_kept=max(kept),
            mean_frames_kept=float(np.mean(kept)),
            policy_time_share=sum(r.policy_seconds for r in recs) / seconds if seconds > 0 else 0.0,
            n_rollouts=len(recs),
        )
        entry["peak_kv_memory_mb"] = entry["peak_retained_bytes"] / 2**20
        out[key] = entry
    _add_uncertainty(out, groups)
    return out


def _rollout_psnr(recs: list[RolloutRecord]) -> dict[tuple[int, int], float]:
    """Each rollout's mean PSNR over its predicted frames, by (clip, sample seed)."""
    return {(r.clip, r.seed): float(np.mean(r.per_frame["psnr"])) for r in recs}


def _add_uncertainty(summary: dict, groups: dict[tuple, list[RolloutRecord]]) -> None:
    gap_key = f"psnr_vs_{PAIRED_BASELINE}"
    for (workload, budget, policy, mode), entry in summary.items():
        psnr = _rollout_psnr(groups[(workload, budget, policy, mode)])
        entry["psnr_sem"] = standard_error(list(psnr.values()))
        entry[gap_key] = entry[f"{gap_key}_ci95"] = None
        baseline = groups.get((workload, budget, PAIRED_BASELINE, mode))
        if baseline is not None:
            base = _rollout_psnr(baseline)
            pairs = sorted(set(psnr) & set(base))
            entry[gap_key], entry[f"{gap_key}_ci95"] = paired_difference([psnr[k] for k in pairs], [base[k] for k in pairs])


def summarize_references(run: BenchmarkRun) -> dict[str, dict[str, dict]]:
    out: dict[str, dict[str, dict]] = {}
    for workload, refs in run.references.items():
        for name, metrics in refs.items():
            entry = _metric_means(metrics)
            entry["temporal_quality_main"] = temporal_quality(entry["psnr"])
            out.setdefault(workload, {})[name] = entry
    return out


LINE_KEYS = ("temporal_quality_main", "psnr", "ssim", "lpips", "peak_kv_memory_mb", "fps", "n_frames_kept")


def _fmt(v) -> str:
    return f"{v:.6g}" if isinstance(v, float) else str(v)


def metrics_lines(summary: dict, references: dict) -> list[str]:
    """``TEST_METRICS: key=value ...`` per cell and per reference, as the seed's parser reads."""
    lines = []
    for (workload, budget, policy, mode), e in summary.items():
        vals = " ".join(f"{k}={_fmt(e[k])}" for k in LINE_KEYS)
        lines.append(f"TEST_METRICS: workload={workload} budget={budget} policy={policy} mode={mode} {vals} eval_mode={EVAL_MODE}")
    for workload, refs in references.items():
        for name, e in refs.items():
            vals = " ".join(f"{k}={_fmt(e[k])}" for k in ("temporal_quality_main", "psnr", "ssim", "lpips"))
            lines.append(f"TEST_METRICS: workload={workload} reference={name} {vals} eval_mode=reference")
    return lines


def ranking_lines(summary: dict) -> list[str]:
    """Per workload, budget and mode: the policies by PSNR, each with its standard error and its
    paired gap to PAIRED_BASELINE with a 95% interval -- what to read before calling a ranking."""
    gap_key = f"psnr_vs_{PAIRED_BASELINE}"
    lines = []
    for workload, budget, mode in dict.fromkeys((w, b, m) for (w, b, _, m) in summary):
        cells = [(p, e) for (w, b, p, m), e in summary.items() if (w, b, m) == (workload, budget, mode)]
        lines.append(f"{workload} / budget {budget} / {mode}: PSNR dB (± s.e.), paired gap to {PAIRED_BASELINE} (± 95% CI)")
        for policy, e in sorted(cells, key=lambda pe: -pe[1]["psnr"]):
            sem = "" if e["psnr_sem"] is None else f"± {e['psnr_sem']:.2f}"
            gap = "" if e[gap_key] is None else f"{e[gap_key]:+.2f}"
            if gap and e[f"{gap_key}_ci95"] is not None:
                gap += f" ± {e[f'{gap_key}_ci95']:.2f}"
            lines.append(f"  {policy:<20} {e['psnr']:6.2f} {sem:<7}  {gap}".rstrip())
    return lines


UNCERTAINTY_KEYS = ("psnr_sem", f"psnr_vs_{PAIRED_BASELINE}", f"psnr_vs_{PAIRED_BASELINE}_ci95")
JSON_KEYS = ("temporal_quality_main", "psnr", *UNCERTAINTY_KEYS, "ssim", "lpips", "fps", "peak_kv_memory_mb",
             "peak_retained_bytes", "n_frames_kept", "mean_frames_kept", "policy_time_share")


def metrics_json(summary: dict, references: dict, info: dict) -> dict:
    """Nested so that dvc flattens keys to rollouts.<workload>.<budget>.<policy>.<mode>.<metric>."""
    rollouts: dict = {}
    for (workload, budget, policy, mode), e in summary.items():
        rollouts.setdefault(workload, {}).setdefault(budget, {}).setdefault(policy, {})[mode] = {
            k: e[k] for k in JSON_KEYS
        }
    refs = {w: {n: {k: e[k] for k in ("temporal_quality_main", "psnr", "ssim", "lpips")} for n, e in r.items()}
            for w, r in references.items()}
    return {"eval_mode": EVAL_MODE, **info, "references": refs, "rollouts": rollouts}


HORIZON_COLUMNS = ("workload", "budget", "mode", "policy", "horizon", "psnr", "ssim", "lpips")
BUDGET_COLUMNS = ("workload", "budget", "max_frames", "mode", "policy", "psnr", *UNCERTAINTY_KEYS, "ssim", "lpips",
                  "temporal_quality_main", "peak_kv_memory_mb", "mean_frames_kept", "fps")


def horizon_rows(summary: dict, references: dict) -> list[dict]:
    """Long form, one row per (workload, budget, mode, policy, horizon); the references are
    repeated in every (budget, mode) panel so each panel is complete on its own."""
    rows = []
    panels = list(dict.fromkeys((w, b, m) for (w, b, _, m) in summary))  # in run order
    for (workload, budget, policy, mode), e in summary.items():
        for h, vals in enumerate(zip(*(e[f"{m}_horizon"] for m in METRIC_NAMES)), start=1):
            rows.append(dict(zip(HORIZON_COLUMNS, (workload, budget, mode, policy, h, *vals))))
    for workload, budget, mode in panels:
        for name, e in references.get(workload, {}).items():
            for h, vals in enumerate(zip(*(e[f"{m}_horizon"] for m in METRIC_NAMES)), start=1):
                rows.append(dict(zip(HORIZON_COLUMNS, (workload, budget, mode, name, h, *vals))))
    return rows


def budget_rows(summary: dict, budgets: dict[str, int | None]) -> list[dict]:
    rows = []
    for (workload, budget, policy, mode), e in summary.items():
        max_frames = budgets.get(budget)
        rows.append(dict(zip(BUDGET_COLUMNS, (
            workload, budget, "full" if max_frames is None else max_frames, mode, policy, e["psnr"],
            *(e[k] for k in UNCERTAINTY_KEYS), e["ssim"], e["lpips"], e["temporal_quality_main"],
            e["peak_kv_memory_mb"], e["mean_frames_kept"], e["fps"]))))
    return rows


def write_csv(path: str | Path, rows: list[dict], columns: tuple[str, ...]) -> None:
    with atomic_file(path) as tmp:
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns)
            writer.writeheader()
            for row in rows:
                writer.writerow({k: _fmt(v) if isinstance(v, float) else v for k, v in row.items()})


def write_outputs(run: BenchmarkRun, budgets: dict, info: dict, metrics_path: str | Path,
                  horizon_csv: str | Path, budget_csv: str | Path) -> tuple[dict, dict, list[str]]:
    """Write the JSON and both CSV tables; returns (summary, references, TEST_METRICS lines)."""
    summary, references = summarize(run), summarize_references(run)
    info = {**info, "seconds": round(run.seconds, 3)}
    write_json(metrics_path, metrics_json(summary, references, info))
    write_csv(horizon_csv, horizon_rows(summary, references), HORIZON_COLUMNS)
    write_csv(budget_csv, budget_rows(summary, budgets), BUDGET_COLUMNS)
    return summary, references, metrics_lines(summary, references)


# --------------------------------------------------------------------------------------------
# hosts, clips and media for a params file (shared by the stage and try_policy)
# --------------------------------------------------------------------------------------------
from pipeline.paths import DYNAMICS, FRAMES, LATENTS, TOKENIZER  # noqa: E402


def benchmark_device(params) -> torch.device:
    """The device rollouts run on; on CPU capped at ``benchmark.cpu_threads`` threads (per-frame
    ops are small: more threads cost more than they give)."""
    from pipeline.training.device import pick_device

    device = pick_device()
    if device.type == "cpu" and params.benchmark.cpu_threads:
        torch.set_num_threads(params.benchmark.cpu_threads)
    return device


def build_host(params, device: torch.device | str = "cpu"):
    """The RolloutHost named by ``benchmark.host``."""
    bench = params.benchmark
    if bench.host == "far":
        from pipeline.far.host import load_far_host

        return load_far_host(bench.far, device)
    from pipeline.rollout.pipeline_host import PipelineHost

    for directory, stage in ((TOKENIZER, "train_tokenizer"), (DYNAMICS, "train")):
        if not (directory / "config.json").is_file():
            raise FileNotFoundError(f"{directory}: no checkpoint (run `dvc repro {stage}` first)")
    return PipelineHost.load(TOKENIZER, DYNAMICS, bench.sampling_steps, bench.tau_ctx, device)


def run_info(params, device) -> dict:
    """What a result depends on besides the policy: stored with the metrics so that try_policy
    can tell whether its numbers are paired with the stage's."""
    bench = params.benchmark
    info = {"host": bench.host, "sampling_steps": bench.sampling_steps, "n_clips": bench.n_clips,
            "n_seeds": len(bench.seeds), "device": torch.device(device).type}
    if bench.host == "pipeline":
        from pipeline.training.checkpoint import checkpoint_hash

        info["checkpoints"] = {"tokenizer": checkpoint_hash(TOKENIZER)[:16], "dynamics": checkpoint_hash(DYNAMICS)[:16]}
    return info


def workload_clips(params, workloads: Iterable[str] | None = None) -> dict[str, list[Clip]]:
    """Clips of each workload: test-split videos of this pipeline's stores (context latents from
    data/latents.zarr for the pipeline host; the FAR host encodes pixels itself), or FAR's DMLab
    episodes when ``benchmark.far.dmlab_npz`` is set."""
    bench = params.benchmark
    names = list(workloads if workloads is not None else bench.workloads)
    clips = {}
    for name in names:
        if name not in bench.workloads:
            raise KeyError(f"benchmark.workloads: no workload {name!r} (have {', '.join(bench.workloads)})")
        w = bench.workloads[name]
        if bench.host == "far" and bench.far.dmlab_npz:
            from pipeline.far.data import dmlab_clips

            clips[name] = [
                Clip(c.id, 0, c.frames, None, np.asarray(c.actions))  # episodes come cut to the clip length
                for c in dmlab_clips(bench.far.dmlab_npz, bench.n_clips, w.context + w.predict)
            ]
        else:
            latents = LATENTS if bench.host == "pipeline" else None
            clips[name] = select_clips(FRAMES, latents, w.context, w.predict, bench.n_clips, params.seed)
    return clips


def write_media(run: BenchmarkRun, out_dir: str | Path, workloads: dict, mode: str) -> list[Path]:
    """One GIF per workload and budget: ground truth | persistence | each policy (``mode``)."""
    from pipeline.benchmark.media import grid_frames, write_gif

    written = []
    for workload, wclips in run.clips.items():
        n_ctx = workloads[workload].context
        by_cell: dict[tuple[str, str], dict[int, torch.Tensor]] = {}
        for rec in run.records:
            if rec.pixels is not None and rec.cell.workload == workload and rec.cell.mode == mode:
                by_cell.setdefault((rec.cell.budget, rec.cell.policy), {})[rec.clip] = rec.pixels
        budgets = list(dict.fromkeys(b for b, _ in by_cell))
        for budget in budgets:
            policies = [p for b, p in by_cell if b == budget]
            n = min(len(by_cell[(budget, p)]) for p in policies)
            columns = {"ground truth": [c.pixels[n_ctx:] for c in wclips[:n]],
                       "persistence": run.reference_pixels[workload]["persistence"][:n]}
            columns.update({p: [by_cell[(budget, p)][i] for i in range(n)] for p in policies})
            path = Path(out_dir) / f"{workload}_{budget}.gif"
            write_gif(path, grid_frames(columns))
            written.append(path)
    return written
