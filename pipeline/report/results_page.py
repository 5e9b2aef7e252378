"""docs/results.md, written from a run's metrics by the report stage, so the committed page shows the
committed run; charts are the report's SVGs, copied beside it."""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.benchmark.keys import (
    GAP_CLOSED_KEY,
    GAP_KEY,
    HINDSIGHT_POLICIES,
    MEMORY_GAIN_KEY,
    PAIRED_BASELINE,
    RANDOM_GAP_KEY,
)
from pipeline.report.headline import verdict

CHARTS = ("psnr_vs_horizon", "psnr_gap_vs_budget", "memory_headroom", "psnr_vs_since_seen")  # drawn on the page, in this order


@dataclass(frozen=True)
class StageTimes:
    """Wall seconds of each stage's main work in this run (None: not recorded)."""

    extract: float | None = None
    train_tokenizer: float | None = None
    tokenize: float | None = None
    train: float | None = None
    benchmark: float | None = None


def claim(gap: float | None, ci95: float | None) -> str:
    """The words of :func:`~pipeline.report.headline.verdict`, a claim in bold."""
    if gap is None:
        return "–"
    return {None: "one clip: no interval", "tie": "not distinguishable (interval includes 0)",
            "better": "**better**", "worse": "**worse**"}[verdict(gap, ci95)]


def _num(v, digits: int = 2, sign: bool = False) -> str:
    if v is None:
        return "–"
    return f"{v:+.{digits}f}" if sign else f"{v:.{digits}f}"


def _interval(v, ci95) -> str:
    return _num(v, sign=True) + ("" if v is None or ci95 is None else f" ± {_num(ci95)}")


def _table(head: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(head) + " |", "|" + "|".join(" --- " for _ in head) + "|"]
    return out + ["| " + " | ".join(r) + " |" for r in rows] + [""]


def _budget(name: str, budgets: dict) -> str:
    n = budgets.get(name)
    return f"{name} ({'all frames' if n is None else f'{n} frames'})"


def headline_lines(headline: dict, budgets: dict) -> list[str]:
    workloads = {k: v for k, v in headline.items() if isinstance(v, dict)}
    limited = list(dict.fromkeys(b for w in workloads.values() for b, v in w.items() if isinstance(v, dict)))
    head = ["workload", "model PSNR", "persistence PSNR", "model LPIPS", "persistence LPIPS", "memory headroom"]
    head += [f"best at {_budget(b, budgets)}" for b in limited]
    rows = []
    for name, w in workloads.items():
        row = [name, _num(w.get("model_psnr")), _num(w.get("persistence_psnr")), _num(w.get("model_lpips"), 3),
               _num(w.get("persistence_lpips"), 3), _num(w.get("memory_headroom_psnr"), sign=True)]
        for b in limited:
            best = w.get(b)
            row.append("–" if not best else f"{best['best_policy']}: {_interval(best['best_gap'], best['best_gap_ci95'])} "
                       f"({claim(best['best_gap'], best['best_gap_ci95'])})")
        rows.append(row)
    return ["## Headline", "",
            f"Tokenizer validation PSNR {_num(headline.get('tokenizer_val_psnr'))} dB. PSNR in dB, LPIPS lower is "
            f"better. The model is `{PAIRED_BASELINE}` at the unlimited budget; persistence repeats the last context "
            "frame; memory headroom is the copy-oracle PSNR of all past frames minus that of the last 4. Best: the "
            f"policy with the largest paired gap to `{PAIRED_BASELINE}` under that budget, ± its 95% interval.", "",
            *_table(head, rows)]


def memory_gain_lines(rollouts: dict, budgets: dict) -> list[str]:
    rows = []
    for workload, by_budget in rollouts.items():
        for budget, by_policy in by_budget.items():
            for mode, m in by_policy.get(PAIRED_BASELINE, {}).items():
                if MEMORY_GAIN_KEY in m:
                    gain, ci = m[MEMORY_GAIN_KEY], m.get(f"{MEMORY_GAIN_KEY}_ci95")
                    rows.append([workload, _budget(budget, budgets), mode, _interval(gain, ci), claim(gain, ci)])
    if not rows:
        return []
    return ["## What memory is worth", "",
            f"`{PAIRED_BASELINE}` with every frame minus `{PAIRED_BASELINE}` keeping only the newest B (paired over "
            "clips, ± 95% interval): how much the model gains from frames beyond the budget.", "",
            *_table(["workload", "budget", "mode", "gain dB ± 95% CI", "claim"], rows)]


def leaderboard_lines(rollouts: dict, budgets: dict) -> list[str]:
    out = ["## Policy leaderboard", "",
           f"Per workload and budget, by PSNR (± standard error over clips) with the paired gap to `{PAIRED_BASELINE}` "
           "on the same clips and noise (± 95% interval). **A ranking is a claim only where the interval excludes "
           "zero.**", ""]
    for workload, by_budget in rollouts.items():
        for budget, by_policy in by_budget.items():
            cells = sorted(((p, mode, c) for p, by_mode in by_policy.items() for mode, c in by_mode.items()),
                           key=lambda pmc: -pmc[2]["psnr"])
            rows = []
            for policy, mode, c in cells:
                baseline = policy == PAIRED_BASELINE
                note = "hindsight reference, not a policy" if policy in HINDSIGHT_POLICIES else None
                sem = "" if c.get("psnr_sem") is None else f" ± {_num(c['psnr_sem'])}"
                rows.append([policy, mode, _num(c["psnr"]) + sem,
                             "–" if baseline else _interval(c.get(GAP_KEY), c.get(f"{GAP_KEY}_ci95")),
                             _num(c.get("lpips"), 3), _num(c.get("mean_frames_kept"), 1),
                             "baseline" if baseline else note or claim(c.get(GAP_KEY), c.get(f"{GAP_KEY}_ci95"))])
            out += [f"### {workload} / {_budget(budget, budgets)}", "",
                    *_table(["policy", "mode", "PSNR ± s.e.", f"gap to {PAIRED_BASELINE} ± 95% CI", "LPIPS",
                             "frames kept", "claim"], rows)]
    return out


