"""The Campaign tab in real Chromium against a real `qcf-studio serve`: a campaign started from the page fills
its plots while it runs, and afterwards is listed and reopens."""

from __future__ import annotations

import re
import time

import pytest

from qcf_studio.engine.spec import parse_spec
from tests.test_browser import _tab, browser_type_launch_args, served  # noqa: F401 (a fixture)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

REPLICAS = 10  # gauss6 likelihood fits of a second or two each on two workers: several states to observe

# JS: total count in the pull histograms (Bokeh quads whose bins start at the pull range's -4).
_PULL_COUNTS = """() => {
  let n = 0;
  for (const doc of Bokeh.documents)
    for (const m of doc._all_models.values()) {
      const d = m.data;
      if (d == null || typeof d !== "object") continue;
      const col = (name) => (typeof d.get === "function" ? d.get(name) : d[name]);
      const left = col("left"), top = col("top");
      if (left == null || top == null || left.length !== 16 || Math.abs(left[0] + 4) > 1e-9) continue;
      for (const v of top) n += v;
    }
  return n;
}"""


@pytest.fixture
def campaign_server(tmp_path):
    spec = parse_spec(
        {
            "name": "g6camp",
            "problem": {"kind": "gauss6", "events": 2000, "seed": 3},
            "training": {"method": "mle", "steps": 200},
            "ensemble": {"members": 1},
            "campaign": {"replicas": REPLICAS, "methods": ["mle"]},
        }
    )
    path = tmp_path / "spec.yaml"
    path.write_text(spec.to_yaml())
    with served(tmp_path, path) as (url, runs):
        yield url, runs


def _text(page, css: str) -> str:
    return " ".join(page.locator(f"{css} p, {css} pre").all_inner_texts())


def _plotted(page) -> int:
    m = re.search(r"Plotted: (\d+) fits", _text(page, ".campaign-plotted"))
    return int(m.group(1)) if m else -1


def _wait_text(page, css: str, text: str, timeout: float) -> None:
    deadline = time.time() + timeout
    while text not in _text(page, css):
        assert time.time() < deadline, f"{css} never showed {text!r}: {_text(page, css)!r}"
        time.sleep(0.2)


def test_a_campaign_fills_its_plots_while_it_runs_and_reopens_after_a_reload(campaign_server, page):
    url, runs = campaign_server
    page.goto(url)
    page.get_by_role("button", name="Start").wait_for(timeout=60_000)
    _tab(page, "Campaign")
    assert page.locator(".campaign-form input").first.input_value() == str(REPLICAS)  # the spec's section
    page.get_by_role("button", name="Start campaign").click()

    # While it runs: the fits plotted (text) and the pulls in the histograms (Bokeh data) grow together.
    seen: dict[int, float] = {}  # fits plotted -> pull counts in the histograms, at states before the end
    deadline = time.time() + 120
    while "completed" not in _text(page, ".campaign-status"):
        assert time.time() < deadline, _text(page, ".campaign-status")
        n = _plotted(page)
        if 0 < n < REPLICAS and "running" in _text(page, ".campaign-status"):
            seen.setdefault(n, page.evaluate(_PULL_COUNTS))
        time.sleep(0.15)
    assert len(seen) >= 2, f"fewer than two intermediate states observed: {seen}"
    states = sorted(seen.items())
    # The histograms grew with the fits (text and plots arrive as separate updates: one may lead by a poll).
    counts = [c for _, c in states]
    assert counts == sorted(counts) and len(set(counts)) >= 2 and 0 < counts[0] < 2 * REPLICAS, states
    _wait_text(page, ".campaign-plotted", f"Plotted: {REPLICAS} fits", 10)
    assert page.evaluate(_PULL_COUNTS) == 2 * REPLICAS  # every fit's pull of p0 and p1
    assert f"{REPLICAS} of {REPLICAS} fits done" in _text(page, ".campaign-status")
    folder = runs / "campaigns" / "g6camp"
    assert (folder / "summary.nc").is_file() and len(list(folder.glob("mle-r*.nc"))) == REPLICAS

    # After a reload: the campaign is listed, reopens from its folder, and a fit opens in the Runs tab.
    page.reload()
    page.get_by_role("button", name="Start").wait_for(timeout=60_000)
    _tab(page, "Campaign")
    picker = page.locator(".campaign-picker select")
    label = next(o for o in picker.locator("option").all_inner_texts() if "g6camp" in o)
    assert f"{REPLICAS}/{REPLICAS} fits (complete)" in label
    picker.select_option(label=label)
    # generous waits: this checks what reopens, not how fast (on 2 busy cores it once took 25 s)
    _wait_text(page, ".campaign-status", "reopened", 60)
    _wait_text(page, ".campaign-plotted", f"Plotted: {REPLICAS} fits", 30)
    table = page.locator(".campaign-verdicts .tabulator")
    assert "p0" in table.inner_text() and "p1" in table.inner_text()
    rows = page.locator(".campaign-fits .tabulator-row")
    deadline = time.time() + 20
    while rows.count() != REPLICAS:  # the fits table has rendered every fit
        assert time.time() < deadline, rows.count()
        time.sleep(0.2)
    report = page.locator(".closure-report li").first
    for attempt in range(3):  # a click while the browser re-renders the table is lost: a user clicks again
        picked = 2 + attempt  # another row each time (a second click on a row deselects it)
        rows.nth(picked).click()
        deadline = time.time() + 10
        while not report.is_visible() and time.time() < deadline:  # the Runs tab shows the fit
            time.sleep(0.2)
        if report.is_visible():
            break
        print(
            f"click {attempt + 1} on a fit opened nothing; active tab: "
            f"{page.locator('.bk-tab.bk-active').all_inner_texts()}, selected rows: "
            f"{page.locator('.campaign-fits .tabulator-selected').count()}, campaign message: "
            f"{_text(page, '.campaign-error')!r}, runs message: {_text(page, '.runs-error')!r}"
        )
        _tab(page, "Campaign")
    assert report.is_visible(), "three clicks on a fit did not open it in the Runs tab (see the lines above)"
    page.locator(".run-plots").get_by_text(f"mle-r{picked:04d}").first.wait_for(timeout=10_000)
