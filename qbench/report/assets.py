"""The page's stylesheet and its table script (vanilla JS: sort on header click, filter)."""

from qbench.report.fmt import esc


def html_head(title: str, css: str) -> str:
    """Doctype and <head> of a self-contained page: the stylesheet and plotly.js inlined once,
    an empty favicon so the browser asks the network for nothing."""
    import plotly.offline

    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{esc(title)}</title>
<link rel="icon" href="data:,">
<style>{css}</style>
<script>{plotly.offline.get_plotlyjs()}</script>
</head>"""


CSS = """
:root { --ok:#1a7f37; --failed:#cf222e; --timeout:#bc4c00; --skipped:#6e7781;
        --sim:#8250df; --line:#d0d7de; --muted:#57606a; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
       margin: 0 auto; padding: 16px 24px 48px; max-width: 1800px; color: #1f2328; }
h1 { margin: 0 0 4px; font-size: 24px; }
h2 { margin: 32px 0 8px; font-size: 19px; border-bottom: 1px solid var(--line);
     padding-bottom: 4px; }
h3 { margin: 20px 0 4px; font-size: 16px; }
.muted, .caption { color: var(--muted); }
.caption { max-width: 1100px; margin: 2px 0 8px; font-size: 13px; }
.badge { display: inline-block; padding: 1px 8px; border-radius: 10px; color: #fff;
         font-size: 12px; font-weight: 600; white-space: nowrap; }
.badge.ok { background: var(--ok); } .badge.failed { background: var(--failed); }
.badge.timeout { background: var(--timeout); } .badge.skipped { background: var(--skipped); }
.badge.simulated { background: var(--sim); }
.counts .badge { font-size: 13px; margin-right: 6px; }
.scroll { overflow-x: auto; border: 1px solid var(--line); border-radius: 6px; }
table { border-collapse: collapse; font-size: 13px; }
th, td { padding: 4px 8px; border-bottom: 1px solid var(--line); text-align: left;
         vertical-align: top; }
td.n { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
table.hosts th { background: #f6f8fa; white-space: nowrap; }
table.hosts pre { margin: 0; font-size: 12px; max-height: 220px; overflow: auto; }
#results thead th { position: sticky; top: 0; background: #f6f8fa; cursor: pointer;
                    white-space: nowrap; user-select: none; z-index: 1; }
#results thead th:hover { background: #eaeef2; }
#results thead th[aria-sort="ascending"]::after { content: " ▲"; }
#results thead th[aria-sort="descending"]::after { content: " ▼"; }
#results tbody tr:hover { background: #f6f8fa; }
#results tr.st-failed td.status-cell { color: var(--failed); }
#results tr.st-failed { background: #fff5f5; }
#results tr.st-timeout { background: #fff8f0; }
#results tr.st-skipped { color: var(--muted); }
#results tr.simulated td.exec-cell { color: var(--sim); font-weight: 600; }
td.err { max-width: 420px; min-width: 200px; white-space: normal; font-size: 12px; }
td.err summary { cursor: pointer; }
td.err dl { display: grid; grid-template-columns: auto auto; gap: 0 10px; margin: 4px 0; }
td.err dt { color: var(--muted); } td.err dd { margin: 0; font-variant-numeric: tabular-nums; }
td.err .notes { color: var(--muted); margin-top: 4px; }
td.err pre.traceback { font-size: 11px; max-height: 16em; overflow: auto; white-space: pre;
                       background: #f7f7f7; padding: 4px; margin: 4px 0; }
td.lbl { max-width: 220px; overflow-wrap: anywhere; }
td.id { font-family: ui-monospace, monospace; font-size: 12px; white-space: nowrap; }
.simnote { display: block; color: var(--sim); font-size: 11px; }
.ci { color: #777; font-size: 11px; }
.ci.confirmation { display: block; max-width: 260px; white-space: normal; }
.hwnote { display: block; color: var(--timeout); font-size: 11px; white-space: normal; }
.hwwarn { border: 1px solid var(--timeout); background: #fff8f0; border-radius: 6px;
          padding: 8px 12px; margin: 12px 0; max-width: 1100px; }
.hwwarn ul { margin: 4px 0; }
.filters { display: flex; flex-wrap: wrap; gap: 8px 16px; align-items: center;
           margin: 8px 0; }
.filters input[type=search] { width: 320px; padding: 4px 8px; font: inherit; }
.filters select { font: inherit; padding: 2px 4px; }
.chart { border: 1px solid var(--line); border-radius: 6px; padding: 4px; margin: 4px 0 16px; }
"""

JS = r"""
(function () {
  "use strict";
  var table = document.getElementById("results");
  if (!table) { return; }
  var tbody = table.tBodies[0];
  var rows = Array.prototype.slice.call(tbody.rows);
  var box = document.getElementById("filter");
  var selects = Array.prototype.slice.call(document.querySelectorAll("select[data-filter]"));
  var counter = document.getElementById("shown");
  rows.forEach(function (r) {
    r.dataset.text = (r.textContent + " " + r.dataset.cellId).toLowerCase();
  });

  function applyFilter() {
    var terms = box.value.toLowerCase().split(/\s+/).filter(Boolean);
    var wanted = selects.filter(function (s) { return s.value !== ""; });
    var matches = function (r, s) {
      return r.getAttribute("data-" + s.dataset.filter) === s.value;
    };
    var shown = 0;
    rows.forEach(function (r) {
      var ok = terms.every(function (t) { return r.dataset.text.indexOf(t) >= 0; }) &&
        wanted.every(function (s) { return matches(r, s); });
      r.hidden = !ok;
      if (ok) { shown += 1; }
    });
    counter.textContent = shown + " of " + rows.length + " rows shown";
  }

  function key(row, col, numeric) {
    var cell = row.cells[col];
    var v = cell.hasAttribute("data-v") ? cell.getAttribute("data-v") : cell.textContent.trim();
    if (v === "" || v === "\u2013") { return null; }
    if (numeric) { var f = parseFloat(v); return isNaN(f) ? null : f; }
    return v.toLowerCase();
  }

  var heads = Array.prototype.slice.call(table.tHead.rows[0].cells);
  heads.forEach(function (th, col) {
    th.addEventListener("click", function () {
      var asc = th.getAttribute("aria-sort") !== "ascending";
      heads.forEach(function (h) { h.removeAttribute("aria-sort"); });
      th.setAttribute("aria-sort", asc ? "ascending" : "descending");
      var numeric = th.dataset.type === "num";
      var keyed = rows.map(function (r, i) { return [key(r, col, numeric), i, r]; });
      keyed.sort(function (a, b) {
        if (a[0] === null || b[0] === null) {  // blanks last, whatever the direction
          return a[0] === b[0] ? a[1] - b[1] : (a[0] === null ? 1 : -1);
        }
        var c = a[0] < b[0] ? -1 : (a[0] > b[0] ? 1 : 0);
        return (asc ? c : -c) || a[1] - b[1];
      });
      rows = keyed.map(function (k) { return k[2]; });
      rows.forEach(function (r) { tbody.appendChild(r); });
    });
  });

  box.addEventListener("input", applyFilter);
  selects.forEach(function (s) { s.addEventListener("change", applyFilter); });
  applyFilter();
})();
"""
