"""The written dashboard in headless Chromium: offline, no console errors, the known step shown,
filters hide cells."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from qbench.regress.dashboard import write_dashboard
from tests.test_dashboard import (
    CELL_A,
    CELL_B,
    CELL_C,
    CELL_D,
    CELLS,
    RUNS,
    STEP_RUN,
    write_history_store,
)
from tests.test_report_browser import browser, open_offline  # noqa: F401  (shared fixture)

pytestmark = pytest.mark.browser

# Figures that draw: cells A, B and C on both machines (D never measured).
FIGURES = 6


@pytest.fixture
def opened(browser: Any, tmp_path: Path) -> Iterator[tuple[Any, list[str], list[str]]]:  # noqa: F811
    out = write_dashboard(write_history_store(tmp_path / "store"), tmp_path / "out" / "dash.html")
    page, errors, remote = open_offline(browser, out, FIGURES, "QBENCH_DASHBOARD_SCREENSHOT")
    yield page, errors, remote
    page.close()


def _cell(page: Any, cell_id: str) -> Any:
    return page.locator(f'section.cell[data-cell-id="{cell_id}"]')


def _visible_cells(page: Any) -> list[str]:
    return page.eval_on_selector_all(
        "section.cell", "els => els.filter(e => !e.hidden).map(e => e.dataset.cellId)"
    )


def test_loads_offline_and_draws(opened: tuple[Any, list[str], list[str]]) -> None:
    page, errors, remote = opened
    assert errors == []
    assert remote == []
    assert page.locator(".js-plotly-plot").count() == FIGURES
    # Every figure has its four panels drawn with data points in them.
    for plot in page.locator(".js-plotly-plot").all():
        assert plot.locator(".cartesianlayer > .subplot").count() == 4
        assert plot.locator(".scatterlayer .trace .point").count() > 0
    assert _visible_cells(page) == list(_sorted_cells())
    assert page.locator("#cells-shown").inner_text() == f"{len(CELLS)} of {len(CELLS)} cells shown"


def _sorted_cells() -> list[str]:
    return sorted(CELLS, key=lambda c: (c.split("/")[0], c.split("/")[1], c.split("/")[2]))


def test_known_step_is_shown(opened: tuple[Any, list[str], list[str]]) -> None:
    page, errors, _ = opened
    text = f"regression at run {RUNS[STEP_RUN]}"
    first_row = page.locator("#changes tbody tr").first
    assert first_row.is_visible()
    assert CELL_A in first_row.inner_text() and RUNS[STEP_RUN] in first_row.inner_text()
    assert "regression" in first_row.inner_text()
    # The annotation is drawn in the cell's figure (an SVG text node, not only in the JSON).
    notes = _cell(page, CELL_A).locator(".annotation-text", has_text=text)
    assert notes.count() >= 2  # latency and throughput panels
    assert notes.first.is_visible()
    assert _cell(page, CELL_C).locator(".annotation-text", has_text="regression").count() == 0
    # The summary links to the cell.
    first_row.locator("a").click()
    assert page.evaluate("location.hash") == "#" + _cell(page, CELL_A).get_attribute("id")
    assert errors == []


def test_filters_hide_cells(opened: tuple[Any, list[str], list[str]]) -> None:
    page, errors, _ = opened
    page.select_option('select[data-dash-filter="model"]', "mobilenet_v2")
    assert sorted(_visible_cells(page)) == sorted([CELL_C, CELL_D])
    assert not _cell(page, CELL_A).is_visible()
    assert page.locator("#changes tbody tr:visible").count() == 0  # A and B's steps hidden
    assert page.locator("#cells-shown").inner_text() == f"2 of {len(CELLS)} cells shown"
    page.select_option('select[data-dash-filter="model"]', "")
    page.select_option('select[data-dash-filter="backend"]', "litert")
    assert _visible_cells(page) == [CELL_D]
    page.select_option('select[data-dash-filter="backend"]', "")
    page.check("#only-changes")
    assert sorted(_visible_cells(page)) == sorted([CELL_A, CELL_B])
    # Within A, only the machine with the step stays: the other machine's block is hidden.
    assert _cell(page, CELL_A).locator(".hw:visible").count() == 1
    page.uncheck("#only-changes")
    assert len(_visible_cells(page)) == len(CELLS)
    # A plot that comes back is redrawn at the container's width.
    widths = page.eval_on_selector_all(
        f'section.cell[data-cell-id="{CELL_A}"] .js-plotly-plot .main-svg',
        "els => els.map(e => e.getBoundingClientRect().width)",
    )
    assert widths and min(widths) > 800
    assert errors == []


def test_hardware_filter_keeps_machines_apart(opened: tuple[Any, list[str], list[str]]) -> None:
    page, errors, _ = opened
    select = page.locator('select[data-dash-filter="hardware"]')
    options = select.locator("option").all()
    amd = next(o.get_attribute("value") for o in options if "AMD EPYC" in o.inner_text())
    select.select_option(amd)
    assert page.locator(".hw:visible").count() == 4  # A, B, C, D each have runs on it
    assert page.locator('.hw:visible[data-hardware="' + amd + '"]').count() == 4
    # The step was found on the other machine: nothing to list for this one.
    assert page.locator("#changes tbody tr:visible").count() == 0
    assert _cell(page, CELL_B).is_visible()
    assert errors == []
