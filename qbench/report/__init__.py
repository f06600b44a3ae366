"""qbench.report: one self-contained offline HTML page from a store.

    write_report("store/", "reports/index.html")

Heavy imports (pandas, plotly) happen inside the functions, so importing this is cheap.
"""

from qbench.report.html import build_report_html, write_report

__all__ = ["build_report_html", "write_report"]
