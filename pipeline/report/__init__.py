"""Stage `report`: headline metrics, charts, reports/index.html, the offline `dvc plots` template and
docs/results.md, from a run's outputs (docs/index.md#the-report)."""
