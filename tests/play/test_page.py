"""`python -m pipeline.play` on the tiny run's outputs, driven with real key presses in headless
Chromium (Playwright over the system browser): both panes change, the retained strip holds at most
the budget, a recording replays bit-exactly, errors reach the page, and Ctrl-C stops the server."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from tests.browser import chromium

STARTUP_S = 90  # the bar: the page is served within 90 s


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tiny_run):
    clone, _ = tiny_run
    port = free_port()
    t0 = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.play", "--port", str(port), "--no-browser", "--budget", "2",
                             "--policy", "recent_window"],
                            cwd=clone.root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    line = ""
    while "serving" not in line:
        line = proc.stdout.readline()
        if not line and proc.poll() is not None:
            pytest.fail(f"play exited {proc.returncode}: {proc.stderr.read()[-3000:]}")
        assert time.monotonic() - t0 < STARTUP_S, "the page was not served within 90 s"
    yield {"proc": proc, "url": f"http://127.0.0.1:{port}/", "root": clone.root, "startup_s": time.monotonic() - t0}
    if proc.poll() is None:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def page(server):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium(), args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page()
        page.goto(server["url"])
        page.wait_for_function("document.body.dataset.step !== undefined")
        yield page
        browser.close()


def step(page) -> int:
    return int(page.evaluate("document.body.dataset.step"))


def press(page, key: str) -> None:
    before = step(page)
    page.keyboard.press(key)
    page.wait_for_function(f"Number(document.body.dataset.step) === {before + 1}", timeout=30_000)


def shown(page) -> dict:
    return page.evaluate("""() => ({game: document.getElementById('game').src, model: document.getElementById('model').src,
                                    retained: document.querySelectorAll('#retained img').length,
                                    dropped: document.querySelectorAll('#dropped img').length,
                                    error: document.getElementById('error').textContent})""")


def test_keys_step_both_panes_and_the_strip_never_exceeds_the_budget(page):
    first = shown(page)
    seen = []
    for key in ("ArrowUp", "ArrowUp", "w", "ArrowLeft", "d", "ArrowUp"):
        press(page, key)
        now = shown(page)
        assert now["retained"] <= 2, now["retained"]
        seen.append(now)
    assert seen[-1]["game"] != first["game"] and seen[-1]["model"] != first["model"]
    assert len({s["model"] for s in seen}) > 1 and seen[-1]["dropped"] > 0
    assert step(page) == 6 and shown(page)["error"] == ""


def test_the_budget_and_policy_switch_live(page):
    page.select_option("#policy", label="full_history")  # recent_window keeps 2 frames whatever the budget
    page.wait_for_function("document.getElementById('policy').value === '\"full_history\"'")
    page.select_option("#budget", label="full (all)")
    page.wait_for_function("document.getElementById('budget').selectedOptions[0].textContent === 'full (all)'")
    press(page, "ArrowUp")
    press(page, "ArrowUp")
    assert shown(page)["retained"] > 2  # nothing is dropped any more: the history grows
    page.select_option("#budget", label="tight (2)")
    page.wait_for_function("document.getElementById('budget').selectedOptions[0].textContent === 'tight (2)'")
    press(page, "ArrowLeft")
    assert shown(page)["retained"] <= 2


def test_an_unknown_policy_is_one_named_line_on_the_page_and_the_terminal(page, server):
    answer = page.evaluate("""() => fetch('/configure', {method: 'POST', body: JSON.stringify({policy: 'no_such_policy'})})
                                    .then(r => r.json())""")
    assert answer["error"].startswith("PolicyLoadError: policy 'no_such_policy'")
    page.evaluate("""() => fetch('/configure', {method: 'POST', body: JSON.stringify({policy: 'no_such_policy'})})
                          .then(r => r.json()).then(s => { document.getElementById('error').textContent = s.error; })""")
    assert "no_such_policy" in shown(page)["error"]
    press(page, "ArrowUp")  # the session goes on as it was
    assert shown(page)["error"] == ""


def test_a_recording_replays_to_the_same_frames_bit_exactly(page, server, tmp_path):
    page.click("#record")
    page.wait_for_function("document.getElementById('record').textContent === 'stop recording'")
    for key in ("ArrowUp", "ArrowRight", "ArrowUp", "ArrowUp"):
        press(page, key)
    page.select_option("#budget", label="full (all)")  # a change mid-recording is recorded too
    press(page, "ArrowLeft")
    page.click("#record")
    page.wait_for_function("document.getElementById('record').textContent === 'record'")
    status = page.text_content("#status")
    written = status.split("wrote ", 1)[1].split(", ")
    video = server["root"] / written[0]
    assert video.suffix == ".mp4" and video.stat().st_size > 0
    meta = json.loads(video.with_suffix(".json").read_text())
    assert [s["action"] for s in meta["steps"]] == [1, 3, 1, 1, 2] and meta["steps"][-1]["budget"] is None

    replay = subprocess.run([sys.executable, "-m", "pipeline.play", "--replay", str(video)], cwd=server["root"],
                            capture_output=True, text=True, timeout=300)
    assert replay.returncode == 0, replay.stderr
    assert "replayed 5 frames" in replay.stdout and "identical" in replay.stdout

    import numpy as np

    with np.load(video.with_suffix(".npz")) as npz:
        tampered = {"game": npz["game"], "model": npz["model"].copy()}
    tampered["model"][3, 0, 0] ^= 1
    np.savez_compressed(video.with_suffix(".npz"), **tampered)
    again = subprocess.run([sys.executable, "-m", "pipeline.play", "--replay", str(video)], cwd=server["root"],
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 1 and "frame 3 differs" in again.stderr


def test_ctrl_c_stops_the_server_cleanly(page, server):
    proc = server["proc"]
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "play: stopped" in out and "Traceback" not in err
