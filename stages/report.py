"""Stage `report`: metrics/headline.json (the DVC metrics), reports/index.html with its charts
(reports/charts/*.svg) and reports/plots_template.html (what `dvc plots` pages load, offline)."""

from __future__ import annotations

import time

from pipeline import paths
from pipeline.report.build import Inputs, Outputs, build_report
from pipeline.report.headline import leaves

INPUTS = Inputs(benchmark=paths.BENCHMARK_METRICS, horizon_csv=paths.BENCHMARK_HORIZON, revisit_csv=paths.BENCHMARK_REVISIT,
                tokenizer=paths.TOKENIZER_METRICS, train=paths.TRAIN_METRICS, live=paths.TOKENIZER_LIVE.parent,
                media=paths.BENCHMARK_REPORTS, frames_report=paths.FRAMES_REPORT, latents_report=paths.LATENTS_REPORT)
OUTPUTS = Outputs(headline=paths.HEADLINE_METRICS, page=paths.REPORT_HTML, charts=paths.REPORT_CHARTS,
                  plots_template=paths.PLOTS_TEMPLATE, docs_page=paths.DOCS_RESULTS, docs_charts=paths.DOCS_CHARTS)


def main() -> None:
    start = time.perf_counter()
    top = build_report(INPUTS, OUTPUTS)
    width = max(map(len, leaves(top)), default=0)
    for key, value in leaves(top).items():
        print(f"  {key:<{width}}  {value:.4g}" if isinstance(value, float) else f"  {key:<{width}}  {value}")
    print(f"report: {len(leaves(top))} headline metrics -> {OUTPUTS.headline}, page -> {OUTPUTS.page} "
          f"({time.perf_counter() - start:.1f} s)")


if __name__ == "__main__":
    main()
