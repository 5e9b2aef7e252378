"""Read a run's outputs; write the headline metrics, charts, page and plots template, each atomically
(a killed run leaves the previous report whole)."""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path

from pipeline.atomic import atomic_dir, atomic_file, remove_stale_tmp, write_json
from pipeline.report import charts as ch
from pipeline.report.headline import GAP, PAIRED_BASELINE, headline
from pipeline.report.page import Report, gif_size, render_page
from pipeline.report.results_page import CHARTS, StageTimes, results_markdown
from pipeline.report.template import plots_template


@dataclass(frozen=True)
class Inputs:
    benchmark: Path  # metrics/benchmark.json
    horizon_csv: Path  # metrics/benchmark_horizon.csv
    tokenizer: Path  # metrics/tokenizer.json
    train: Path  # metrics/train.json
    live: Path  # dvclive/ (tokenizer/ and train/ inside)
    media: Path  # reports/benchmark (<workload>_<budget>.gif)
    frames_report: Path  # data/frames_report.json (extract's time)
    latents_report: Path  # data/latents_report.json (tokenize's time)
    revisit_csv: Path | None = None  # metrics/benchmark_revisit.csv (quality by frames since a view was seen)


@dataclass(frozen=True)
class Outputs:
    headline: Path  # metrics/headline.json
    page: Path  # reports/index.html
    charts: Path  # reports/charts/
    plots_template: Path  # reports/plots_template.html
    docs_page: Path  # docs/results.md
    docs_charts: Path  # docs/charts/


def _json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def read_series(plots_dir: Path) -> dict[str, list[tuple[float, float]]]:
    """DVCLive's TSVs under `plots_dir` (``train/loss.tsv`` ...): name without suffix -> [(step, value)]."""
    series = {}
    for tsv in sorted(plots_dir.rglob("*.tsv")):
        with tsv.open(newline="") as f:
            rows = list(csv.DictReader(f, delimiter="\t"))
        if rows:
            value = [k for k in rows[0] if k not in ("step", "timestamp")][-1]
            series[tsv.relative_to(plots_dir).with_suffix("").as_posix()] = [
                (float(r["step"]), float(r[value])) for r in rows if r[value] not in ("", None)]
    return series


def training_panels(series: dict[str, list]) -> dict[str, dict[str, list]]:
    """The curves worth a look: training loss, and validation PSNR beside persistence's."""
    panels: dict[str, dict[str, list]] = {}
    if "train/loss" in series:
        panels["training loss"] = {"loss": series["train/loss"]}
    val = {name.removeprefix("val/"): pts for name, pts in series.items()
           if name.startswith("val/") and "psnr" in name and "input_psnr" not in name}
    if val:
        panels["validation PSNR, dB"] = val
    return panels


def read_horizon(path: Path) -> list[dict]:
    with path.open(newline="") as f:
        return [{**r, "horizon": int(r["horizon"]), **{m: float(r[m]) for m in ("psnr", "ssim", "lpips")}}
                for r in csv.DictReader(f)]


def read_revisit(path: Path | None) -> list[dict]:
    if path is None or not path.is_file():
        return []
    with path.open(newline="") as f:
        return [{**r, "psnr": float(r["psnr"]), "lpips": float(r["lpips"]), "frames": int(r["frames"])}
                for r in csv.DictReader(f)]


def gap_cells(benchmark: dict) -> list[dict]:
    cells = []
    for workload, by_budget in benchmark.get("rollouts", {}).items():
        for budget, by_policy in by_budget.items():
            for policy, by_mode in by_policy.items():
                for mode, m in by_mode.items():
                    if policy != PAIRED_BASELINE and m.get(GAP) is not None:
                        cells.append({"workload": workload, "budget": budget, "policy": policy, "mode": mode,
                                      "gap": m[GAP], "ci95": m.get(f"{GAP}_ci95")})
    return cells


