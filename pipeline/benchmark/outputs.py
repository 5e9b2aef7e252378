"""What the benchmark writes and prints: ``TEST_METRICS:`` and ranking lines, metrics/benchmark.json (keys
stable for ``dvc metrics diff``) and the long-form CSV tables behind ``dvc plots`` (docs/benchmark.md#outputs)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from pipeline.atomic import atomic_file, write_json
from pipeline.benchmark.keys import GAP_CLOSED_KEY, HINDSIGHT_POLICIES, RANDOM_GAP_KEY
from pipeline.benchmark.run import METRIC_NAMES, BenchmarkRun
from pipeline.benchmark.summary import (
    GAP_KEY,
    MEMORY_GAIN_KEY,
    PAIRED_BASELINE,
    revisit_table,
    summarize,
    summarize_references,
    summary_table,
)
from pipeline.rollout.policies import BASELINES

EVAL_MODE = "real_rollout"
LINE_KEYS = ("temporal_quality_main", "psnr", "ssim", "lpips", "peak_kv_memory_mb", "fps", "n_frames_kept")
REFERENCE_KEYS = ("temporal_quality_main", "psnr", "ssim", "lpips")
UNCERTAINTY_KEYS = ("psnr_sem", GAP_KEY, f"{GAP_KEY}_ci95")
JSON_KEYS = ("temporal_quality_main", "psnr", *UNCERTAINTY_KEYS, "ssim", "lpips", "fps", "peak_kv_memory_mb",
             "peak_retained_bytes", "n_frames_kept", "mean_frames_kept", "policy_time_share", "memory_oracle_psnr",
             MEMORY_GAIN_KEY, f"{MEMORY_GAIN_KEY}_ci95",  # the memory gain: full_history cells under a finite budget
             RANDOM_GAP_KEY, f"{RANDOM_GAP_KEY}_ci95", GAP_CLOSED_KEY, f"{GAP_CLOSED_KEY}_ci95",
             "returning_frames", "returning_psnr", "returning_lpips", "self_consistency_frames", "self_consistency_psnr")
HORIZON_COLUMNS = ("workload", "budget", "mode", "policy", "horizon", "psnr", "ssim", "lpips")
BUDGET_COLUMNS = ("workload", "budget", "max_frames", "mode", "policy", "psnr", *UNCERTAINTY_KEYS, "ssim", "lpips",
                  "temporal_quality_main", "peak_kv_memory_mb", "mean_frames_kept", "fps")
FLOAT_FORMAT = "%.6g"


def _fmt(v) -> str:
    return FLOAT_FORMAT % v if isinstance(v, float) else str(v)


def metrics_lines(summary: dict, references: dict) -> list[str]:
    """``TEST_METRICS: key=value ...`` per cell and per reference."""
    lines = []
    for (workload, budget, policy, mode), e in summary.items():
        vals = " ".join(f"{k}={_fmt(e[k])}" for k in LINE_KEYS)
        lines.append(f"TEST_METRICS: workload={workload} budget={budget} policy={policy} mode={mode} {vals} "
                     f"eval_mode={EVAL_MODE}")
    for workload, refs in references.items():
        for name, e in refs.items():
            vals = " ".join(f"{k}={_fmt(e[k])}" for k in REFERENCE_KEYS)
            lines.append(f"TEST_METRICS: workload={workload} reference={name} {vals} eval_mode=reference")
    return lines


def ranking_lines(summary: dict) -> list[str]:
    """Per workload, budget and mode: policies by PSNR (± s.e.) with their paired gap to PAIRED_BASELINE (± 95%)."""
    lines = []
    for (workload, budget, mode), cells in summary_table(summary).groupby(["workload", "budget", "mode"], sort=False):
        lines.append(f"{workload} / budget {budget} / {mode}: PSNR dB (± s.e.), paired gap to {PAIRED_BASELINE} (± 95% CI)")
        for e in cells.sort_values("psnr", ascending=False, kind="stable").to_dict("records"):
            sem = "" if pd.isna(e["psnr_sem"]) else f"± {e['psnr_sem']:.2f}"
            gap = "" if pd.isna(e[GAP_KEY]) else f"{e[GAP_KEY]:+.2f}"
            if gap and not pd.isna(e[f"{GAP_KEY}_ci95"]):
                gap += f" ± {e[f'{GAP_KEY}_ci95']:.2f}"
            note = "  (hindsight reference, not a policy)" if e["policy"] in HINDSIGHT_POLICIES else ""
            lines.append(f"  {e['policy']:<20} {e['psnr']:6.2f} {sem:<7}  {gap}{note}".rstrip())
    return lines


def metrics_json(summary: dict, references: dict, info: dict) -> dict:
    """Nested so that dvc flattens keys to rollouts.<workload>.<budget>.<policy>.<mode>.<metric>."""
    rollouts: dict = {}
    for (workload, budget, policy, mode), e in summary.items():
        rollouts.setdefault(workload, {}).setdefault(budget, {}).setdefault(policy, {})[mode] = {
            k: e[k] for k in JSON_KEYS if k in e
        }
    refs = {w: {n: {k: e[k] for k in REFERENCE_KEYS} for n, e in r.items()} for w, r in references.items()}
    policies = dict.fromkeys(policy for _, _, policy, _ in summary)
    baselines = [p for p in policies if p in BASELINES]  # published rules (and full_history); the rest are candidates
    hindsight = [p for p in policies if p in HINDSIGHT_POLICIES]  # run as policies, read the truth: references
    return {"eval_mode": EVAL_MODE, **info, "baselines": baselines, "hindsight_references": hindsight,
            "references": refs, "rollouts": rollouts}


def _curves(table: pd.DataFrame) -> pd.DataFrame:
    """Cells' or references' ``<metric>_horizon`` lists -> one row per (curve, horizon)."""
    curves = [f"{m}_horizon" for m in METRIC_NAMES]
    long = table[["workload", "budget", "mode", "policy", *curves]].explode(curves)  # the index repeats per curve
    long["horizon"] = long.groupby(level=0).cumcount().to_numpy() + 1
    long = long.rename(columns=dict(zip(curves, METRIC_NAMES))).astype({m: float for m in METRIC_NAMES})
    return long[list(HORIZON_COLUMNS)]


def horizon_table(summary: dict, references: dict) -> pd.DataFrame:
    """One row per (workload, budget, mode, policy, horizon); references repeated in every (budget, mode) panel."""
    cells = summary_table(summary)
    refs = pd.DataFrame([dict(workload=w, policy=name, **e) for w, r in references.items() for name, e in r.items()])
    panels = cells[["workload", "budget", "mode"]].drop_duplicates()  # in run order
    rows = [_curves(cells)]
    if len(refs):
        rows.append(_curves(panels.merge(refs, on="workload")))  # panel by panel, references in order
    return pd.concat(rows, ignore_index=True)


def budget_table(summary: dict, budgets: dict[str, int | None]) -> pd.DataFrame:
    """One row per cell with its budget's frame count ("full" when unlimited)."""
    table = summary_table(summary)
    table["max_frames"] = [("full" if budgets.get(b) is None else budgets[b]) for b in table["budget"]]
    return table[list(BUDGET_COLUMNS)]


def write_csv(path: str | Path, table: pd.DataFrame) -> None:
    """Floats as ``%.6g``; a missing value (no baseline to pair with) as an empty field."""
    with atomic_file(path) as tmp:
        table.to_csv(tmp, index=False, float_format=FLOAT_FORMAT, lineterminator="\r\n")


def write_outputs(run: BenchmarkRun, budgets: dict, info: dict, metrics_path: str | Path,
                  horizon_csv: str | Path, budget_csv: str | Path,
                  revisit_csv: str | Path | None = None) -> tuple[dict, dict, list[str]]:
    """Write the JSON and the CSV tables; returns (summary, references, TEST_METRICS lines)."""
    summary, references = summarize(run), summarize_references(run)
    info = {**info, "seconds": round(run.seconds, 3), "budgets": dict(budgets)}
    write_json(metrics_path, metrics_json(summary, references, info))
    write_csv(horizon_csv, horizon_table(summary, references))
    write_csv(budget_csv, budget_table(summary, budgets))
    if revisit_csv is not None:
        write_csv(revisit_csv, revisit_table(run))
    return summary, references, metrics_lines(summary, references)
