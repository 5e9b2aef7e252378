"""The offline browser check itself (tests/browser.py): it must see a remote load when there is
one, or its passing on the real pages would mean nothing."""

from tests.browser import open_offline, remote_resources

PAGE = """<!DOCTYPE html><html><head><meta charset="utf-8">
<script src="https://cdn.jsdelivr.net/npm/vega@5.20.2"></script>
<style>@import url("https://example.org/style.css");</style>
</head><body>
<div class="chart"><svg width="40" height="20"><rect width="10" height="10"/><line x1="0" y1="0" x2="9" y2="9" stroke="red"/>
</svg></div>
<div class="chart"><svg width="40" height="20"></svg></div>
<img src="http://192.0.2.1/pixel.png">
</body></html>"""


def test_the_harness_sees_every_remote_load_and_every_empty_chart(tmp_path):
    page = tmp_path / "page.html"
    page.write_text(PAGE)
    result = open_offline(page, tmp_path, ".chart", delay_ms=500)
    # in the markup, and attempted by the browser (blocked here, but recorded)
    assert remote_resources(PAGE) == ["<script> https://cdn.jsdelivr.net/npm/vega@5.20.2", "<img> http://192.0.2.1/pixel.png",
                                      "css https://example.org/style.css"]
    assert "https://cdn.jsdelivr.net/npm/vega@5.20.2" in result["requests"]
    assert "http://192.0.2.1/pixel.png" in result["requests"]
    # a drawn chart has marks, an empty one has none; a remote image does not decode
    assert [(c["kind"], c["marks"] > 0) for c in result["charts"]] == [("svg", True), ("svg", False)]
    assert result["images"][0]["width"] == 0
