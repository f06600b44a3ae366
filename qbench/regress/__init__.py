"""Regression detection over a store's history: per-cell series, noise, verdicts, change points.

`history` turns a store into one row per (run, cell) with the host's hardware fingerprint;
`compare` judges a candidate run against a base run; `changepoint` finds steps in a cell's
whole series; `dashboard` draws the trends. Nothing here imports a runtime.
"""
