"""Where each stage reads and writes, relative to the project root: the one list of stage paths
(dvc.yaml names the same paths; a test keeps them in step)."""

from pathlib import Path

RAW = Path("data/raw")  # downloaded or recorded videos + manifest.json
FRAMES = Path("data/frames.zarr")
FRAMES_REPORT = Path("data/frames_report.json")
LATENTS = Path("data/latents.zarr")
LATENTS_REPORT = Path("data/latents_report.json")

TOKENIZER = Path("models/tokenizer")
DYNAMICS = Path("models/dynamics")

FINGERPRINTS = Path("fingerprints")  # <stage>.txt: the code each stage runs and its settings, hashed

TOKENIZER_METRICS = Path("metrics/tokenizer.json")
TRAIN_METRICS = Path("metrics/train.json")
BENCHMARK_METRICS = Path("metrics/benchmark.json")
BENCHMARK_HORIZON = Path("metrics/benchmark_horizon.csv")
BENCHMARK_BUDGET = Path("metrics/benchmark_budget.csv")
BENCHMARK_REVISIT = Path("metrics/benchmark_revisit.csv")

TOKENIZER_LIVE = Path("dvclive/tokenizer")
TRAIN_LIVE = Path("dvclive/train")

BENCHMARK_REPORTS = Path("reports/benchmark")

HEADLINE_METRICS = Path("metrics/headline.json")  # the one DVC metrics file: `dvc exp show`, `dvc metrics diff`
REPORT_HTML = Path("reports/index.html")
REPORT_CHARTS = Path("reports/charts")
PLOTS_TEMPLATE = Path("reports/plots_template.html")  # .dvc/config plots.html_template: `dvc plots` offline
DOCS_RESULTS = Path("docs/results.md")  # the docs' results page, generated from the run's metrics
DOCS_CHARTS = Path("docs/charts")  # its charts (SVG)
