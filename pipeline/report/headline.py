"""metrics/headline.json: a few dozen numbers `dvc exp show` and `dvc metrics diff` compare across experiments
(the keys: docs/index.md#headline-metrics); the detail stays in metrics/benchmark.json."""

from __future__ import annotations

import math
from typing import Any

from pipeline.benchmark.keys import GAP_KEY as GAP
from pipeline.benchmark.keys import HINDSIGHT_POLICIES, PAIRED_BASELINE

HEADROOM_ALL = "memory_all_past"
HEADROOM_LAST = "memory_last_4"


def verdict(gap: float | None, ci95: float | None) -> str | None:
    """"better" / "worse" where the 95% interval excludes zero, "tie" where it includes it; None without both."""
    if gap is None or ci95 is None:
        return None
    if abs(gap) <= ci95:
        return "tie"
    return "better" if gap > 0 else "worse"


def _number(v: Any) -> float | None:
    """A finite float, or None (JSON null) for a missing or undefined value."""
    if v is None:
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def model_budget(budgets: dict[str, int | None], present: list[str]) -> str | None:
    """The budget at which full_history is "the model": the first unlimited one, else the largest."""
    present = [b for b in present if b in budgets] or present
    unlimited = [b for b in present if budgets.get(b) is None]
    if unlimited:
        return unlimited[0]
    return max(present, key=lambda b: budgets[b]) if present else None


def limited_budgets(budgets: dict[str, int | None], present: list[str]) -> list[str]:
    """The budgets that cap the frames kept, in the run's order."""
    return [b for b in present if budgets.get(b) is not None]


def best_policy(cells: dict[str, dict[str, dict]]) -> tuple[str, str, dict] | None:
    """(policy, mode, metrics) of one budget's cell with the largest paired gap to full_history (itself
    excluded); None if no cell has a gap."""
    best = None
    for policy, modes in cells.items():
        if policy == PAIRED_BASELINE or policy in HINDSIGHT_POLICIES:
            continue
        for mode, m in modes.items():
            gap = _number(m.get(GAP))
            if gap is not None and (best is None or gap > _number(best[2][GAP])):
                best = (policy, mode, m)
    return best


def headline(benchmark: dict, tokenizer: dict | None = None, train: dict | None = None) -> dict:
    """The headline metrics from the parsed metrics files."""
    out: dict[str, Any] = {}
    if tokenizer is not None:
        out["tokenizer_val_psnr"] = _number(tokenizer["val"]["psnr"])
    if train is not None:
        out["train_tau_min"] = _number(train["tau_min"])
        out["train_tau_max"] = _number(train["tau_max"])
    rollouts = benchmark.get("rollouts", {})
    references = benchmark.get("references", {})
    for workload, by_budget in rollouts.items():
        present = list(by_budget)
        budgets = benchmark.get("budgets") or {b: None for b in present}
        w: dict[str, Any] = {}
        full = model_budget(budgets, present)
        model = by_budget.get(full, {}).get(PAIRED_BASELINE) if full else None
        refs = references.get(workload, {})
        if model:
            first_mode = next(iter(model.values()))
            w["model_psnr"] = _number(first_mode["psnr"])
            w["model_lpips"] = _number(first_mode["lpips"])
        if "persistence" in refs:
            w["persistence_psnr"] = _number(refs["persistence"]["psnr"])
            w["persistence_lpips"] = _number(refs["persistence"]["lpips"])
        if HEADROOM_ALL in refs and HEADROOM_LAST in refs:
            w["memory_headroom_psnr"] = _number(refs[HEADROOM_ALL]["psnr"] - refs[HEADROOM_LAST]["psnr"])
        for budget in limited_budgets(budgets, present):
            best = best_policy(by_budget[budget])
            if best is not None:
                policy, mode, m = best
                w[budget] = {"best_policy": f"{policy}/{mode}", "best_gap": _number(m[GAP]),
                             "best_gap_ci95": _number(m.get(f"{GAP}_ci95"))}
        out[workload] = w
    if "seconds" in benchmark:
        out["benchmark_seconds"] = _number(benchmark["seconds"])
    return out


def leaves(tree: dict, prefix: str = "") -> dict[str, Any]:
    """Flattened ``a.b.c`` keys, as `dvc exp show` names the columns."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(leaves(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