def returns_lines(rollouts: dict, budgets: dict) -> list[str]:
    """Per workload with returning frames and per finite budget: what each policy recovers of memory's gain."""
    out = []
    for workload, by_budget in rollouts.items():
        for budget, by_policy in by_budget.items():
            cells = [(p, mode, c) for p, by_mode in by_policy.items() for mode, c in by_mode.items()
                     if budgets.get(budget) is not None and c.get("returning_frames")]
            if not cells:
                continue
            rows = [[p + (" (hindsight reference)" if p in HINDSIGHT_POLICIES else ""), mode,
                     _num(c.get("returning_psnr")), _num(c.get("returning_lpips"), 3),
                     _interval(c.get(GAP_KEY), c.get(f"{GAP_KEY}_ci95")),
                     _interval(c.get(RANDOM_GAP_KEY), c.get(f"{RANDOM_GAP_KEY}_ci95")),
                     _num(c.get(GAP_CLOSED_KEY)) + ("" if c.get(f"{GAP_CLOSED_KEY}_ci95") is None
                                                    else f" ± {_num(c[f'{GAP_CLOSED_KEY}_ci95'])}")]
                    for p, mode, c in sorted(cells, key=lambda pmc: -pmc[2]["psnr"])]
            out += [f"### {workload} / {_budget(budget, budgets)}", "",
                    *_table(["policy", "mode", "returning PSNR", "returning LPIPS", f"gap to newest B ({PAIRED_BASELINE})",
                             "gap to random", "share of memory's gain closed"], rows)]
    if not out:
        return []
    return ["## Returns", "",
            "Frames whose view the context last showed 64+ frames before (from poses): their PSNR and LPIPS, each "
            "policy's paired gap to keeping the newest B and to random retention (± 95% interval), and the share of "
            "the gap between the newest B and every frame that it closes, (policy − newest B) / (all frames − "
            "newest B), ± its delta-method 95% interval.", "", *out]


def headroom_lines(references: dict) -> list[str]:
    rows = []
    for workload, refs in references.items():
        oracles = {name: r["psnr"] for name, r in refs.items() if name.startswith("memory_")}
        if "memory_all_past" not in oracles:
            continue
        lasts = sorted((int(n.rsplit("_", 1)[1]), v) for n, v in oracles.items() if n.startswith("memory_last_"))
        rows.append([workload, _num(oracles["memory_all_past"]),
                     ", ".join(f"last {k}: {_num(v)}" for k, v in lasts),
                     ", ".join(f"{_num(oracles['memory_all_past'] - v, sign=True)} over last {k}" for k, v in lasts),
                     _num(refs.get("tokenizer_ceiling", {}).get("psnr"))])
    if not rows:
        return []
    return ["## Memory headroom", "",
            "Copy oracles, model-free: the PSNR of copying, for every predicted frame, the earlier ground-truth frame "
            "that best matches it, among all past frames or the last k. Their difference is what remembering more "
            "can gain at most.", "",
            *_table(["workload", "all past frames", "last k", "headroom", "tokenizer ceiling"], rows)]


def stage_time_lines(times: StageTimes) -> list[str]:
    rows = [[stage, _num(getattr(times, stage), 1)] for stage in StageTimes.__dataclass_fields__]
    return ["## Stage times", "",
            "Wall seconds of each stage's main work in this run (extract and tokenize: the whole stage; the trainers: "
            "their loops; benchmark: its rollouts).", "", *_table(["stage", "seconds"], rows)]


def results_markdown(headline: dict, benchmark: dict, times: StageTimes, charts: dict[str, str]) -> str:
    """The page; ``charts`` maps a chart's name to its path relative to the page (drawn where present)."""
    budgets = benchmark.get("budgets", {})
    info = ", ".join(f"{k} {benchmark[k]}" for k in ("host", "device", "n_clips", "n_seeds", "sampling_steps", "protocol")
                     if k in benchmark)
    drawn = [f"![{name}]({charts[name]})" for name in CHARTS if name in charts]
    lines = ["# Results", "",
             "<!-- Written by the report stage (`dvc repro report`) from the run's metrics; edits are overwritten. -->",
             "",
             f"The committed run: {info}. Every figure on this page is generated from `metrics/` by the report stage, "
             "so it shows the run that `dvc.lock` records. The full detail is `metrics/benchmark.json`; the interactive "
             "view is `reports/index.html` and `dvc plots show`.", "",
             *headline_lines(headline, budgets),
             *memory_gain_lines(benchmark.get("rollouts", {}), budgets),
             *leaderboard_lines(benchmark.get("rollouts", {}), budgets),
             *returns_lines(benchmark.get("rollouts", {}), budgets),
             *headroom_lines(benchmark.get("references", {})),
             *(["## Charts", "", *[d + "\n" for d in drawn]] if drawn else []),
             *stage_time_lines(times)]
    return "\n".join(lines).rstrip() + "\n"
