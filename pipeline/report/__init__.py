"""Stage `report`: what a person looks at after a run.

- :mod:`headline`: metrics/headline.json, the ~25 numbers `dvc exp show` and `dvc metrics diff`
  compare across experiments;
- :mod:`charts`: Vega-Lite specs of the key charts, rendered offline to SVG by vl-convert;
- :mod:`page`: reports/index.html, one self-contained page (inline SVG, GIFs as data URIs, no
  script, no remote resource);
- :mod:`template`: the HTML template `dvc plots show` / `dvc plots diff` fill, with Vega,
  Vega-Lite and Vega-Embed inlined (from vl-convert) so that their pages render offline;
- :mod:`build`: reads the run's outputs and writes all of the above atomically.
"""
