"""The report stage's outputs from a small run: the headline, the charts, a page that needs
nothing but itself, and the template `dvc plots` uses."""

import configparser
import json
import os
import re
import subprocess
import sys

import yaml

from pipeline import paths
from pipeline.report.build import Inputs, Outputs, build_report, read_series, training_panels
from pipeline.report.page import claim
from pipeline.report.template import plots_template
from tests.browser import remote_resources
from tests.project_clone import PROJECT_ROOT


def inputs(root):
    return Inputs(benchmark=root / "metrics/benchmark.json", horizon_csv=root / "metrics/benchmark_horizon.csv",
                  tokenizer=root / "metrics/tokenizer.json", train=root / "metrics/train.json", live=root / "dvclive",
                  media=root / "reports/benchmark", frames_report=root / "data/frames_report.json",
                  latents_report=root / "data/latents_report.json")


def outputs(root):
    return Outputs(headline=root / "metrics/headline.json", page=root / "reports/index.html",
                   charts=root / "reports/charts", plots_template=root / "reports/plots_template.html",
                   docs_page=root / "docs/results.md", docs_charts=root / "docs/charts")


def test_the_report_is_one_self_contained_page_with_every_chart(run_dir):
    top = build_report(inputs(run_dir), outputs(run_dir))
    assert json.loads((run_dir / "metrics/headline.json").read_text()) == top
    charts = sorted(p.name for p in (run_dir / "reports/charts").glob("*.svg"))
    assert charts == ["lpips_vs_horizon.svg", "psnr_gap_vs_budget.svg", "psnr_vs_horizon.svg",
                      "training_dynamics.svg", "training_tokenizer.svg"]  # no copy oracles: no headroom chart

    page = (run_dir / "reports/index.html").read_text()
    assert remote_resources(page) == [] and "<script" not in page
    assert page.count("<svg") == len(charts)
    gifs = re.findall(r"<img [^>]*src='([^']+)'", page)  # linked beside the page, at twice their size
    assert gifs == ["benchmark/short_full.gif", "benchmark/short_tight.gif", "benchmark/long_full.gif",
                    "benchmark/long_tight.gif"] and "width='40' height='16'" in page
    for words in ("A ranking is a claim only where the interval excludes zero", "no copy-oracle references",
                  "better than full_history", "not distinguishable"):
        assert words in page
    # nothing is left under a temporary name
    assert not [p for p in run_dir.rglob("*") if ".tmp-" in p.name]


def test_the_memory_headroom_chart_appears_with_the_copy_oracles(run_dir):
    bench = json.loads((run_dir / "metrics/benchmark.json").read_text())
    for w in bench["references"]:
        bench["references"][w].update({f"memory_last_{k}": {"psnr": 20 + k, "lpips": 0.1} for k in (1, 4, 8)})
        bench["references"][w]["memory_all_past"] = {"psnr": 30, "lpips": 0.05}
    (run_dir / "metrics/benchmark.json").write_text(json.dumps(bench))
    top = build_report(inputs(run_dir), outputs(run_dir))
    assert top["short"]["memory_headroom_psnr"] == 6
    svg = (run_dir / "reports/charts/memory_headroom.svg").read_text()
    assert "memory_last_8" in svg and "memory_all_past" in svg
    assert "Memory headroom" in (run_dir / "reports/index.html").read_text()


def test_training_curves_leave_out_the_bookkeeping(run_dir):
    panels = training_panels(read_series(run_dir / "dvclive/train/plots/metrics"))
    assert list(panels) == ["training loss", "validation PSNR, dB"]
    assert sorted(panels["validation PSNR, dB"]) == ["persistence_psnr", "psnr_tau_0.1"]  # no input PSNR, no lr
    assert panels["training loss"]["loss"][0] == (100.0, 0.01)


def test_a_gap_is_a_claim_only_where_its_interval_excludes_zero():
    assert claim("a", 0.5, 0.2)[0] == "better" and claim("a", -0.5, 0.2)[0] == "worse"
    assert claim("a", 0.1, 0.2)[1].startswith("not distinguishable")
    assert claim("a", 0.1, None)[1] == "one rollout: no interval"
    assert claim("full_history", 0.0, 0.0)[1] == "baseline"


def test_the_plots_template_inlines_the_chart_libraries_and_dvc_uses_it():
    html = plots_template()
    assert html.count("{plot_divs}") == 1 and "{scripts}" not in html  # DVC's CDN tags go nowhere
    assert remote_resources(html) == [] and "window.vegaEmbed" in html
    assert html.index("window.vegaEmbed") < html.index("{plot_divs}")  # defined before DVC's charts call it
    # .dvc/config points `dvc plots` at the file the report stage writes
    config = configparser.ConfigParser()
    config.read(PROJECT_ROOT / ".dvc/config")
    assert os.path.normpath(PROJECT_ROOT / ".dvc" / config["plots"]["html_template"]) == str(PROJECT_ROOT / paths.PLOTS_TEMPLATE)
    report = yaml.safe_load((PROJECT_ROOT / "dvc.yaml").read_text())["stages"]["report"]
    assert paths.PLOTS_TEMPLATE.as_posix() in report["outs"]


