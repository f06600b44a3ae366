"""Models with the odd properties real files have, through `qbench run --model`, as a user runs
them: what each cell ends as, which fidelity metric judged it, and its value.

The models are built here (tests/own_models.py), each with one property qbench once got wrong
(issue 28):
  legacy_tflite  a float .tflite without SignatureDef, op codes in the pre-2.3 field
  regression     one output value per input (a regression / voice-activity score)
  state          a state input [2, 1, 8] beside the data: its first axis is no batch
  scalar         a scalar sample-rate input, which must be 16000
  stride32       dynamic height and width that must be multiples of 32

    python benchmarks/own_model_properties.py                      # this checkout
    python benchmarks/own_model_properties.py --qbench /tmp/old    # another checkout's qbench

With --qbench, the models and data are built by this checkout and run by the other one's
`python -m qbench.cli` (an older qbench takes fewer flags: the ones it lacks are left out).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
METHODS = "fp32,dynamic_int8,static_int8"
METRICS = ("top1", "fp32_agreement", "fp32_within_tol")
NAMES = ("legacy_tflite", "regression", "state", "scalar", "stride32")


def build(folder: Path, samples: int, wanted: list[str]) -> list[dict[str, Any]]:
    """Each wanted model's file, data and extra flags (`new`: flags an older qbench does not
    take)."""
    sys.path.insert(0, str(REPO))
    from tests import own_models

    rng = np.random.default_rng(0)
    normal = lambda *shape: rng.normal(size=(samples, *shape)).astype(np.float32)  # noqa: E731
    cases = []
    if "legacy_tflite" in wanted:  # converting a torch module takes seconds
        tflite = own_models.unsigned_tflite(folder / "tflite", legacy=True)
        np.savez(folder / "images.npz", x=normal(3, 16, 16))
        cases.append({"name": "legacy_tflite", "model": tflite, "data": folder / "images.npz",
                      "backends": "litert", "new": []})  # fmt: skip
    reg = own_models.regression_onnx(folder / "regression.onnx")
    np.savez(folder / "regression.npz", x=normal(own_models.REGRESSION_INPUTS))
    cases.append({"name": "regression", "model": reg, "data": folder / "regression.npz",
                  "backends": "onnxruntime,openvino", "new": []})  # fmt: skip
    state = own_models.state_input_onnx(folder / "state.onnx")
    np.savez(folder / "state.npz", x=normal(16), h=normal(2, 1, 8))
    cases.append({"name": "state", "model": state, "data": folder / "state.npz",
                  "backends": "onnxruntime,openvino", "new": []})  # fmt: skip
    scalar = own_models.scalar_input_onnx(folder / "scalar.onnx")
    np.savez(folder / "scalar.npz", x=normal(16))
    cases.append({"name": "scalar", "model": scalar, "data": folder / "scalar.npz",
                  "backends": "onnxruntime,openvino", "new": ["--input", "sr=16000"]})  # fmt: skip
    stride = own_models.stride32_onnx(folder / "stride32.onnx")
    cases.append({"name": "stride32", "model": stride, "data": "synthetic",
                  "backends": "onnxruntime,openvino",
                  "new": ["--data-param", "dynamic_size=64"]})  # fmt: skip
    return cases


def run(case: dict[str, Any], qbench: Path, store: Path, new_flags: bool) -> dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=str(qbench))
    cmd = [sys.executable, "-m", "qbench.cli", "run", "--model", str(case["model"]),
           "--data", str(case["data"]), "--methods", METHODS, "--backends", case["backends"],
           "--store", str(store), "--no-report", "--json",
           *(case["new"] if new_flags else [])]  # fmt: skip
    proc = subprocess.run(cmd, cwd=store.parent, env=env, capture_output=True, text=True)
    try:
        return json.loads(proc.stdout)
    except ValueError:
        last = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        return {"error": last[-1] if last else f"exit {proc.returncode}"}


def judged(row: dict[str, Any]) -> str:
    for metric in METRICS:
        value = row.get(metric)
        if value is not None and value == value:  # NaN: an empty column of the store
            return f"{metric} {value:.3f}"
    return "—"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--qbench", type=Path, default=REPO,
                        help="the checkout whose qbench runs the models (default: this one)")
    parser.add_argument("--old", action="store_true",
                        help="leave out the flags an older qbench does not take")
    parser.add_argument("--samples", type=int, default=200, help="data samples per model")
    parser.add_argument("--models", default=",".join(NAMES),
                        help=f"which of {', '.join(NAMES)} (default: all)")
    parser.add_argument("--onnx-backends", default="onnxruntime,openvino",
                        help="backends of the .onnx models (default: onnxruntime,openvino)")
    args = parser.parse_args()
    from qbench.store.parquet import load

    root = Path(tempfile.mkdtemp(prefix="qbench-own-props-"))
    wanted = args.models.split(",")
    cases = [c for c in build(root, args.samples, wanted) if c["name"] in wanted]
    for case in cases:
        if case["backends"] != "litert":
            case["backends"] = args.onnx_backends
    print("| model | cell | status | fidelity judged on | SQNR dB | quantized tensors | why |")
    print("|---|---|---|---|---|---|---|")
    for case in cases:
        store = root / f"store-{case['name']}"
        doc = run(case, args.qbench.resolve(), store, not args.old)
        if "error" in doc:
            print(f"| {case['name']} | (no run) | refused | — | — | — | {doc['error'][:160]} |")
            continue
        _, results = load(store, warn=None)
        for row in results.to_dict("records"):
            sqnr = row.get("output_sqnr_db")
            sqnr_text = "—" if sqnr is None or sqnr != sqnr else f"{sqnr:.1f}"
            qt = row.get("quantized_tensors")
            qt_text = "—" if qt is None or qt != qt else str(int(qt))
            cell = "/".join(str(row["cell_id"]).split("/")[1:3])
            error = row.get("error")
            why = "" if not isinstance(error, str) else " ".join(error.split())[:160]
            print(f"| {case['name']} | {cell} | {row['status']} | {judged(row)} | {sqnr_text} "
                  f"| {qt_text} | {why} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
