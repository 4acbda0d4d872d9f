"""The Campaign tab in real Chromium against a real `qcf-studio serve`: a campaign started from the page fills
its plots while it runs, and afterwards is listed and reopens."""

from __future__ import annotations

import re
import time

import pytest

from engine.spec import parse_spec
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
    spec = parse_spec({"name": "g6camp", "problem": {"kind": "gauss6", "events": 2000, "seed": 3},
                       "training": {"method": "mle", "steps": 200}, "ensemble": {"members": 1},
                       "campaign": {"replicas": REPLICAS, "methods": ["mle"]}})
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
    assert all(b[1] > a[1] for a, b in zip(states, states[1:])), states  # the histograms grew with the fits
    assert states[0][1] > 0
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
    _wait_text(page, ".campaign-status", "reopened", 20)
    _wait_text(page, ".campaign-plotted", f"Plotted: {REPLICAS} fits", 10)
    table = page.locator(".campaign-verdicts .tabulator")
    assert "p0" in table.inner_text() and "p1" in table.inner_text()
    rows = page.locator(".campaign-fits .tabulator-row")
    deadline = time.time() + 20
    while rows.count() != REPLICAS:  # the fits table has rendered every fit
        assert time.time() < deadline, rows.count()
        time.sleep(0.2)
    rows.nth(2).click()
    page.locator(".closure-report li").first.wait_for(timeout=30_000)  # the Runs tab shows the fit
    page.locator(".run-plots").get_by_text("mle-r0002").first.wait_for(timeout=10_000)
