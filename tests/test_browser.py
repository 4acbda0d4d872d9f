"""The dashboard in real Chromium (Debian's /usr/bin/chromium) against a real `qcf-studio serve`."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import xarray as xr

from tests.conftest import small_spec

CHROMIUM = "/usr/bin/chromium"
pytestmark = [pytest.mark.browser, pytest.mark.slow]

if not os.path.exists(CHROMIUM):
    if os.environ.get("QCF_STUDIO_REQUIRE_BROWSER"):
        raise RuntimeError(f"{CHROMIUM} is missing; run `bash .ci/install-chromium`")
    pytest.skip(f"{CHROMIUM} not installed (make test installs it)", allow_module_level=True)

# JS: the longest column called `name` over every Bokeh ColumnDataSource on the page.
_COLUMN_LENGTH = """(name) => {
  let n = 0;
  for (const doc of Bokeh.documents)
    for (const m of doc._all_models.values()) {
      const d = m.data;
      if (d == null || typeof d !== "object") continue;
      const col = typeof d.get === "function" ? d.get(name) : d[name];
      if (col != null && col.length !== undefined) n = Math.max(n, col.length);
    }
  return n;
}"""


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args):
    return {
        **browser_type_launch_args,
        "executable_path": CHROMIUM,
        "args": ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"],
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(small_spec(steps=4000, metrics_every=10, snapshot_every=50).to_yaml())
    port = _free_port()
    runs = tmp_path / "runs"
    exe = Path(sys.executable).parent / "qcf-studio"
    log = open(tmp_path / "serve.log", "w")
    proc = subprocess.Popen([str(exe), "serve", "--port", str(port), "--workers", "2", "--runs-dir", str(runs),
                             "--spec", str(spec)], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + 90
    while True:
        try:
            urllib.request.urlopen(url, timeout=5)
            break
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError((tmp_path / "serve.log").read_text()) from None
            time.sleep(0.5)
    yield url, runs
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


def _status(page) -> str:
    # Panel panes render into shadow roots; Playwright's CSS locators pierce them.
    return " ".join(page.locator(".run-status p, .run-status pre").all_inner_texts())


def _wait_status(page, text: str, timeout: float) -> None:
    deadline = time.time() + timeout
    while text not in _status(page):
        assert time.time() < deadline, f"status never showed {text!r}: {_status(page)!r}"
        time.sleep(0.3)


def _tab(page, title: str) -> None:
    page.locator(".bk-tab", has_text=title).first.click()


def test_start_streams_live_plots_to_two_sessions_and_stop_saves_the_run(server, page):
    url, runs = server
    page.goto(url)
    page.get_by_role("button", name="Start").wait_for(timeout=60_000)
    assert "kind: proxy1d" in page.locator("textarea").input_value()  # the spec ...
    page.get_by_text("SAGIPS 1D demo").wait_for()  # ... and its summary
    page.get_by_role("button", name="Start").click()

    page.wait_for_function(f"() => ({_COLUMN_LENGTH})('loss_g') >= 2", timeout=90_000)
    first = page.evaluate(_COLUMN_LENGTH, "loss_g")
    assert "running" in _status(page)
    page.wait_for_function(f"() => ({_COLUMN_LENGTH})('loss_g') > {first}", timeout=60_000)
    assert page.evaluate(_COLUMN_LENGTH, "deviation") > 0  # parameter traces (deviation from truth)
    # QCF bands (patches, column `y`) are empty until the first snapshot arrives from a worker
    page.wait_for_function(f"() => ({_COLUMN_LENGTH})('y') > 0", timeout=60_000)
    assert "running" in _status(page)  # all of this arrived while training ran
    assert "step" in _status(page) and "left" in _status(page)

    # A second browser session on the same server joins the run in progress and can stop it.
    other = page.context.browser.new_page()
    other.goto(url)
    other.get_by_role("button", name="Stop").wait_for(timeout=60_000)
    _wait_status(other, "running", timeout=30)
    other.wait_for_function(f"() => ({_COLUMN_LENGTH})('loss_g') >= 2", timeout=60_000)
    other.get_by_role("button", name="Stop").click()
    _wait_status(page, "stop", timeout=15)  # "stopping"/"stopped": the click got through while both cores train
    _wait_status(page, "Saved", timeout=60)
    assert "stopped" in _status(page)
    _wait_status(other, "Saved", timeout=15)
    other.close()
    saved = list(runs.glob("*.nc"))
    assert len(saved) == 1
    with xr.open_dataset(saved[0], engine="h5netcdf") as ds:
        assert ds.attrs["status"] == "stopped"
        assert ds.sizes["step"] >= 2


def test_bad_spec_shows_a_red_message_and_starts_nothing(server, page):
    url, runs = server
    page.goto(url)
    page.get_by_role("button", name="Start").wait_for(timeout=60_000)
    _tab(page, "YAML")
    editor = page.locator("textarea")
    editor.fill(editor.input_value().replace("events: 5000", "events: -5"))
    message = page.locator(".spec-error div")
    message.first.wait_for(state="visible", timeout=10_000)
    assert "problem.events" in " ".join(message.all_inner_texts())
    page.get_by_role("button", name="Start").click()
    time.sleep(2)
    assert "Ready" in _status(page)
    assert not list(runs.glob("*.nc"))


def test_a_bad_form_field_shows_its_message_beside_it(server, page):
    url, runs = server
    page.goto(url)
    page.get_by_role("button", name="Start").wait_for(timeout=60_000)
    events = page.locator(".field-problem-events input")
    events.fill("-5")
    events.press("Enter")
    message = page.locator(".field-error p")
    message.first.wait_for(state="visible", timeout=10_000)
    assert "problem.events" in message.first.inner_text() and "at least 100" in message.first.inner_text()
    events.fill("3000")
    events.press("Enter")
    message.first.wait_for(state="hidden", timeout=10_000)
    _tab(page, "YAML")
    assert "events: 3000" in page.locator("textarea").input_value()  # the form wrote the spec