def test_the_report_stage_names_its_headline(run_dir):
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    proc = subprocess.run([sys.executable, "-m", "stages.report"], cwd=run_dir, capture_output=True, text=True, env=env,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"short\.tight\.best_policy\s+packcache/recompute", proc.stdout)
    assert (run_dir / paths.PLOTS_TEMPLATE).stat().st_size > 100_000 and (run_dir / paths.REPORT_HTML).is_file()


def test_the_docs_results_page_is_generated_from_the_metrics_with_claims_only_where_intervals_exclude_zero(run_dir):
    (run_dir / "data").mkdir()
    (run_dir / "data/frames_report.json").write_text(json.dumps({"seconds": 3.5}))
    (run_dir / "metrics/train.json").write_text(json.dumps({"tau_min": 0.0625, "tau_max": 1.0, "train_seconds_this_run": 61.0}))
    build_report(inputs(run_dir), outputs(run_dir))
    page = (run_dir / "docs/results.md").read_text()
    assert "### long / tight (4 frames)" in page and "### short / full (all frames)" in page
    # short/tight/kv recent_window: +0.50 ± 0.30 excludes zero; packcache +0.10 ± 0.05 too; recompute packcache does not
    assert "| recent_window | kv | 22.50 ± 0.30 | +0.50 ± 0.30 | 0.100 | 3.5 | **better** |" in page
    tie = "not distinguishable (interval includes 0)"
    assert f"| packcache | recompute | 22.80 ± 0.30 | +0.60 ± 0.90 | 0.100 | 3.5 | {tie} |" in page
    assert "| extract | 3.5 |" in page and "| train | 61.0 |" in page and "| tokenize | – |" in page
    for link in ("charts/psnr_vs_horizon.svg", "charts/psnr_gap_vs_budget.svg"):
        assert f"]({link})" in page and (run_dir / "docs" / link).is_file()
    assert "memory_headroom" not in page  # no copy oracles in this run: nothing drawn


def test_returns_get_their_section_and_chart_and_a_hindsight_reference_is_never_the_best(run_dir):
    bench = json.loads((run_dir / "metrics/benchmark.json").read_text())
    tight = bench["rollouts"]["long"]["tight"]
    for policy, extra in (("packcache", {"gap_closed": 0.55, "gap_closed_ci95": 0.2}),
                          ("full_history", {"gap_closed": 0.0, "gap_closed_ci95": 0.0})):
        tight[policy]["kv"].update(returning_frames=40, returning_psnr=21.5, returning_lpips=0.2,
                                   psnr_vs_random=1.2, psnr_vs_random_ci95=0.5, **extra)
    oracle = {"temporal_quality_main": 60.0, "psnr": 24.0, "psnr_sem": 0.3, "psnr_vs_full_history": 3.0,
              "psnr_vs_full_history_ci95": 0.5, "lpips": 0.1, "mean_frames_kept": 4.0}
    tight["oracle_copy"] = {"kv": oracle}
    (run_dir / "metrics/benchmark.json").write_text(json.dumps(bench))
    rows = ["workload,budget,policy,mode,since_seen,psnr,lpips,frames"]
    rows += [f"long,tight,{p},kv,{b},{v},0.2,10" for p in ("packcache", "full_history")
             for b, v in (("1-8", 25.0), ("64-127", 20.0), ("new", 18.0))]
    (run_dir / "metrics/benchmark_revisit.csv").write_text("\r\n".join(rows) + "\r\n")
    result = build_report(Inputs(**{**inputs(run_dir).__dict__, "revisit_csv": run_dir / "metrics/benchmark_revisit.csv"}),
                          outputs(run_dir))
    assert result["long"]["tight"]["best_policy"] != "oracle_copy/kv"  # +3.0 dB, but it reads the truth
    page = (run_dir / "docs/results.md").read_text()
    assert "## Returns" in page and "| packcache | kv | 21.50 | 0.200 | +0.10 ± 0.05 | +1.20 ± 0.50 | 0.55 ± 0.20 |" in page
    assert "| oracle_copy | kv | 24.00 ± 0.30 | +3.00 ± 0.50 | 0.100 | 4.0 | hindsight reference, not a policy |" in page
    assert "](charts/psnr_vs_since_seen.svg)" in page and (run_dir / "docs/charts/psnr_vs_since_seen.svg").is_file()
    assert "<h2>Returns</h2>" in (run_dir / "reports/index.html").read_text()
