"""The dashboard in real Chromium (Debian's /usr/bin/chromium) against a real `qcf-studio serve`."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tarfile
import time
import urllib.request
from pathlib import Path

import numpy as np
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

# JS: the largest finite value in any column called `name` (0 when there is none).
_COLUMN_MAX = """(name) => {
  let top = 0;
  for (const doc of Bokeh.documents)
    for (const m of doc._all_models.values()) {
      const d = m.data;
      if (d == null || typeof d !== "object") continue;
      const col = typeof d.get === "function" ? d.get(name) : d[name];
      if (col == null || col.length === undefined) continue;
      for (const v of col) if (Number.isFinite(v) && v > top) top = v;
    }
  return top;
}"""


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args):
    return {
        **browser_type_launch_args,
        "executable_path": CHROMIUM,
        "args": [
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
        ],
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def served(tmp_path: Path, spec: Path, env: dict[str, str] | None = None):
    """``qcf-studio serve`` of ``spec`` (``env`` added to the environment) on a free port with 2 workers: yields
    (url, runs directory); SIGINT after."""
    port, runs, log = _free_port(), tmp_path / "runs", open(tmp_path / "serve.log", "w")
    args = ["serve", "--port", str(port), "--workers", "2", "--runs-dir", str(runs), "--spec", str(spec)]
    exe = Path(sys.executable).parent / "qcf-studio"
    proc = subprocess.Popen([str(exe), *args], stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + 90
    try:
        while True:
            try:
                urllib.request.urlopen(url, timeout=5)
                break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError((tmp_path / "serve.log").read_text()) from None
                time.sleep(0.5)
        try:
            yield url, runs
        except BaseException:  # the server's side of a failure, shown in pytest's report
            log.flush()
            print("--- serve.log (last 6000 characters) ---\n" + (tmp_path / "serve.log").read_text()[-6000:])
            raise
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture
def server(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(small_spec(steps=4000, metrics_every=10, snapshot_every=50).to_yaml())
    with served(tmp_path, spec) as (url, runs):
        yield url, runs


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
    assert page.evaluate(_COLUMN_LENGTH, "dev_Nu") > 0  # parameter traces (deviation from truth)
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
    # "stopping"/"stopped": the click got through while both cores train (on a 2-core machine that also runs
    # another test, Chromium, drawing both pages' plot updates, may take tens of seconds to send it)
    _wait_status(other, "stop", timeout=60)
    page.bring_to_front()  # the first session's page went to the background, where Chromium may defer rendering
    _wait_status(page, "stop", timeout=60)
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


def test_a_bad_form_field_shows_its_message_beside_it_and_uploads_are_checked(server, page, tmp_path):
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

    # Measured data uploaded as CSV: a malformed file is refused with its name and line, a good one is used.
    from qcf_studio.engine.data.pseudodata import make_pseudo_data
    from qcf_studio.engine.problems import get_problem

    p = get_problem("proxy1d")
    data = make_pseudo_data(p, np.asarray(p.truth), 200, seed=2)
    header = "# xsec: " + ", ".join(f"{n}={v}±{e}" for n, v, e in zip(p.observable_names, data.xsec, data.xsec_err))
    lines = [header, "observable,x,weight"] + [
        f"{n},{x},{1 + i % 2}" for o, n in enumerate(p.observable_names) for i, x in enumerate(data.events[o, :, 0])
    ]
    good, bad = tmp_path / "events.csv", tmp_path / "broken.csv"
    good.write_text("\n".join(lines) + "\n")
    bad.write_text("\n".join(lines[:5] + ["sigma1,not-a-number,1.0"] + lines[5:]) + "\n")
    _tab(page, "Data")
    upload = page.locator("input[type=file][accept='.nc,.csv,.parquet,.root']")
    upload.set_input_files(str(bad))
    refused = page.locator(".spec-error div")
    refused.first.wait_for(state="visible", timeout=20_000)
    assert "broken.csv" in " ".join(refused.all_inner_texts()) and "line 6" in " ".join(refused.all_inner_texts())
    upload.set_input_files(str(good))
    page.locator(".upload-note").get_by_text("200 weighted events per observable").wait_for(timeout=20_000)
    _tab(page, "YAML")
    assert "uploads/events.nc" in page.locator("textarea").input_value()
    assert (runs / "uploads" / "events.nc").is_file()


def _field(page, path: str):
    return page.locator(f".field-{path.replace('.', '-')} input")


def _set_field(page, path: str, value: str, summary: str | None = None) -> None:
    """Type ``value`` into a form field; with ``summary``, wait until the spec summary shows the edit."""
    box = _field(page, path)
    box.fill(value)
    box.press("Enter")
    if summary is not None:
        page.locator(".spec-summary").get_by_text(summary).wait_for(timeout=20_000)


def test_configure_and_start_a_proxy2d_run_in_the_form_and_watch_the_cluster(server, page):
    url, runs = server
    page.goto(url)
    page.get_by_role("button", name="Start").wait_for(timeout=60_000)
    page.locator(".field-problem-kind select").select_option("proxy2d")  # loads proxy2d's standard spec
    deadline = time.time() + 20
    while _field(page, "problem.truth").count() != 5:  # the form is rebuilt for p0..p4 (proxy1d has 6)
        assert time.time() < deadline
        time.sleep(0.2)
    _set_field(page, "problem.events", "3000", summary="3,000 per observable")
    page.locator(".form-training .card-header").first.click()  # the training section starts collapsed
    _set_field(page, "training.steps", "300", summary="gan, 300 steps")
    _set_field(page, "training.snapshot_every", "20")
    # a true/false/null field shows its null as a choice ("problem's default"), not as a blank select
    per_obs = page.locator(".field-training-disc_per_observable select")
    assert (
        per_obs.evaluate("e => e.options[e.selectedIndex] ? e.options[e.selectedIndex].text : null")
        == "problem's default"
    )
    per_obs.select_option(label="off")
    _tab(page, "YAML")
    deadline = time.time() + 10
    while "disc_per_observable: false" not in page.locator("textarea").input_value():
        assert time.time() < deadline, page.locator("textarea").input_value()
        time.sleep(0.2)
    text = page.locator("textarea").input_value()
    assert "kind: proxy2d" in text and "events: 3000" in text and "steps: 300" in text, text
    page.get_by_role("button", name="Start").click()
    _wait_status(page, "running", timeout=60)
    # live heat maps: the predicted density rho(x, y) arrives with the first snapshot (zeros before)
    page.wait_for_function(f"() => ({_COLUMN_MAX})('rho') > 0", timeout=90_000)
    _tab(page, "Cluster")  # both workers hold a member of this run
    cells = page.locator(".workers-table .tabulator").first
    deadline = time.time() + 20
    while "member 1" not in cells.inner_text() or "member 0" not in cells.inner_text():
        assert time.time() < deadline, cells.inner_text()
        time.sleep(0.5)
    assert "closure-2d · member 0" in cells.inner_text()  # the spec name of proxy2d's standard spec
    _wait_status(page, "Saved", timeout=240)
    (saved,) = runs.glob("*.nc")
    with xr.open_dataset(saved, engine="h5netcdf") as ds:
        assert ds.attrs["problem"] == "proxy2d" and ds.attrs["status"] == "completed"
        assert ds["qcf_pred"].dims == ("member", "qcf", "x", "y")


def _finished_run(runs: Path, seed: int) -> Path:
    from qcf_studio.engine.results import build_results
    from qcf_studio.engine.results.files import write_netcdf_atomic
    from qcf_studio.engine.run.runner import measured_data, train_member
    from qcf_studio.engine.run.sinks import HistorySink
    from qcf_studio.engine.spec import parse_spec

    spec = parse_spec(
        {
            "name": f"seed{seed}",
            "problem": {"kind": "proxy1d", "events": 3000, "seed": seed},
            "training": {"steps": 40, "metrics_every": 10, "snapshot_every": 20},
            "ensemble": {"members": 2},
        }
    )
    data = measured_data(spec)
    members = [train_member(spec, m, data, HistorySink()) for m in range(2)]
    return write_netcdf_atomic(build_results(spec, data, members, 1.0), runs / f"seed{seed}.nc")


def test_compare_two_finished_runs_and_export_png_and_pdf(server, page, tmp_path):
    import zipfile

    url, runs = server
    first, second = _finished_run(runs, 3), _finished_run(runs, 4)  # written as the CLI would, server running
    page.goto(url)
    page.get_by_role("button", name="Start").wait_for(timeout=60_000)
    _tab(page, "Compare")
    picker = page.locator(".compare-picker input").first
    for name in ("seed3", "seed4"):
        deadline = time.time() + 20  # the views look for new runs every 5 s
        while True:
            picker.click()
            picker.fill(name)
            option = page.locator(".choices__list--dropdown .choices__item--choice", has_text=name)
            if option.count():
                option.first.click()
                break
            assert time.time() < deadline, f"{name} never offered"
            time.sleep(1)
    table = page.locator(".compare-table .tabulator")
    table.wait_for(timeout=30_000)
    text = table.inner_text()
    assert "seed3" in text and "seed4" in text and "Nu" in text
    page.wait_for_function(f"() => ({_COLUMN_LENGTH})('ratio') > 0", timeout=30_000)  # ratio panels drawn

    _tab(page, "Runs")
    row = page.locator(".runs-table .tabulator-row", has_text="seed3")
    row.wait_for(timeout=20_000)
    row.locator("input[type=checkbox]").click()
    # the report in words: the pulls criterion's own item (the verdict line may name it too)
    page.locator(".closure-report li", has_text="Parameter pulls:").wait_for(timeout=30_000)
    for label, check in (("PNG figures (zip)", "png"), ("PDF report", "pdf"), ("HEPData (tar.gz)", "hepdata")):
        with page.expect_download(timeout=60_000) as info:
            page.locator(".run-downloads").get_by_text(label).click()
        target = tmp_path / info.value.suggested_filename
        info.value.save_as(target)
        data = target.read_bytes()
        if check == "png":
            with zipfile.ZipFile(target) as z:
                assert z.namelist() and all(z.read(n).startswith(b"\x89PNG\r\n\x1a\n") for n in z.namelist())
        elif check == "hepdata":
            with tarfile.open(target) as tar:
                assert "submission.yaml" in tar.getnames()
        else:
            assert data.startswith(b"%PDF-") and data.rstrip().endswith(b"%%EOF")
    assert first.exists() and second.exists()


# JS: elements anywhere on the page (shadow roots included) matching a CSS selector.
_FIND = """(selector) => {
  const found = [];
  const walk = (root) => {
    for (const el of root.querySelectorAll("*")) {
      if (el.matches(selector)) found.push(el.outerHTML);
      if (el.shadowRoot) walk(el.shadowRoot);
    }
  };
  walk(document);
  return found;
}"""


def test_markup_in_results_files_and_their_names_shows_as_text_and_runs_no_script(server, page):
    url, runs = server
    # Panel's Markdown drops <img onerror> but renders <b>: both must come out as text
    evil = '<b class="qcf-injected">x</b><img src=x onerror=window.__xss=1>'
    path = _finished_run(runs, 5)
    with xr.open_dataset(path, engine="h5netcdf") as ds:
        hostile = ds.load().assign_attrs(method=evil, name=evil, errors=f"```\n{evil}\n```")
    path.unlink()
    from qcf_studio.engine.results.files import write_netcdf_atomic

    write_netcdf_atomic(hostile, runs / "<b class=qcf-injected>seed5.nc")  # a file name with markup, too
    page.goto(url)
    page.get_by_role("button", name="Start").wait_for(timeout=60_000)
    _tab(page, "Runs")
    row = page.locator(".runs-table .tabulator-row", has_text="seed5")
    row.wait_for(timeout=20_000)
    assert "qcf-injected" in row.inner_text()  # the table shows the text
    row.locator("input[type=checkbox]").click()
    page.locator(".closure-report li").first.wait_for(timeout=30_000)
    page.locator(".run-plots").get_by_text("qcf-injected").first.wait_for(timeout=10_000)
    _tab(page, "Compare")
    page.locator(".compare-picker input").first.click()
    page.locator(".choices__list--dropdown .choices__item--choice", has_text="seed5").first.wait_for(timeout=20_000)
    time.sleep(1)  # any injected image would have failed to load by now
    assert page.evaluate(_FIND, ".qcf-injected, img[onerror]") == []
    assert page.evaluate("() => window.__xss") is None
