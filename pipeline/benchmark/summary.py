"""From rollouts to results: per-cell means, per-horizon curves, and how sure each PSNR is.

The rollouts go into one pandas table (a row per rollout); cells are its groups by (workload,
budget, policy, mode), in the order of the params. Paired gaps to ``PAIRED_BASELINE`` join each
rollout with the baseline's rollout on the same (clip, seed) -- the same clip and the same noise
-- and go through :func:`pipeline.benchmark.stats.paired_difference`. The clips are the independent
observations: a clip's sampling seeds share its frames, so their rollouts are averaged per clip
first (counting each seed as an observation would narrow the interval without new data). Means over frames and
rollouts are numpy's on the stacked per-frame values, so a number depends only on the rollouts.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from pipeline.benchmark.run import METRIC_NAMES, BenchmarkRun
from pipeline.benchmark.stats import paired_difference, standard_error

PSNR_FOR_FULL_SCORE = 40.0  # temporal_quality_main = min(100, PSNR / 40 * 100)
PAIRED_BASELINE = "full_history"  # every policy's PSNR is also reported as a paired gap to this one
GAP_KEY = f"psnr_vs_{PAIRED_BASELINE}"
MEMORY_GAIN_KEY = "memory_gain"  # full_history: unlimited budget minus this budget (keep the newest B), paired
CELL = ["workload", "budget", "policy", "mode"]
PAIR = ["workload", "budget", "mode", "clip", "seed"]  # rollouts with the same clips and noise

Key = tuple[str, str, str, str]  # a cell: (workload, budget, policy, mode)


def temporal_quality(psnr: float) -> float:
    return min(100.0, psnr / PSNR_FOR_FULL_SCORE * 100.0)


def metric_means(per_metric: dict[str, list[list[float]]]) -> dict:
    """Per metric: the mean over rollouts and frames, and the per-horizon mean curve
    (values are per rollout, per predicted frame)."""
    entry: dict = {}
    for m, values in per_metric.items():
        arr = np.array(values)  # (rollouts, n_predict)
        entry[m] = float(arr.mean())
        entry[f"{m}_horizon"] = arr.mean(axis=0).tolist()
    return entry


def rollout_table(run: BenchmarkRun) -> pd.DataFrame:
    """One row per rollout: its cell, clip and seed, per-frame metric lists, its mean PSNR, its
    frames kept per step and timings. The cell columns are categorical in the order of the run
    (budgets in the params' order), so grouping by them sorts cells the way params list them."""
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
    """Per cell whose (workload, budget, mode) has PAIRED_BASELINE rollouts: the mean PSNR gap to
    the baseline on the same (clip, seed) and its 95% half-width."""
    baseline = rollouts.loc[rollouts["policy"] == PAIRED_BASELINE, [*PAIR, "psnr_rollout"]]
    pairs = rollouts.merge(baseline, on=PAIR, suffixes=("", "_baseline"))
    return _paired_per_cell(pairs, "psnr_rollout", "psnr_rollout_baseline")


def memory_gains(rollouts: pd.DataFrame, budgets: dict[str, int | None]) -> dict[Key, tuple[float, float | None]]:
    """Per full_history cell under a finite budget B: how much keeping every frame beats keeping
    the newest B, the paired PSNR gap (unlimited minus B, same clips and noise) and its 95%
    half-width. Needs an unlimited budget in the run."""
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
    """Per cell of ``pairs``: the mean of column a minus column b over its clips (each clip's
    seeds averaged first) and the 95% half-width."""
    return {key: paired_difference(*per_clip(g, [a, b]).T.values) for key, g in pairs.groupby(CELL, observed=True)}


def summarize(run: BenchmarkRun) -> dict[Key, dict]:
    """Per cell, in the params' order: mean metrics, per-horizon curves, speed and memory, and
    how sure the PSNR is: its standard error over clips and its paired gap to PAIRED_BASELINE
    (same clips, same noise; see pipeline.benchmark.stats) with a 95% confidence half-width."""
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
    """One row per cell: its key columns and every entry of :func:`summarize` (gaps NaN where
    there is no baseline)."""
    return pd.DataFrame([dict(zip(CELL, key), **entry) for key, entry in summary.items()])
