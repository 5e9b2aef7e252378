"""Open a local HTML page in headless Chromium with the network unreachable; report what drew
and every request that tried to leave the machine.

How the network is kept out, and how a request is still seen:
- blocked: ``--host-resolver-rules=MAP * ~NOTFOUND`` fails every DNS lookup, and every http(s)
  or ws(s) request goes to a proxy at 127.0.0.1:9 (discard; nothing listens), so even a URL with
  an IP address cannot leave; Chromium's own background traffic (updates, safe browsing, sync)
  is switched off by flags;
- detected: Chromium writes its NetLog (``--log-net-log``): every URL request it starts is there,
  blocked or not, so a page that asks for anything remote fails the test even though the request
  could not have succeeded here;
- drawn: a copy of the page gets a probe script that, after load, counts the marks of every chart
  (SVG elements, or the non-white pixels of a canvas), checks every image decoded, and collects
  script errors. A chart library fetched from a CDN cannot load here, so a chart that drew proves
  its library is in the page.

Unlike a network namespace (``unshare -n``), this needs no privileges, and it records the attempt
rather than only making it fail.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

SETUP_HINT = ("Chromium is not installed (neither `chromium` nor `chromium-browser` is on PATH): run the test "
              "setup, `.ci/run` (it installs it with `apt-get install -y chromium`), or install Chromium yourself")

FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run", "--no-default-browser-check",
    "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-default-apps",
    "--disable-domain-reliability", "--disable-client-side-phishing-detection", "--disable-breakpad",
    "--metrics-recording-only", "--allow-file-access-from-files", "--mute-audio",
    "--disable-features=OptimizationHints,MediaRouter,Translate,AutofillServerCommunication,CertificateTransparencyComponentUpdater",
    "--host-resolver-rules=MAP * ~NOTFOUND", "--proxy-server=http://127.0.0.1:9", "--proxy-bypass-list=<-loopback>",
)

PROBE = """
<script>
(function () {
  var errors = [];
  window.addEventListener('error', function (e) {
    var where = e.filename || (e.target && (e.target.src || e.target.href)) || '';
    errors.push(String(e.message || e.type) + ' @ ' + where);
  }, true);
  window.addEventListener('unhandledrejection', function (e) { errors.push('unhandled rejection: ' + String(e.reason)); });
  function ink(el) {
    var canvas = el.tagName === 'CANVAS' ? el : null, svg = el.tagName.toLowerCase() === 'svg' ? el : null;
    if (canvas) {
      if (!canvas.width || !canvas.height) return 0;
      var d = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data, n = 0;
      for (var i = 0; i < d.length; i += 4) if (d[i + 3] > 0 && (d[i] < 250 || d[i + 1] < 250 || d[i + 2] < 250)) n++;
      return n;
    }
    var box = svg.getBoundingClientRect();
    if (!box.width || !box.height) return 0;
    return svg.querySelectorAll('path, line, rect, circle, text, polyline, polygon').length;
  }
  function probe() {
    var charts = [];
    document.querySelectorAll(PROBE_CHARTS).forEach(function (el, i) {
      // a chart's own canvas or SVG: Vega's has class "marks" (Vega-Embed's menu icon is an SVG too)
      var drawn = el.tagName === 'CANVAS' || el.tagName.toLowerCase() === 'svg' ? el :
                  (el.querySelector('canvas.marks, svg.marks') || el.querySelector('canvas, svg'));
      charts.push({id: el.id || (el.className && String(el.className)) || ('chart ' + i),
                   kind: drawn ? drawn.tagName.toLowerCase() : 'none', marks: drawn ? ink(drawn) : 0});
    });
    var images = [];
    document.querySelectorAll('img').forEach(function (img) {
      images.push({src: img.src.slice(0, 80), width: img.naturalWidth, complete: img.complete});
    });
    var out = document.createElement('pre');
    out.id = 'probe-result';
    out.textContent = 'PROBE' + JSON.stringify({charts: charts, images: images, errors: errors}) + 'PROBE';
    document.body.appendChild(out);
  }
  window.addEventListener('load', function () { setTimeout(probe, PROBE_DELAY_MS); });
})();
</script>
"""


def chromium() -> str:
    """The Chromium binary on PATH; fails (never skips: the suite allows no skip) with what to do."""
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    pytest.fail(SETUP_HINT, pytrace=False)


class _Resources(HTMLParser):
    """Every URL an HTML document loads by itself: src/href of scripts, styles, images, frames, media."""

    LOADING = {"script": "src", "img": "src", "iframe": "src", "frame": "src", "embed": "src", "source": "src",
               "audio": "src", "video": "src", "track": "src", "input": "src", "object": "data", "link": "href"}

    def __init__(self):
        super().__init__()
        self.urls: list[tuple[str, str]] = []
        self.css: list[str] = []
        self._in_style = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag in self.LOADING and attrs.get(self.LOADING[tag]):
            self.urls.append((tag, attrs[self.LOADING[tag]]))
        if tag in ("img", "source") and attrs.get("srcset"):
            self.urls.append((tag, attrs["srcset"]))
        if attrs.get("style"):
            self.css.append(attrs["style"])
        self._in_style = tag == "style"

    def handle_endtag(self, tag):
        self._in_style = False

    def handle_data(self, data):
        if self._in_style:
            self.css.append(data)


REMOTE = re.compile(r"^\s*(https?:|wss?:|ftp:|//)", re.IGNORECASE)


def remote_resources(html: str) -> list[str]:
    """The remote URLs (http(s), ws(s), ftp, protocol-relative) that the document's own tags and
    style sheets load: scripts, style sheets, images, frames, media, CSS url() and @import."""
    parser = _Resources()
    parser.feed(html)
    found = [f"<{tag}> {url}" for tag, url in parser.urls if REMOTE.match(url)]
    for css in parser.css:
        for url in re.findall(r"url\(\s*['\"]?([^'\")]+)|@import\s+['\"]([^'\"]+)", css):
            url = next(u for u in url if u)
            if REMOTE.match(url):
                found.append(f"css {url}")
    return found


LOCAL = re.compile(r"^\w+://(localhost|127\.0\.0\.1|\[::1\])(:\d+)?(/|$)")


def network_requests(netlog: Path) -> tuple[list[str], list[str]]:
    """The remote URLs of the requests in a Chromium NetLog (whatever became of them): (the page's,
    Chromium's own). A request is the page's when its network isolation key is the page's origin
    (file://); Chromium's own background requests (update checks, account lookups) have none or
    another; the flags keep most of them from starting and the proxy and resolver rules stop the rest."""
    log = json.loads(netlog.read_text(errors="replace"))
    start = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    page, browser = set(), set()
    for event in log["events"]:
        params = event.get("params") or {}
        url = params.get("url", "")
        if event["type"] != start or not re.match(r"^(https?|wss?|ftp):", url) or LOCAL.match(url):
            continue
        (page if "file://" in str(params.get("network_isolation_key", "")) else browser).add(url)
    return sorted(page), sorted(browser)


def open_offline(page: Path, work: Path, charts_selector: str, delay_ms: int = 4000, timeout: float = 120) -> dict:
    """Load a copy of `page` (next to it, so that relative paths resolve) with the probe, offline;
    returns {"charts": [{id, kind, marks}], "images": [{src, width, complete}], "errors": [...],
    "requests": [remote URLs the page asked for], "browser_requests": [Chromium's own],
    "remote_resources": [remote URLs in the HTML's tags and styles]}."""
    html = page.read_text(encoding="utf-8")
    probe = PROBE.replace("PROBE_CHARTS", json.dumps(charts_selector)).replace("PROBE_DELAY_MS", str(delay_ms))
    probed = page.with_name(f".probe-{page.name}")
    at = html.rfind("</body>")  # the last one: an inlined script may hold the string "</body>"
    probed.write_text(html[:at] + probe + html[at:] if at >= 0 else html + probe, encoding="utf-8")
    netlog = work / f"netlog-{page.stem}.json"
    profile = work / f"profile-{page.stem}"
    try:
        proc = subprocess.run(
            [chromium(), *FLAGS, f"--user-data-dir={profile}", f"--log-net-log={netlog}", "--net-log-capture-mode=Default",
             f"--virtual-time-budget={delay_ms + 20000}", "--dump-dom", probed.resolve().as_uri()],
            capture_output=True, text=True, timeout=timeout)
    finally:
        probed.unlink(missing_ok=True)
    m = re.search(r"PROBE(\{.*?\})PROBE", proc.stdout, re.DOTALL)
    if m is None:
        raise AssertionError(f"the page did not report (chromium exited {proc.returncode})\n{proc.stderr[-3000:]}")
    result = json.loads(m.group(1))
    if not netlog.is_file():
        raise AssertionError(f"chromium wrote no NetLog (exited {proc.returncode})\n{proc.stderr[-3000:]}")
    result["requests"], result["browser_requests"] = network_requests(netlog)
    result["remote_resources"] = remote_resources(html)
    return result
