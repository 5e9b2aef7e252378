"""The report's charts: Vega-Lite specs with inline data, rendered to SVG offline by vl-convert."""

from __future__ import annotations

import re
from typing import Iterable

from pipeline.benchmark.keys import GAP_LABELS

VL_VERSION = "5.21"  # the Vega-Lite of DVC's own templates ($schema v5); vl-convert bundles it
SCHEMA = "https://vega.github.io/schema/vega-lite/v5.json"  # an identifier: nothing fetches it
REFERENCE_HIDDEN = ("tokenizer_ceiling",)  # ~15 dB above every rollout: it would flatten the lines
PANEL_WIDTH, PANEL_HEIGHT = 230, 150


def _base(title: str) -> dict:
    return {"$schema": SCHEMA, "title": title, "config": {"font": "sans-serif", "view": {"stroke": "#ddd"}}}


def horizon_chart(rows: list[dict], metric: str, mode: str) -> dict:
    """Quality per predicted frame: a panel per workload (rows) and budget (columns), a line per policy and
    reference (not the tokenizer ceiling), one mode."""
    values = [r for r in rows if r["mode"] == mode and r["policy"] not in REFERENCE_HIDDEN]
    budgets = list(dict.fromkeys(r["budget"] for r in values))
    workloads = list(dict.fromkeys(r["workload"] for r in values))
    lower_is_better = metric == "lpips"
    return {
        **_base(f"{metric.upper()} per predicted frame ({mode} mode){' - lower is better' if lower_is_better else ''}"),
        "data": {"values": [{k: r[k] for k in ("workload", "budget", "policy", "horizon", metric)} for r in values]},
        "facet": {"row": {"field": "workload", "type": "nominal", "sort": workloads, "title": "workload"},
                  "column": {"field": "budget", "type": "nominal", "sort": budgets, "title": "budget"}},
        "spec": {
            "width": PANEL_WIDTH, "height": PANEL_HEIGHT,
            "mark": {"type": "line", "point": {"size": 18}},
            "encoding": {
                "x": {"field": "horizon", "type": "quantitative", "title": "predicted frame"},
                "y": {"field": metric, "type": "quantitative", "title": metric, "scale": {"zero": False}},
                "color": {"field": "policy", "type": "nominal", "title": "policy / reference"},
            },
        },
        "resolve": {"scale": {"x": "independent", "y": "independent"}},
    }


def gap_chart(cells: list[dict], budgets: list[str]) -> dict:
    """Each policy's paired PSNR gap to full_history with its 95% interval, per budget; a panel per workload
    and mode, with the zero line."""
    values = [{"panel": f"{c['workload']} / {c['mode']}", "budget": c["budget"], "policy": c["policy"],
               "gap": c["gap"], "low": c["gap"] - c["ci95"], "high": c["gap"] + c["ci95"]}
              for c in cells if c["ci95"] is not None]
    return {
        **_base("Paired PSNR gap to full_history, dB (mean over rollouts, 95% interval)"),
        "data": {"values": values},
        "facet": {"column": {"field": "panel", "type": "nominal", "sort": list(dict.fromkeys(v["panel"] for v in values)),
                             "title": "workload / mode"}},
        "spec": {
            "width": PANEL_WIDTH, "height": 180,
            "encoding": {
                "x": {"field": "budget", "type": "ordinal", "sort": budgets, "title": "budget"},
                "xOffset": {"field": "policy", "type": "nominal"},
                "color": {"field": "policy", "type": "nominal"},
            },
            "layer": [
                {"mark": {"type": "rule", "color": "#888"}, "encoding": {"y": {"datum": 0}}},
                {"mark": "rule", "encoding": {"y": {"field": "low", "type": "quantitative", "title": "gap, dB"},
                                              "y2": {"field": "high"}}},
                {"mark": {"type": "point", "filled": True, "size": 40},
                 "encoding": {"y": {"field": "gap", "type": "quantitative"}}},
            ],
        },
    }


