"""The written report in headless Chromium: no console errors, charts drawn, table works."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from qbench.report import write_report
from tests.test_report import synthetic_rows, write_store

CHROMIUM = os.environ.get("QBENCH_CHROMIUM", "/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-quic",
    "--disable-sync",
]

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).is_file():
        pytest.fail(
            f"{CHROMIUM} is missing: run scripts/test.sh, which installs Chromium "
            "(or `apt-get install -y chromium`)",
            pytrace=False,
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


def open_offline(
    browser: Any, html: Path, figures: int, screenshot_env: str
) -> tuple[Any, list[str], list[str]]:
    """A page of `html` once `figures` plots have drawn, with the console errors and every
    request that left the file (a self-contained page makes none); a full-page screenshot to
    the path in `screenshot_env` when that variable is set."""
    page = browser.new_page(viewport={"width": 1600, "height": 1000})
    errors: list[str] = []
    remote: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(f"pageerror: {e}"))
    page.on(
        "request",
        lambda r: None if r.url.startswith(("file:", "data:", "blob:")) else remote.append(r.url),
    )
    page.goto(html.as_uri())
    page.wait_for_load_state("load")
    page.wait_for_function(
        f"document.querySelectorAll('.js-plotly-plot .main-svg').length >= {figures}"
    )
    if os.environ.get(screenshot_env):
        page.screenshot(path=os.environ[screenshot_env], full_page=True)
    return page, errors, remote


@pytest.fixture
def opened(browser: Any, tmp_path: Path) -> Iterator[tuple[Any, list[str], list[str]]]:
    report = write_report(write_store(tmp_path / "store"), tmp_path / "out" / "report.html")
    page, errors, remote = open_offline(browser, report, 3, "QBENCH_REPORT_SCREENSHOT")
    yield page, errors, remote
    page.close()


def _visible(page: Any, column: str) -> list[str]:
    """The visible rows' sort values (data-v, else text) in `column`, top to bottom."""
    return page.evaluate(
        """(head) => {
            const heads = [...document.querySelectorAll('#results thead th')];
            const i = heads.findIndex(h => h.textContent.replace(/[▲▼]/g, '').trim() === head);
            return [...document.querySelectorAll('#results tbody tr')].filter(r => !r.hidden)
                .map(r => { const c = r.cells[i];
                            return c.hasAttribute('data-v') ? c.dataset.v : c.textContent; });
        }""",
        column,
    )


def test_page_renders_without_errors(opened: tuple[Any, list[str], list[str]]) -> None:
    page, errors, remote = opened
    assert errors == []
    assert remote == []
    assert page.locator(".js-plotly-plot").count() >= 3
    for row in synthetic_rows():
        assert page.locator(f'#results tr[data-cell-id="{row["cell_id"]}"]').count() == 1
    assert page.locator("#results tbody tr:visible").count() == len(synthetic_rows())


def test_filter_box_and_selects(opened: tuple[Any, list[str], list[str]]) -> None:
    page, errors, _ = opened
    rows = synthetic_rows()
    page.fill("#filter", "mobilenet")
    want = sum(r["model"] == "mobilenet_v2" for r in rows)
    assert page.locator("#results tbody tr:visible").count() == want
    assert page.locator("#shown").inner_text() == f"{want} of {len(rows)} rows shown"
    page.fill("#filter", "mobilenet static_int8")  # every word must match
    assert page.locator("#results tbody tr:visible").count() == sum(
        r["model"] == "mobilenet_v2" and r["method"] == "static_int8" for r in rows
    )
    page.fill("#filter", "")
    page.select_option('select[data-filter="status"]', "ok")
    assert page.locator("#results tbody tr:visible").count() == sum(
        r["status"] == "ok" for r in rows
    )
    page.select_option('select[data-filter="status"]', "")
    assert page.locator("#results tbody tr:visible").count() == len(rows)
    assert errors == []


def test_header_click_sorts(opened: tuple[Any, list[str], list[str]]) -> None:
    page, errors, _ = opened
    header = page.locator("#results thead th", has_text="p50 ms")
    header.click()
    values = _visible(page, "p50 ms")
    numbers = [float(v) for v in values if v]
    assert numbers == sorted(numbers) and numbers[0] == 0.25
    assert values[len(numbers) :] == [""] * (len(values) - len(numbers))  # blanks last
    header.click()
    values = _visible(page, "p50 ms")
    numbers = [float(v) for v in values if v]
    assert numbers == sorted(numbers, reverse=True) and numbers[0] == 10.0
    assert values[-1] == ""
    page.locator("#results thead th", has_text="model").first.click()
    models = _visible(page, "model")
    assert models == sorted(models)
    assert errors == []


def test_summary_names_the_fastest_and_the_within_budget_pick(browser: Any, tmp_path: Path) -> None:
    """The first section of a known store's report, as a reader sees it."""
    from tests.test_summary import known_rows

    store = write_store(tmp_path / "store", known_rows())
    report = write_report(store, tmp_path / "report.html")
    page, errors, remote = open_offline(browser, report, 3, "QBENCH_SUMMARY_SCREENSHOT")
    try:
        assert errors == [] and remote == []
        summary = page.locator("#summary")
        # above every chart and the table
        assert page.evaluate(
            "document.querySelector('#summary').getBoundingClientRect().top < "
            "document.querySelector('.js-plotly-plot').getBoundingClientRect().top"
        )
        fastest = summary.locator('tr.pick-fastest[data-model="digits_cnn"]').inner_text()
        assert "static_int8 on onnxruntime" in fastest and "2.50×" in fastest
        assert "per_channel" not in fastest
        within = summary.locator('tr.pick-within-budget[data-model="digits_cnn"]').inner_text()
        assert "static_int8[per_channel=True] on onnxruntime" in within and "2.00×" in within
        reference = summary.locator('tr.pick-best-fp32[data-model="digits_cnn"]').inner_text()
        assert "fp32 on onnxruntime" in reference and "1.00×" in reference
        # the table fits a 1600 px page: nothing scrolls sideways
        assert page.evaluate(
            "document.querySelector('#summary table').scrollWidth <= "
            "document.querySelector('#summary .scroll').clientWidth"
        )
    finally:
        page.close()


def test_the_results_table_fits_a_laptop_screen(browser: Any, tmp_path: Path) -> None:
    """At 1400 px the table needs no sideways scroll: accuracy and speed-up are on screen, the
    rest of each row is folded into its details, which open on a click."""
    report = write_report(write_store(tmp_path / "store"), tmp_path / "report.html")
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    try:
        page.goto(report.as_uri())
        page.wait_for_load_state("load")
        assert page.evaluate(
            "document.querySelector('#results').scrollWidth <= "
            "document.querySelector('#results').parentElement.clientWidth"
        )
        heads = page.locator("#results thead th").all_inner_texts()
        assert {"× best fp32", "top-1", "fp32 agree", "artifact MB"} <= {h.strip() for h in heads}
        cell = '#results tr[data-cell-id="digits_cnn/fp32/onnxruntime/local/b1/t1"]'
        details = page.locator(f"{cell} details")
        assert not details.locator("dl").is_visible()
        details.locator("summary").click()
        assert details.locator("dl").is_visible() and "p99 ms" in details.inner_text()
    finally:
        page.close()
