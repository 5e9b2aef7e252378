"""From rollouts to results: per-cell means, per-horizon curves, and paired gaps with 95% intervals.

One pandas row per rollout; cells group by (workload, budget, policy, mode) in the params' order. Gaps pair
rollouts on (clip, seed), then average each clip's seeds: clips are the observations (docs/statistics.md).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from pipeline.benchmark.keys import GAP_KEY, MEMORY_GAIN_KEY, PAIRED_BASELINE
from pipeline.benchmark.run import METRIC_NAMES, BenchmarkRun
from pipeline.benchmark.stats import paired_difference, standard_error

PSNR_FOR_FULL_SCORE = 40.0  # temporal_quality_main = min(100, PSNR / 40 * 100)
CELL = ["workload", "budget", "policy", "mode"]
PAIR = ["workload", "budget", "mode", "clip", "seed"]  # rollouts with the same clips and noise

Key = tuple[str, str, str, str]  # a cell: (workload, budget, policy, mode)


def temporal_quality(psnr: float) -> float:
    return min(100.0, psnr / PSNR_FOR_FULL_SCORE * 100.0)


def metric_means(per_metric: dict[str, list[list[float]]]) -> dict:
    """Per metric: the mean over rollouts and frames, and the per-horizon curve."""
    entry: dict = {}
    for m, values in per_metric.items():
        arr = np.array(values)  # (rollouts, n_predict)
        entry[m] = float(arr.mean())
        entry[f"{m}_horizon"] = arr.mean(axis=0).tolist()
    return entry


def rollout_table(run: BenchmarkRun) -> pd.DataFrame:
    """One row per rollout (cell, clip, seed, per-frame metrics, mean PSNR, frames kept, timings); the cell
    columns are categoricals in the params' order, so groups come out in that order."""
    table = pd.DataFrame([
        dict(workload=r.cell.workload, budget=r.cell.budget, policy=r.cell.policy, mode=r.cell.mode, clip=r.clip,
             seed=r.seed, **r.per_frame, psnr_rollout=float(np.mean(r.per_frame["psnr"])), kept=r.kept_per_step,
             n_predict=r.n_predict, seconds=r.seconds, policy_seconds=r.policy_seconds,
             peak_retained_bytes=r.peak_retained_bytes)
        for r in run.records
    ])
    for column in CELL:
        order = list(dict.fromkeys(table[column]))  # first appearance
        if column == "budget":
            given = [b for b in dict.fromkeys(run.budget_order) if b in order]
            order = given + [b for b in order if b not in given]
        table[column] = pd.Categorical(table[column], categories=order)
    return table


def _cell_entry(rollouts: pd.DataFrame) -> dict:
    """Means, curves, speed and memory of one cell's rollouts."""
    entry = metric_means({m: rollouts[m].tolist() for m in METRIC_NAMES})
    frames, seconds = rollouts["n_predict"].sum(), rollouts["seconds"].sum()
    kept = np.concatenate(rollouts["kept"].tolist())
    entry.update(
        temporal_quality_main=temporal_quality(entry["psnr"]),
        fps=float(frames / seconds) if seconds > 0 else math.inf,
        peak_retained_bytes=int(rollouts["peak_retained_bytes"].max()),
        n_frames_kept=int(kept.max()),
        mean_frames_kept=float(np.mean(kept)),
        policy_time_share=float(rollouts["policy_seconds"].sum() / seconds) if seconds > 0 else 0.0,
        n_rollouts=len(rollouts),
    )
    entry["peak_kv_memory_mb"] = entry["peak_retained_bytes"] / 2**20
    entry["psnr_sem"] = standard_error(per_clip(rollouts, ["psnr_rollout"])["psnr_rollout"].tolist())
    entry["memory_oracle_psnr"] = float(np.mean(rollouts["memory_oracle_psnr"].tolist()))
    return entry


def per_clip(rollouts: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """``columns`` averaged over each clip's sampling seeds, one row per clip (in clip order)."""
    return rollouts.groupby("clip")[columns].mean()


def paired_gaps(rollouts: pd.DataFrame) -> dict[Key, tuple[float, float | None]]:
    """Per cell with PAIRED_BASELINE rollouts: mean PSNR gap to it on the same (clip, seed), 95% half-width."""
    baseline = rollouts.loc[rollouts["policy"] == PAIRED_BASELINE, [*PAIR, "psnr_rollout"]]
    pairs = rollouts.merge(baseline, on=PAIR, suffixes=("", "_baseline"))
    return _paired_per_cell(pairs, "psnr_rollout", "psnr_rollout_baseline")


def memory_gains(rollouts: pd.DataFrame, budgets: dict[str, int | None]) -> dict[Key, tuple[float, float | None]]:
    """Per full_history cell under a finite budget B: unlimited minus B, paired (mean, 95% half-width).
    Empty without an unlimited budget."""
    unlimited = [name for name, n in budgets.items() if n is None]
    ours = rollouts[rollouts["policy"] == PAIRED_BASELINE]
    if not unlimited or ours.empty:
        return {}
    keys = ["workload", "mode", "clip", "seed"]
    full = ours.loc[ours["budget"] == unlimited[0], [*keys, "psnr_rollout"]]
    pairs = ours.merge(full, on=keys, suffixes=("", "_full"))
    pairs = pairs[pairs["budget"].map(lambda b: budgets.get(b) is not None).astype(bool)]
    return _paired_per_cell(pairs, "psnr_rollout_full", "psnr_rollout")


def _paired_per_cell(pairs: pd.DataFrame, a: str, b: str) -> dict[Key, tuple[float, float | None]]:
    """Per cell: mean of column a minus b over clips (seeds averaged first), 95% half-width."""
    return {key: paired_difference(*per_clip(g, [a, b]).T.values) for key, g in pairs.groupby(CELL, observed=True)}


def summarize(run: BenchmarkRun) -> dict[Key, dict]:
    """Per cell, in the params' order: mean metrics, curves, speed, memory, PSNR standard error over clips
    and the paired gap to PAIRED_BASELINE with its 95% half-width."""
    if not run.records:
        return {}
    rollouts = rollout_table(run)
    gaps, gains = paired_gaps(rollouts), memory_gains(rollouts, run.budgets)
    out = {}
    for key, cell in rollouts.groupby(CELL, observed=True):
        out[key] = entry = _cell_entry(cell)
        entry[GAP_KEY], entry[f"{GAP_KEY}_ci95"] = gaps.get(key, (None, None))
        if key in gains:
            entry[MEMORY_GAIN_KEY], entry[f"{MEMORY_GAIN_KEY}_ci95"] = gains[key]
    return out


def summarize_references(run: BenchmarkRun) -> dict[str, dict[str, dict]]:
    """Per workload and reference: mean metrics and per-horizon curves over the clips."""
    out: dict[str, dict[str, dict]] = {}
    for workload, refs in run.references.items():
        for name, metrics in refs.items():
            entry = metric_means(metrics)
            entry["temporal_quality_main"] = temporal_quality(entry["psnr"])
            out.setdefault(workload, {})[name] = entry
    return out


def summary_table(summary: dict[Key, dict]) -> pd.DataFrame:
    """One row per cell: key columns and :func:`summarize`'s entries (NaN gaps without a baseline)."""
    return pd.DataFrame([dict(zip(CELL, key), **entry) for key, entry in summary.items()])
