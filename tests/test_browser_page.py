"""The page around the dashboard in real Chromium against a real `qcf-studio serve`: its header, the spec's
collapsible sidebar, and that everything it loads comes from the server itself (it works offline)."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest

from tests.conftest import small_spec
from tests.test_browser import browser_type_launch_args, served  # noqa: F401 (a fixture)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

# JS: the left edge and width of the element with this id, once its CSS transition has ended.
_BOX = "(id) => { const r = document.getElementById(id).getBoundingClientRect(); return [r.left, r.width]; }"


def _origin(url: str) -> str | None:
    """``host:port`` a request went to; a ``blob:`` URL carries the origin that made it."""
    parts = urlsplit(url.removeprefix("blob:"))
    return parts.netloc or None


def test_header_names_the_product_the_spec_sidebar_collapses_and_nothing_loads_from_elsewhere(tmp_path, page):
    spec = tmp_path / "spec.yaml"
    spec.write_text(small_spec(steps=400).to_yaml())
    # A CDN asked for in the environment is not used: the page must work without the internet.
    with served(tmp_path, spec, env={"BOKEH_RESOURCES": "cdn"}) as (url, _):
        requested: list[str] = []
        page.on("request", lambda request: requested.append(request.url))
        page.goto(url)
        start = page.get_by_role("button", name="Start")
        start.wait_for(timeout=60_000)

        # The header: the product's name, once on the page (no tab or panel repeats it), and the cluster.
        assert page.locator("#header .app-header").inner_text().strip() == "qcf-studio"
        assert page.get_by_text("qcf-studio", exact=True).count() == 1
        page.locator("#header .cluster-headline").get_by_text("2 workers, 2 threads").wait_for(timeout=20_000)
        assert page.title() == "qcf-studio"

        # The spec form and Start/Stop live in the sidebar; the template's toggle collapses and expands it.
        sidebar = page.locator("#sidebar")
        for control in (page.locator(".field-problem-kind select"), start, page.get_by_role("button", name="Stop")):
            assert sidebar.locator(control).count() == 1
        tabs = page.locator("#main .bk-tab", has_text="Campaign")
        assert tabs.count() == 1  # the tabs are in the main area
        left, width = page.evaluate(_BOX, "sidebar")
        assert width > 400
        main_left = page.evaluate(_BOX, "main")[0]
        assert main_left >= left + width - 1
        toggle = page.locator("#sidebar-button")
        toggle.click()
        page.wait_for_function(f"() => ({_BOX})('sidebar')[1] < 1", timeout=5_000)
        page.wait_for_function(f"() => ({_BOX})('main')[0] < 20", timeout=5_000)  # the tabs take the width
        toggle.click()
        page.wait_for_function(f"() => ({_BOX})('sidebar')[1] > 400", timeout=5_000)
        start.click(trial=True, timeout=5_000)  # visible, enabled and not covered: usable again
        page.locator(".field-problem-kind select").click(trial=True, timeout=5_000)

        own = urlsplit(url).netloc
        fetched = [u for u in requested if not u.startswith("data:")]
        assert any("/static/" in u for u in fetched)  # Bokeh's and Panel's scripts came from the server ...
        assert [u for u in fetched if _origin(u) != own] == []  # ... and nothing from anywhere else
