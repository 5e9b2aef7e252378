"""All stages through real DVC, on tiny params, in a throwaway clone: catches any break between
stages (a contract one stage writes and the next one reads), and checks what a researcher sees
afterwards: `dvc exp show` fits a screen, `dvc plots` and the report draw with no network.

One `dvc repro` (the session fixture tiny_run, tests/conftest.py) serves every test here and the
play tests; the test that changes the clone runs last."""

import csv
import io
import json
import re

import pytest

from pipeline.report.headline import leaves
from tests.browser import open_offline

STAGES = ("fingerprint", "download", "extract", "train_tokenizer", "tokenize", "train", "benchmark", "report")
MAX_EXP_SHOW_COLUMNS = 80  # what a 250-column terminal can still show without eliding every cell


def exp_show_header(clone) -> list[str]:
    return next(csv.reader(io.StringIO(clone.run("dvc", "exp", "show", "--csv").stdout)))


@pytest.mark.slow
def test_dvc_repro_runs_all_stages_and_dvc_exp_show_stays_narrow(tiny_run):
    clone, out = tiny_run
    for stage in STAGES:
        assert f"Running stage '{stage}'" in out

    root = clone.root
    bench = json.loads((root / "metrics/benchmark.json").read_text())
    flat = json.dumps(bench)
    for policy in ("recent_window", "packcache", "causalcache_vdm", "flowcache", "full_history"):
        assert policy in flat
    assert bench["budgets"] == {"full": None, "medium": 8, "tight": 2}
    for name in ("tokenizer.json", "train.json"):
        assert json.loads((root / "metrics" / name).read_text())
    assert (root / "metrics/benchmark_horizon.csv").stat().st_size > 0
    assert any((root / "reports/benchmark").iterdir())
    assert (root / "reports/index.html").is_file() and any((root / "reports/charts").glob("*.svg"))

    # the headline is the one metrics file: a few numbers (and the best policies' names)
    headline = leaves(json.loads((root / "metrics/headline.json").read_text()))
    assert 15 <= len(headline) <= 26 and headline["short.tight.best_policy"].count("/") == 1
    assert list(json.loads(clone.run("dvc", "metrics", "show", "--json").stdout)[""]["data"]) == [
        "metrics/headline.json"]
    # the detail is still one command away
    detail = json.loads(clone.run("dvc", "metrics", "show", "metrics/benchmark.json", "--json").stdout)
    assert "rollouts" in detail[""]["data"]["metrics/benchmark.json"]["data"]

    header = exp_show_header(clone)
    assert len(header) <= MAX_EXP_SHOW_COLUMNS, (len(header), header)
    assert not [c for c in header if c.endswith(".py") or c.startswith("rollouts.")]
    assert set(headline) <= set(header) and "train.seq_len_long" in header and "settings.yaml" in header

    # nothing left to do: the lock file matches what is on disk
    assert "up to date" in clone.run("dvc", "status").stdout.lower()


def vega_charts_in(html: str) -> tuple[int, set[str]]:
    """(the charts DVC put in the page, one `vegaEmbed('#<id>', spec)` each (dvc_render's
    VegaRenderer), the ids of those with nothing to draw: `dvc plots diff` adds an empty spec for
    a plot one revision lacks)."""
    empty = set(re.findall(r'<div id = "([^"]+)">\s*<script type = "text/javascript">\s*var spec = \{\};', html))
    return html.count("vegaEmbed('#"), empty


def assert_drew_offline(result: dict, n_charts: int, n_images: int, skip: set[str] = frozenset()) -> None:
    assert result["remote_resources"] == [] and result["requests"] == [], result
    assert result["errors"] == [], result["errors"]
    result["charts"] = [c for c in result["charts"] if c["id"] not in skip]
    assert len(result["charts"]) == n_charts - len(skip), result["charts"]
    empty = [c for c in result["charts"] if c["kind"] not in ("svg", "canvas") or c["marks"] < 10]
    assert empty == [], empty
    assert len(result["images"]) == n_images and all(i["width"] > 0 for i in result["images"]), result["images"]


@pytest.mark.slow
def test_dvc_plots_and_the_report_draw_in_chromium_with_no_network(tiny_run, tmp_path):
    clone, _ = tiny_run
    root = clone.root
    n_gifs = len(list((root / "reports/benchmark").glob("*.gif")))
    for command, out_dir in ((["show"], "dvc_plots"), (["diff", "-o", "plots_diff"], "plots_diff")):
        clone.run("dvc", "plots", *command)
        page = root / out_dir / "index.html"
        html = page.read_text()
        assert "cdn.jsdelivr" not in html and "window.vegaEmbed" in html  # the template of .dvc/config
        n_charts, empty = vega_charts_in(html)
        assert n_charts - len(empty) >= 10  # 5 benchmark plots and the two trainers' curves
        assert_drew_offline(open_offline(page, tmp_path, ".vega-embed"), n_charts, n_gifs, skip=empty)

    report = root / "reports/index.html"
    assert "<script" not in report.read_text()  # static: inline SVG and data URIs only
    n_svgs = len(list((root / "reports/charts").glob("*.svg")))
    assert n_svgs >= 5  # horizon x2, paired gaps, both trainings
    assert_drew_offline(open_offline(report, tmp_path, ".chart > svg"), n_svgs, n_gifs)


@pytest.mark.slow
def test_reruns_are_exactly_the_stages_that_depend_on_a_change(tiny_run):
    clone, _ = tiny_run
    root = clone.root

    # retraining with the same params writes byte-identical checkpoints: the benchmark is not stale,
    # only the report, which shows the training's timings (metrics/train.json, dvclive/)
    clone.run("dvc", "repro", "--force", "--single-item", "train", timeout=600)
    assert sorted(json.loads(clone.run("dvc", "status", "--json").stdout)) == ["report"]

    # changing a train key (params.yaml) reruns train, benchmark and the report only
    out = clone.run("dvc", "exp", "run", "-S", "train.seq_len_long=12", timeout=900).stdout
    ran = {s for s in STAGES if f"Running stage '{s}'" in out}
    assert ran == {"train", "benchmark", "report"}, out

    # a setting (settings.yaml) reruns its stages through their fingerprints
    out = clone.run("dvc", "exp", "run", "-S", "settings.yaml:benchmark.tau_ctx=0.2", timeout=900).stdout
    ran = {s for s in STAGES if f"Running stage '{s}'" in out}
    assert ran == {"fingerprint", "benchmark", "report"}, out
    exps = clone.run("dvc", "exp", "show", "--csv").stdout
    assert len(next(csv.reader(io.StringIO(exps)))) <= MAX_EXP_SHOW_COLUMNS

    # editing the dynamics model's code changes the fingerprints of exactly the stages that run it
    with open(root / "pipeline/networks/dynamics.py", "a") as f:
        f.write("\n# an edit\n")
    assert sorted(json.loads(clone.run("dvc", "status", "--json").stdout)) == ["fingerprint"]
    clone.run("dvc", "repro", "fingerprint")
    assert sorted(json.loads(clone.run("dvc", "status", "--json").stdout)) == ["benchmark", "train"]
