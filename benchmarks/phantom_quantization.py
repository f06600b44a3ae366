"""Phantom quantization in stores: `ok` cells of a method meant to quantize whose artifact holds
no quantized tensor (must be 0).

For each store: the ok rows whose method stores quantized weights (Method.stores_quantized;
the row's weight_dtype where the method is not registered here), counted from the row's
quantized_tensors column and, where the artifact is still in the artifact cache (found by the
row's artifact_sha256), re-read from the file (qbench.formats). Rows written before the column
existed are counted only where the file is found.

    python benchmarks/phantom_quantization.py STORE [STORE ...] [--cache DIR]

Exit status 1 when any store holds a phantom cell.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def cached_artifacts(cache: Path) -> dict[str, Path]:
    """sha256 (full hex) -> artifact file, from the cache's records (NAME.sha256)."""
    found = {}
    for record in (cache / "artifacts").glob("*.sha256"):
        for line in record.read_text().splitlines():
            digest, _, name = line.partition("  ")
            if name and not name.endswith(".meta.json"):
                found[digest] = record.with_name(name)
    return found


def _quantizing(row: Any, methods: Any) -> bool:
    """Whether the row's method meant to store quantized weights in its artifact."""
    from qbench.formats import is_quantized_type

    try:
        method = methods.get(row["method"])()
        params = method.Params(**json.loads(row["method_params_json"] or "{}"))
        return bool(method.stores_quantized(row["artifact_format"], params))
    except Exception:  # a method not registered here: what its describe() wrote in the row
        return is_quantized_type(str(row.get("weight_dtype") or ""))


def audit_store(store: Path, artifacts: dict[str, Path]) -> dict[str, Any]:
    """Counts of one store: quantizing ok cells, phantoms by the rows and by the files."""
    import pandas as pd

    from qbench.formats import contents
    from qbench.plugins import load_all
    from qbench.store.parquet import load

    methods = load_all().methods
    _, results = load(store)
    ok = results[results["status"] == "ok"]
    out: dict[str, Any] = {"ok": len(ok), "quantizing": 0, "from_rows": 0, "reread": 0,
                           "unread": 0, "phantoms": []}  # fmt: skip
    for _, row in ok.iterrows():
        if not row.get("artifact_format") or not _quantizing(row, methods):
            continue
        out["quantizing"] += 1
        counted = row.get("quantized_tensors")
        phantom = pd.notna(counted) and int(counted) == 0
        out["from_rows"] += bool(pd.notna(counted))
        prefix = str(row.get("artifact_sha256") or "")
        path = next((p for d, p in artifacts.items() if prefix and d.startswith(prefix)), None)
        found = contents(row["artifact_format"], path) if path and path.exists() else None
        if found is not None:
            out["reread"] += 1
            phantom = phantom or (found.quantized_tensors == 0 and found.quantized_ops == 0)
        elif pd.isna(counted):
            out["unread"] += 1
        if phantom:
            out["phantoms"].append(row["cell_id"])
    return out


def main(argv: list[str] | None = None) -> int:
    from qbench.cache import cache_root

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("stores", nargs="+", type=Path)
    parser.add_argument("--cache", type=Path, help="artifact cache (default: qbench's)")
    args = parser.parse_args(argv)
    artifacts = cached_artifacts(args.cache or cache_root())
    bad = 0
    for store in args.stores:
        got = audit_store(store, artifacts)
        bad += len(got["phantoms"])
        print(f"{store}: {got['ok']} ok cells, {got['quantizing']} of a quantizing method; "
              f"phantom (no quantized tensor): {len(got['phantoms'])} (counts in rows "
              f"{got['from_rows']}, artifacts re-read {got['reread']}, unread "
              f"{got['unread']})")  # fmt: skip
        for cell in got["phantoms"]:
            print(f"  phantom: {cell}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
