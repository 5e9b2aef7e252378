"""From rollouts to results: per-cell means, per-horizon curves, and paired gaps with 95% intervals.

One pandas row per rollout; cells group by (workload, budget, policy, mode) in the params' order. Gaps pair
rollouts on (clip, seed), then average each clip's seeds: clips are the observations (docs/statistics.md).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from pipeline.benchmark.keys import (
    GAP_CLOSED_KEY,
    GAP_KEY,
    GAP_LABELS,
    MEMORY_GAIN_KEY,
    PAIRED_BASELINE,
    RANDOM_BASELINE,
    RANDOM_GAP_KEY,
)
from pipeline.benchmark.revisits import RETURN_GAP, gap_bin, gaps_since_seen
from pipeline.benchmark.run import METRIC_NAMES, BenchmarkRun
from pipeline.benchmark.stats import paired_difference, paired_ratio, standard_error

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


def frame_gaps(run: BenchmarkRun) -> dict[tuple[str, int], np.ndarray]:
    """(workload, clip) -> per predicted frame, frames since the context last showed its view (NaN: never or
    no poses)."""
    n_predict = {r.cell.workload: r.n_predict for r in run.records}
    out = {}
    for workload, clips in run.clips.items():
        for ci, clip in enumerate(clips):
            n_pred = n_predict.get(workload, 0)
            n_ctx = len(clip.pixels) - n_pred
            out[workload, ci] = (np.full(n_pred, np.nan) if clip.poses is None
                                 else gaps_since_seen(np.asarray(clip.poses, dtype=np.float64), n_ctx))
    return out


def returning_frames(rollouts: pd.DataFrame, run: BenchmarkRun) -> pd.DataFrame:
    """One row per predicted frame of every rollout: its cell, clip, gap since its view was last seen, PSNR,
    LPIPS and self-consistency PSNR."""
    gaps = frame_gaps(run)
    columns = [c for c in ("psnr", "lpips", "self_psnr") if c in rollouts]
    table = rollouts[[*CELL, "clip", "seed", *columns]].copy()
    table["gap"] = [gaps[w, c].tolist() for w, c in zip(table["workload"], table["clip"])]
    frames = table.explode(["gap", *columns]).astype({"gap": float, **{c: float for c in columns}})
    frames["returning"] = frames["gap"] >= frames["workload"].map(lambda w: run.return_gaps.get(w, RETURN_GAP)).astype(float)
    return frames


def _returns_entry(frames: pd.DataFrame) -> dict:
    """Mean PSNR / LPIPS of a cell's returning frames, and its self-consistency PSNR (None where it has none)."""
    back = frames[frames["returning"]]
    own = frames["self_psnr"].dropna() if "self_psnr" in frames else pd.Series(dtype=float)
    return {"returning_frames": int(len(back)),
            "returning_psnr": float(back["psnr"].mean()) if len(back) else None,
            "returning_lpips": float(back["lpips"].mean()) if len(back) else None,
            "self_consistency_frames": int(len(own)),
            "self_consistency_psnr": float(own.mean()) if len(own) else None}


def revisit_table(run: BenchmarkRun) -> pd.DataFrame:
    """PSNR and LPIPS by frames since the view was last seen (GAP_BINS), per cell: the revisit plot's rows."""
    if not run.records:
        return pd.DataFrame(columns=[*CELL, "since_seen", "psnr", "lpips", "frames"])
    frames = returning_frames(rollout_table(run), run)
    frames["since_seen"] = pd.Categorical([gap_bin(g) for g in frames["gap"]], categories=GAP_LABELS)
    table = frames.groupby([*CELL, "since_seen"], observed=True).agg(
        psnr=("psnr", "mean"), lpips=("lpips", "mean"), frames=("psnr", "size")).reset_index()
    return table[[*CELL, "since_seen", "psnr", "lpips", "frames"]]


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


def paired_gaps(rollouts: pd.DataFrame, to: str = PAIRED_BASELINE) -> dict[Key, tuple[float, float | None]]:
    """Per cell with rollouts of policy ``to``: mean PSNR gap to it on the same (clip, seed), 95% half-width."""
    baseline = rollouts.loc[rollouts["policy"] == to, [*PAIR, "psnr_rollout"]]
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


def gaps_closed(rollouts: pd.DataFrame, budgets: dict[str, int | None]) -> dict[Key, tuple[float | None, float | None]]:
    """Per cell under a finite budget B: (policy - newest B) / (full history - newest B), newest B being
    full_history under B, paired over clips (seeds averaged), with its 95% half-width."""
    unlimited = [name for name, n in budgets.items() if n is None]
    if not unlimited:
        return {}
    keys = ["workload", "mode", "clip", "seed"]
    ours = rollouts[rollouts["policy"] == PAIRED_BASELINE]
    full = ours.loc[ours["budget"] == unlimited[0], [*keys, "psnr_rollout"]].rename(columns={"psnr_rollout": "full"})
    newest = ours.loc[:, [*keys, "budget", "psnr_rollout"]].rename(columns={"psnr_rollout": "newest"})
    pairs = rollouts.merge(newest, on=[*keys, "budget"]).merge(full, on=keys)
    pairs = pairs[pairs["budget"].map(lambda b: budgets.get(b) is not None).astype(bool)]
    pairs = pairs.assign(closed=pairs["psnr_rollout"] - pairs["newest"], gap=pairs["full"] - pairs["newest"])
    return {key: paired_ratio(*per_clip(g, ["closed", "gap"]).T.values) for key, g in pairs.groupby(CELL, observed=True)}


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
    random_gaps, closed = paired_gaps(rollouts, RANDOM_BASELINE), gaps_closed(rollouts, run.budgets)
    returns = {key: _returns_entry(g) for key, g in returning_frames(rollouts, run).groupby(CELL, observed=True)}
    out = {}
    for key, cell in rollouts.groupby(CELL, observed=True):
        out[key] = entry = _cell_entry(cell)
        entry.update(returns.get(key, {}))
        entry[GAP_KEY], entry[f"{GAP_KEY}_ci95"] = gaps.get(key, (None, None))
        if key in random_gaps:
            entry[RANDOM_GAP_KEY], entry[f"{RANDOM_GAP_KEY}_ci95"] = random_gaps[key]
        if key in closed:
            entry[GAP_CLOSED_KEY], entry[f"{GAP_CLOSED_KEY}_ci95"] = closed[key]
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