def build_charts(benchmark: dict, horizon: list[dict], live: Path, revisit: list[dict] = ()) -> dict[str, dict | None]:
    """name -> Vega-Lite spec (None where the run has nothing to draw)."""
    modes = list(dict.fromkeys(r["mode"] for r in horizon))
    mode = modes[0] if modes else None
    budgets = benchmark.get("budgets", {})
    names = [b for by_budget in benchmark.get("rollouts", {}).values() for b in by_budget]
    specs: dict[str, dict | None] = {
        "psnr_vs_horizon": ch.horizon_chart(horizon, "psnr", mode) if mode else None,
        "lpips_vs_horizon": ch.horizon_chart(horizon, "lpips", mode) if mode else None,
        "psnr_gap_vs_budget": None,
        "memory_headroom": ch.headroom_chart(benchmark.get("references", {})),
        "psnr_vs_since_seen": None,
    }
    if revisit:  # the horizon charts' mode where the table has it
        revisit_modes = list(dict.fromkeys(r["mode"] for r in revisit))
        specs["psnr_vs_since_seen"] = ch.since_seen_chart(list(revisit), mode if mode in revisit_modes else revisit_modes[0])
    cells = gap_cells(benchmark)
    if any(c["ci95"] is not None for c in cells):
        specs["psnr_gap_vs_budget"] = ch.gap_chart(cells, ch.budget_order(names, budgets))
    for name, title in (("tokenizer", "Tokenizer training"), ("train", "Dynamics training")):
        panels = training_panels(read_series(live / name / "plots" / "metrics"))
        specs[f"training_{'dynamics' if name == 'train' else name}"] = ch.training_chart(title, panels)
    return specs


def media_files(media: Path, benchmark: dict, page: Path) -> list[tuple[str, str, str, tuple[int, int] | None]]:
    """The rollout GIFs in the run's order: (workload, budget, path relative to the page, (width, height))."""
    out = []
    for workload, by_budget in benchmark.get("rollouts", {}).items():
        for budget in by_budget:
            gif = media / f"{workload}_{budget}.gif"
            if gif.is_file():
                with gif.open("rb") as f:
                    size = gif_size(f.read(10))
                out.append((workload, budget, Path(os.path.relpath(gif, page.parent)).as_posix(), size))
    return out


def stage_times(inputs: Inputs, benchmark: dict) -> StageTimes:
    """Each stage's main work in seconds, from the files the stages wrote."""
    def seconds(path: Path, key: str):
        values = _json(path) or {}
        return values.get(key)

    return StageTimes(extract=seconds(inputs.frames_report, "seconds"),
                      train_tokenizer=seconds(inputs.tokenizer, "train_seconds_this_run"),
                      tokenize=seconds(inputs.latents_report, "seconds"),
                      train=seconds(inputs.train, "train_seconds_this_run"), benchmark=benchmark.get("seconds"))


def build_report(inputs: Inputs, outputs: Outputs) -> dict:
    """Write every output; returns the headline metrics."""
    for out in (outputs.headline, outputs.page, outputs.charts, outputs.plots_template, outputs.docs_page,
                outputs.docs_charts):
        remove_stale_tmp(out.parent, out.name)  # what a killed run left
    benchmark = json.loads(inputs.benchmark.read_text())
    top = headline(benchmark, _json(inputs.tokenizer), _json(inputs.train))
    specs = build_charts(benchmark, read_horizon(inputs.horizon_csv), inputs.live, read_revisit(inputs.revisit_csv))
    svgs = {name: ch.render_svg(spec) if spec else None for name, spec in specs.items()}
    modes = list(dict.fromkeys(m for by_b in benchmark.get("rollouts", {}).values() for by_p in by_b.values()
                               for by_m in by_p.values() for m in by_m))
    page = render_page(Report(headline=top, benchmark=benchmark, charts=svgs,
                              gifs=media_files(inputs.media, benchmark, outputs.page),
                              media_mode=modes[0] if modes else None))

    with atomic_dir(outputs.charts) as tmp:
        for name, svg in svgs.items():
            if svg:
                (tmp / f"{name}.svg").write_text(svg)
                (tmp / f"{name}.vl.json").write_text(json.dumps(specs[name], indent=1) + "\n")
    with atomic_file(outputs.page) as tmp:
        tmp.write_text(page)
    drawn = {name: svgs[name] for name in CHARTS if svgs.get(name)}
    with atomic_dir(outputs.docs_charts) as tmp:
        for name, svg in drawn.items():
            (tmp / f"{name}.svg").write_text(svg)
    links = {name: Path(os.path.relpath(outputs.docs_charts / f"{name}.svg", outputs.docs_page.parent)).as_posix()
             for name in drawn}
    with atomic_file(outputs.docs_page) as tmp:
        tmp.write_text(results_markdown(top, benchmark, stage_times(inputs, benchmark), links))
    with atomic_file(outputs.plots_template) as tmp:
        tmp.write_text(plots_template())
    write_json(outputs.headline, top)
    return top
