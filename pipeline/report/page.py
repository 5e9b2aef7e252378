"""reports/index.html: one page per run that needs no network and runs no script (inline SVG charts).
The GIF grids are linked relatively (benchmark/<workload>_<budget>.gif): to share the page, share reports/."""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field

from pipeline.benchmark.keys import HINDSIGHT_POLICIES
from pipeline.report.headline import GAP, PAIRED_BASELINE, verdict

STYLE = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 0 auto; max-width: 1280px;
       padding: 8px 24px 48px; color: #222; line-height: 1.45; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { margin-top: 1.8em; border-bottom: 1px solid #ddd; }
.meta { color: #666; } .note { color: #444; max-width: 60em; }
table { border-collapse: collapse; margin: 0.6em 0 1.2em; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid #ddd; padding: 3px 9px; text-align: right; } th { background: #f5f5f5; }
td.name, th.name { text-align: left; }
.better { color: #16794c; font-weight: 600; } .worse { color: #b42318; font-weight: 600; } .ns { color: #777; }
.chart { overflow-x: auto; margin: 0.5em 0 1em; } .chart svg { max-width: none; }
figure { display: inline-block; margin: 0 18px 18px 0; vertical-align: top; }
figcaption { font-size: 0.9em; color: #444; } figure img { image-rendering: pixelated; border: 1px solid #ddd; }
code { background: #f3f3f3; padding: 0 3px; }
"""


@dataclass
class Report:
    """What the page shows; `charts` maps a chart's name to its SVG text (None: not drawn)."""

    headline: dict
    benchmark: dict
    charts: dict[str, str | None] = field(default_factory=dict)
    gifs: list[tuple[str, str, str, tuple[int, int] | None]] = field(default_factory=list)  # (workload, budget, src, size)
    media_mode: str | None = None


def esc(x) -> str:
    return html.escape(str(x))


def fmt(v, digits: int = 2, sign: bool = False) -> str:
    if v is None:
        return "&ndash;"
    return f"{v:+.{digits}f}" if sign else f"{v:.{digits}f}"


def inline_svg(svg: str) -> str:
    """An SVG document as an element to put in HTML (no XML declaration or doctype)."""
    return re.sub(r"^\s*(<\?xml[^>]*\?>\s*)?(<!DOCTYPE[^>]*>\s*)?", "", svg)


def budget_label(name: str, budgets: dict) -> str:
    n = budgets.get(name)
    return f"{esc(name)} ({'all frames' if n is None else f'{n} frames'})" if name in budgets else esc(name)


def claim(policy: str, gap, ci95) -> tuple[str, str]:
    """(css class, words) of a paired gap to the baseline (:func:`~pipeline.report.headline.verdict`)."""
    if policy == PAIRED_BASELINE:
        return "ns", "baseline"
    if policy in HINDSIGHT_POLICIES:
        return "ns", "hindsight reference (reads the truth): not a policy"
    if gap is None:
        return "ns", "no baseline run"
    return {None: ("ns", "one rollout: no interval"), "tie": ("ns", "not distinguishable (interval includes 0)"),
            "better": ("better", f"better than {PAIRED_BASELINE}"),
            "worse": ("worse", f"worse than {PAIRED_BASELINE}")}[verdict(gap, ci95)]


def headline_section(h: dict, budgets: dict) -> str:
    top = [("tokenizer validation PSNR", fmt(h.get("tokenizer_val_psnr")) + " dB"),
           ("τ sampled by the dynamics training", f"{fmt(h.get('train_tau_min'), 3)} &ndash; {fmt(h.get('train_tau_max'), 3)}"),
           ("benchmark rollout wall time", fmt(h.get("benchmark_seconds"), 1) + " s")]
    out = ["<h2>Headline</h2>",
           "<p class='note'>The numbers of <code>metrics/headline.json</code>: the metric columns of "
           "<code>dvc exp show</code> and the lines of <code>dvc metrics diff</code>.</p>",
           "<table><tbody>" + "".join(f"<tr><th class='name'>{k}</th><td>{v}</td></tr>" for k, v in top) + "</tbody></table>"]
    workloads = {k: v for k, v in h.items() if isinstance(v, dict)}
    if not workloads:
        return "\n".join(out)
    limited = list(dict.fromkeys(b for w in workloads.values() for b, v in w.items() if isinstance(v, dict)))
    head = ["workload", "model PSNR", "persistence PSNR", "model LPIPS", "persistence LPIPS", "memory headroom"]
    head += [f"best at {budget_label(b, budgets)}" for b in limited]
    rows = []
    for name, w in workloads.items():
        cells = [f"<td class='name'>{esc(name)}</td>", f"<td>{fmt(w.get('model_psnr'))}</td>",
                 f"<td>{fmt(w.get('persistence_psnr'))}</td>", f"<td>{fmt(w.get('model_lpips'), 4)}</td>",
                 f"<td>{fmt(w.get('persistence_lpips'), 4)}</td>", f"<td>{fmt(w.get('memory_headroom_psnr'), sign=True)}</td>"]
        for b in limited:
            best = w.get(b)
            if not best:
                cells.append("<td>&ndash;</td>")
                continue
            css, _ = claim(best["best_policy"], best["best_gap"], best["best_gap_ci95"])
            ci = "" if best["best_gap_ci95"] is None else f" &plusmn; {fmt(best['best_gap_ci95'])}"
            cells.append(f"<td class='name'>{esc(best['best_policy'])}: <span class='{css}'>{fmt(best['best_gap'], sign=True)}"
                         f"{ci} dB</span></td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    out.append("<table><thead><tr>" + "".join(f"<th class='name'>{c}</th>" if i == 0 else f"<th>{c}</th>"
                                               for i, c in enumerate(head)) + "</tr></thead><tbody>" + "".join(rows)
               + "</tbody></table>")
    out.append("<p class='note'>PSNR in dB (higher is better), LPIPS lower is better. The model is "
               f"<code>{PAIRED_BASELINE}</code> at the unlimited budget; persistence repeats the last context frame; "
               "memory headroom is the PSNR of copying the best of all past frames minus that of the best of the last 4 "
               "(copy oracles). Best: the policy/mode with the largest paired gap to "
               f"<code>{PAIRED_BASELINE}</code> under that budget, &plusmn; its 95% interval (green/red where the interval "
               "excludes zero).</p>")
    return "\n".join(out)


def leaderboard_section(benchmark: dict, chart: str | None) -> str:
    budgets = benchmark.get("budgets", {})
    out = ["<h2>Policy leaderboard</h2>",
           "<p class='note'>Per workload and budget, the policies (in each mode) by PSNR, with the standard error over "
           "clips (a clip's sampling seeds averaged first) "
           f"and the mean paired gap to <code>{PAIRED_BASELINE}</code> on the same clips and noise, &plusmn; its 95% "
           "interval. <strong>A ranking is a claim only where the interval excludes zero</strong> (green: better, red: "
           "worse); where it includes zero, these rollouts cannot tell the two policies apart, whatever the order. "
           "More clips (<code>benchmark.n_clips</code>) narrow the intervals.</p>"]
    if chart:
        out.append(f"<div class='chart'>{inline_svg(chart)}</div>")
    for workload, by_budget in benchmark.get("rollouts", {}).items():
        for budget, by_policy in by_budget.items():
            cells = [(p, mode, c) for p, by_mode in by_policy.items() for mode, c in by_mode.items()]
            cells.sort(key=lambda pmc: -pmc[2]["psnr"])  # stable: the params' order among equals
            rows = []
            for policy, mode, c in cells:
                css, words = claim(policy, c.get(GAP), c.get(f"{GAP}_ci95"))
                gap = "&ndash;" if c.get(GAP) is None or policy == PAIRED_BASELINE else (
                    fmt(c[GAP], sign=True) + ("" if c.get(f"{GAP}_ci95") is None else f" &plusmn; {fmt(c[f'{GAP}_ci95'])}"))
                sem = "" if c.get("psnr_sem") is None else f" &plusmn; {fmt(c['psnr_sem'])}"
                rows.append(f"<tr><td class='name'>{esc(policy)}</td><td class='name'>{esc(mode)}</td>"
                            f"<td>{fmt(c['psnr'])}{sem}</td><td class='{css}'>{gap}</td>"
                            f"<td>{fmt(c.get('lpips'), 4)}</td><td>{fmt(c.get('mean_frames_kept'), 1)}</td>"
                            f"<td class='name {css}'>{words}</td></tr>")
            out.append(f"<h3>{esc(workload)} / {budget_label(budget, budgets)}</h3>"
                       "<table><thead><tr><th class='name'>policy</th><th class='name'>mode</th><th>PSNR dB &plusmn; s.e.</th>"
                       f"<th>gap to {PAIRED_BASELINE} dB &plusmn; 95% CI</th><th>LPIPS</th><th>frames kept (mean)</th>"
                       "<th class='name'>claim</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>")
    return "\n".join(out)


def charts_block(charts: dict[str, str | None], names: list[str]) -> str:
    return "\n".join(f"<div class='chart'>{inline_svg(charts[n])}</div>" for n in names if charts.get(n))


def gifs_section(gifs: list[tuple[str, str, str, tuple[int, int] | None]], budgets: dict, mode: str | None) -> str:
    out = ["<h2>Rollouts</h2>"]
    if not gifs:
        out.append("<p class='note'>No rollout GIFs in this run (<code>benchmark.media_clips: 0</code>).</p>")
        return "\n".join(out)
    out.append("<p class='note'>Columns: ground truth | persistence | each policy"
               f"{f' ({esc(mode)} mode)' if mode else ''}; one row per clip; the context frames are not shown. The GIFs "
               "are the files of <code>reports/benchmark/</code>, beside this page.</p>")
    for workload, budget, src, size in gifs:
        k = 2 if size and 2 * size[0] <= 1200 else 1  # small grids at twice their pixels
        wh = f" width='{k * size[0]}' height='{k * size[1]}'" if size else ""
        out.append(f"<figure><img alt='{esc(workload)} {esc(budget)}'{wh} src='{esc(src)}'>"
                   f"<figcaption>{esc(workload)} / {budget_label(budget, budgets)}</figcaption></figure>")
    return "\n".join(out)


def gif_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a GIF's logical screen descriptor."""
    if data[:6] not in (b"GIF87a", b"GIF89a") or len(data) < 10:
        return None
    return int.from_bytes(data[6:8], "little"), int.from_bytes(data[8:10], "little")


def render_page(report: Report) -> str:
    """The whole page."""
    b = report.benchmark
    budgets = b.get("budgets", {})
    info = ", ".join(f"{k} {esc(b[k])}" for k in ("host", "device", "n_clips", "n_seeds", "sampling_steps") if k in b)
    has_headroom = bool(report.charts.get("memory_headroom"))
    parts = [
        "<!DOCTYPE html>", "<html lang='en'>", "<head>", "<meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        "<title>World model benchmark report</title>", f"<style>{STYLE}</style>", "</head>", "<body>",
        "<h1>World model benchmark report</h1>",
        f"<p class='meta'>{info}. Written by <code>dvc repro</code> (stage <code>report</code>); the detail is in "
        "<code>metrics/benchmark.json</code> and the <code>dvc plots</code>.</p>",
        headline_section(report.headline, budgets),
        "<h2>Quality against horizon</h2>",
        "<p class='note'>Mean over clips of each predicted frame's quality: the further from the context, the harder. "
        "Persistence and the copy oracles are references, not policies; the tokenizer ceiling (decode of encode of the "
        "truth) is in the leaderboard data and left out here.</p>",
        charts_block(report.charts, ["psnr_vs_horizon", "lpips_vs_horizon"]),
        leaderboard_section(b, report.charts.get("psnr_gap_vs_budget")),
        "<h2>Memory headroom</h2>",
        charts_block(report.charts, ["memory_headroom"]) if has_headroom else
        "<p class='note'>This run has no copy-oracle references (<code>memory_all_past</code>, "
        "<code>memory_last_&lt;k&gt;</code>): nothing to show.</p>",
        "<h2>Training</h2>",
        charts_block(report.charts, ["training_tokenizer", "training_dynamics"]) or
        "<p class='note'>No training curves (dvclive/) in this run.</p>",
        *(["<h2>Returns</h2>",
           "<p class='note'>PSNR of each predicted frame by how long ago the context last showed its view (from "
           "poses; <code>new</code>: never). Returning frames are those seen 64+ frames before: only a policy that "
           "kept such an old frame can draw them from memory.</p>",
           charts_block(report.charts, ["psnr_vs_since_seen"])] if report.charts.get("psnr_vs_since_seen") else []),
        gifs_section(report.gifs, budgets, report.media_mode),
        "</body>", "</html>",
    ]
    return "\n".join(parts) + "\n"
