"""The HTML template of `dvc plots show` and `dvc plots diff`, for pages that render offline.

DVC's default page loads Vega, Vega-Lite and Vega-Embed from a CDN (its renderers put their
``<script src="https://cdn...">`` tags where a template says ``{scripts}``), so offline nothing
draws. This template inlines the three libraries instead, from the bundle vl-convert ships
(``vl_convert.javascript_bundle``), and has no ``{scripts}`` placeholder, so the CDN tags go
nowhere. DVC puts its charts where it says ``{plot_divs}``; each chart's inline script calls
``vegaEmbed``, which the bundle defines (as ``window.vegaEmbed``) before them.

.dvc/config points `dvc plots` at it (``plots.html_template``, relative to .dvc/). The report
stage writes it (reports/plots_template.html, ~0.9 MB): it is generated from the installed
vl-convert rather than committed, so the repository stays small and the template never lags
the library.
"""

from __future__ import annotations

from pipeline.report.charts import VL_VERSION

PLACEHOLDER = "{plot_divs}"
DVC_PLACEHOLDERS = ("{plot_divs}", "{scripts}", "{refresh_tag}")  # dvc_render.html.HTML replaces these

HEAD = """<!DOCTYPE html>
<html>
<head>
<meta charset="utf-8">
<title>DVC plots</title>
<!-- Vega {vega}, Vega-Lite {vega_lite}, Vega-Embed {vega_embed}: inlined from vl-convert-python {vl_convert}
     (pipeline/report/template.py), so that this page draws with no network. -->
<script>
"""
STYLE = """</script>
<style>
  body { font-family: sans-serif; margin: 16px; }
  body > div { margin-bottom: 24px; }
  table { border-spacing: 15px; }
</style>
</head>
<body>
"""
TAIL = """
</body>
</html>
"""


def plots_template() -> str:
    """The template's text: the bundle inlined, ``{plot_divs}`` where DVC puts the charts."""
    import vl_convert

    bundle = vl_convert.javascript_bundle(vl_version=VL_VERSION)
    for token in (*DVC_PLACEHOLDERS, "</script"):
        if token in bundle:  # DVC would substitute into the script, or the browser end it early
            raise ValueError(f"the vl-convert bundle contains {token!r}: it cannot be inlined as is")
    head = HEAD.format(vega=vl_convert.get_vega_version(), vega_lite=VL_VERSION,
                       vega_embed=vl_convert.get_vega_embed_version(), vl_convert=getattr(vl_convert, "__version__", "?"))
    # In a function, so that none of the bundle's top-level names clashes with the globals of DVC's
    # chart scripts (`var spec = ...`); the bundle sets window.vegaEmbed, window.vega, window.vegaLite.
    return head + "(function () {\n" + bundle + "\n})();\n" + STYLE + PLACEHOLDER + TAIL