def since_seen_chart(rows: list[dict], mode: str) -> dict | None:
    """PSNR by frames since the context last showed the predicted view: a panel per workload (rows) and
    budget (columns), a line per policy; None without rows in ``mode``."""
    values = [{k: r[k] for k in ("workload", "budget", "policy", "since_seen", "psnr", "frames")}
              for r in rows if r["mode"] == mode]
    if not values:
        return None
    return {
        **_base(f"PSNR by frames since the view was last seen in the context ({mode} mode)"),
        "data": {"values": values},
        "facet": {"row": {"field": "workload", "type": "nominal", "sort": list(dict.fromkeys(v["workload"] for v in values)),
                          "title": "workload"},
                  "column": {"field": "budget", "type": "nominal", "sort": list(dict.fromkeys(v["budget"] for v in values)),
                             "title": "budget"}},
        "spec": {
            "width": PANEL_WIDTH, "height": PANEL_HEIGHT,
            "mark": {"type": "line", "point": {"size": 18}},
            "encoding": {
                "x": {"field": "since_seen", "type": "ordinal", "sort": GAP_LABELS, "title": "frames since seen"},
                "y": {"field": "psnr", "type": "quantitative", "title": "PSNR, dB", "scale": {"zero": False}},
                "color": {"field": "policy", "type": "nominal", "title": "policy"},
                "tooltip": [{"field": "policy"}, {"field": "since_seen"}, {"field": "psnr"}, {"field": "frames"}],
            },
        },
        "resolve": {"scale": {"y": "independent"}},
    }


def memory_k(name: str) -> float | None:
    """k of a copy-oracle reference ``memory_last_<k>`` (inf for ``memory_all_past``), else None."""
    if name == "memory_all_past":
        return float("inf")
    m = re.fullmatch(r"memory_last_(\d+)", name)
    return float(m.group(1)) if m else None


def headroom_chart(references: dict[str, dict[str, dict]]) -> dict | None:
    """Copy-oracle PSNR (best copy among the last k or all past frames) per workload; None without them."""
    values = []
    for workload, refs in references.items():
        for name, m in refs.items():
            k = memory_k(name)
            if k is not None:
                values.append({"workload": workload, "reference": name, "k": k, "psnr": m["psnr"]})
    if not values:
        return None
    order = [v["reference"] for v in sorted(values, key=lambda v: v["k"])]
    return {
        **_base("Memory headroom: PSNR of copying the best past frame (copy oracle), by frames kept"),
        "data": {"values": values},
        "facet": {"column": {"field": "workload", "type": "nominal", "sort": list(references), "title": "workload"}},
        "spec": {
            "width": PANEL_WIDTH, "height": PANEL_HEIGHT, "mark": "bar",
            "encoding": {
                "x": {"field": "reference", "type": "ordinal", "sort": list(dict.fromkeys(order)), "title": None},
                "y": {"field": "psnr", "type": "quantitative", "title": "PSNR, dB", "scale": {"zero": False}},
            },
        },
        "resolve": {"scale": {"y": "independent"}},
    }


def training_chart(title: str, panels: dict[str, dict[str, list[tuple[float, float]]]]) -> dict | None:
    """A panel per entry of `panels` (panel -> series -> [(step, value)]), own y scales; None if empty."""
    values = [{"panel": panel, "series": series, "step": step, "value": value}
              for panel, by_series in panels.items() for series, points in by_series.items()
              for step, value in points]
    if not values:
        return None
    return {
        **_base(title),
        "data": {"values": values},
        "facet": {"column": {"field": "panel", "type": "nominal", "sort": list(panels), "title": None}},
        "spec": {
            "width": PANEL_WIDTH + 40, "height": PANEL_HEIGHT,
            "mark": {"type": "line", "point": {"size": 12}},
            "encoding": {
                "x": {"field": "step", "type": "quantitative", "title": "step"},
                "y": {"field": "value", "type": "quantitative", "title": None, "scale": {"zero": False}},
                "color": {"field": "series", "type": "nominal", "title": "series"},
            },
        },
        "resolve": {"scale": {"y": "independent", "color": "independent"}},
    }


def render_svg(spec: dict) -> str:
    """The chart as a standalone SVG document (text), rendered offline by vl-convert."""
    import vl_convert

    return vl_convert.vegalite_to_svg(spec, vl_version=VL_VERSION)


def budget_order(names: Iterable[str], budgets: dict[str, int | None]) -> list[str]:
    """Budget names in the run's order (as the params list them), unknown ones last."""
    names = list(dict.fromkeys(names))
    return [b for b in budgets if b in names] + [b for b in names if b not in budgets]
