"""`qbench export`: the artifact a measured cell ran (the quantized file a user ships), copied
out of the cache with its metadata.

A row records its artifact's SHA-256; the cache records each artifact's SHA-256 when it is
built. The file exported is the cache entry with that hash, checked again as it is copied: the
bytes written are the bytes that were measured, or nothing is written.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from qbench.cache import cache_root, recorded_sha256

# artifact format -> the file name suffix a user's tools expect
SUFFIX = {"onnx": ".onnx", "tflite": ".tflite", "edgetpu": "_edgetpu.tflite", "torch": ".pt",
          "openvino": ".xml"}  # fmt: skip
HOW_TO_LOAD = {
    "onnx": "onnxruntime.InferenceSession(path)",
    "tflite": "ai_edge_litert.interpreter.Interpreter(model_path=path)",
    "edgetpu": "an EdgeTPU interpreter (libedgetpu delegate)",
    "torch": "a state dict for the model's architecture as the method rebuilt it "
    "(qbench.backends.torch_eager.load_artifact reads it safely)",
    "openvino": "openvino.Core().read_model(path) (the .bin beside it)",
}


def find_artifact(sha_prefix: str) -> Path | None:
    """The cache entry whose recorded SHA-256 starts with `sha_prefix`, or None."""
    folder = cache_root() / "artifacts"
    if not sha_prefix or not folder.is_dir():
        return None
    for record in folder.glob("*.sha256"):
        entry = record.with_suffix("")
        digest = recorded_sha256(entry) if entry.exists() else None
        if digest and digest.startswith(sha_prefix):
            return entry
    return None


def select_rows(results: Any, target: str, store: Path) -> tuple[list[dict[str, Any]], bool]:
    """(rows, is_run): every ok row of the run `target`, or the latest ok row of the cell
    `target`. ValueError (one line) when neither names anything exportable."""
    if "run_id" in results and (results["run_id"] == target).any():
        run = results[(results["run_id"] == target) & (results["status"] == "ok")]
        if run.empty:
            raise ValueError(f"run {target} in {store} has no ok cell: nothing was measured")
        return [r.to_dict() for _, r in run.sort_values("cell_id").iterrows()], True
    cell = results[results["cell_id"] == target] if "cell_id" in results else results[:0]
    if cell.empty:
        raise ValueError(
            f"{store} has no run or cell named {target!r} (a cell id is "
            "MODEL/METHOD/BACKEND/DEVICE/bBATCH/tTHREADS, as the report's table and "
            "`qbench run` print them)"
        )
    ok = cell[cell["status"] == "ok"]
    if ok.empty:
        last = cell.sort_values("started_at").iloc[-1]
        raise ValueError(f"cell {target} has no ok row in {store} (latest: {last['status']}: "
                         f"{last.get('error')})")  # fmt: skip
    return [ok.sort_values("started_at").iloc[-1].to_dict()], False


def safe_name(cell_id: str) -> str:
    """A cell id read from the store as one file name inside the export folder: no separator,
    no leading dot, never empty (an empty name would be the folder itself)."""
    return re.sub(r"[^A-Za-z0-9._=-]+", "_", str(cell_id)).strip("._")[:180] or "cell"


def export(store: str | Path, target: str, out: str | Path) -> list[Path]:
    """Write the artifact(s) of `target` (a cell id or a run id of `store`) to `out`: a file
    for a cell (a folder given: the cell's name inside it), a folder for a run. Each artifact
    gets NAME.json beside it: what it is, how it was measured, its hash."""
    from qbench.store.parquet import load

    store = Path(store)
    _, results = load(store)
    rows, is_run = select_rows(results, target, store)
    out = Path(out)
    if is_run or out.is_dir() or str(out).endswith("/"):
        out.mkdir(parents=True, exist_ok=True)
        paths = [out / (safe_name(r["cell_id"]) + SUFFIX.get(r["artifact_format"], ""))
                 for r in rows]  # fmt: skip
    else:
        paths = [out]
    entries = [find_artifact(str(r.get("artifact_sha256") or "")) for r in rows]
    missing = [r["cell_id"] for r, e in zip(rows, entries, strict=True) if e is None]
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise ValueError(
            f"the artifact of {missing[0]}{more} is not in this machine's cache "
            f"({cache_root() / 'artifacts'}): run its suite again here (`qbench run SUITE`: "
            "a cached artifact is reused, a missing one rebuilt), then export"
        )
    held = [_held(r, e) for r, e in zip(rows, entries, strict=True) if e is not None]
    written = []
    for row, entry, path, fields in zip(rows, entries, paths, held, strict=True):
        assert entry is not None
        written += _write(row, entry, path, fields)
    return written


def _held(row: dict[str, Any], entry: Path) -> dict[str, Any]:
    """What the cached artifact holds (qbench.formats.audit), read again before it is handed
    out: an artifact of a quantizing method that holds no quantized tensor (an ok row written
    before prepare audited artifacts) is refused in one line, never exported as int8."""
    from qbench.formats.audit import PhantomQuantization, audit
    from qbench.plugins import load_all

    try:
        method = load_all().methods.get(row["method"])()
        params = method.Params(**json.loads(row.get("method_params_json") or "{}"))
    except Exception:  # a method not registered here: export the file as the row recorded it
        return {}
    try:
        return audit(method, row["artifact_format"], params, entry)
    except PhantomQuantization as exc:
        raise ValueError(f"cell {row['cell_id']}: not exported: {exc}") from None


def _write(row: dict[str, Any], entry: Path, path: Path, held: dict[str, Any]) -> list[Path]:
    fmt = row["artifact_format"]
    path.parent.mkdir(parents=True, exist_ok=True)
    full = recorded_sha256(entry)
    files = [path]
    tmp = path.with_name(f".{path.name}.tmp")
    with open(entry, "rb") as src, open(tmp, "wb") as dst:
        digest = hashlib.sha256()
        for block in iter(lambda: src.read(1 << 20), b""):
            digest.update(block)
            dst.write(block)
    if digest.hexdigest() != full:  # the cache entry changed since it was recorded
        tmp.unlink()
        raise ValueError(f"cache entry {entry} no longer matches its recorded hash: not "
                         "exported (run the suite again to rebuild it)")  # fmt: skip
    if fmt == "openvino":  # qbench's one-file container -> the IR's .xml and .bin
        from qbench.methods._openvino_ir import unpack

        _, xml, weights = unpack(tmp)
        tmp.unlink()
        path.write_bytes(xml)
        path.with_suffix(".bin").write_bytes(bytes(weights))
        files.append(path.with_suffix(".bin"))
    else:
        tmp.replace(path)
    meta = {
        "cell_id": row["cell_id"],
        "run_id": row.get("run_id"),
        "model": row.get("model"),
        "model_sha256": row.get("model_sha256"),
        "method": row.get("method"),
        "method_params": json.loads(row.get("method_params_json") or "{}"),
        "backend": row.get("backend"),
        "device": row.get("device"),
        "batch": _plain(row.get("batch")),
        "threads": _plain(row.get("threads")),
        "artifact_format": fmt,
        "artifact_sha256": full,
        "artifact_bytes": entry.stat().st_size,
        "execution": row.get("execution"),
        # read from the file as it is exported: quantized_tensors, float_tensors, packed_bytes
        "holds": held,
        "measured": {k: _plain(row.get(k)) for k in (
            "latency_p50_ms", "throughput_ips", "top1", "top1_ci_low", "top1_ci_high",
            "fp32_agreement", "fp32_agreement_ci_low", "fp32_agreement_ci_high",
            "perplexity", "kld_mean", "decode_tps", "ttft_ms") if _plain(row.get(k)) is not None},
        "load_with": HOW_TO_LOAD.get(fmt, ""),
        "exported_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }  # fmt: skip
    side = path.with_name(path.name + ".json")
    side.write_text(json.dumps(meta, indent=1, default=str) + "\n")
    return [*files, side]


def _plain(value: Any) -> Any:
    """A JSON-ready scalar: numpy types unwrapped, NaN/NA as None."""
    if value is None:
        return None
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and value != value:
        return None
    try:
        import pandas as pd

        if pd.isna(value):
            return None
    except (TypeError, ValueError):
        pass
    return value
