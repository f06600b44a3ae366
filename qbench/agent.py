"""The agent: runs one stage of one cell in its own process and writes one JSON result.

    python -m qbench.agent prepare CELL.json OUT.json   build (or fetch) artifact and inputs
    python -m qbench.agent measure CELL.json OUT.json   load, time, evaluate (reads prepare's)

The two stages are separate processes so that the measured process holds only the runtime and
its session: its peak memory (VmHWM) is the cell's own, not the exporter's or quantizer's.
An exception is written into OUT as {"status": "failed", "error": ...}; a crash leaves no OUT
and the parent reports the signal.
"""

from __future__ import annotations

import json
import sys
import time
import traceback
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from qbench.cache import cached_file, read_meta
from qbench.hostinfo import device_cpu
from qbench.params import file_sha256, stable_hash
from qbench.plan import Cell
from qbench.plugins import load_all

ARTIFACT_VERSION = 2  # bump when any artifact or its metadata changes for the same inputs


def _array_sha(x: np.ndarray) -> str:
    import hashlib

    return hashlib.sha256(np.ascontiguousarray(x).tobytes()).hexdigest()[:16]


def _inputs(dataset_name: str, split: str, n: int, seed: int, outlier_fraction: float = 0.0,
            outlier_scale: float = 1.0) -> tuple[Path, bool]:  # fmt: skip
    fam = load_all()

    def build(tmp: Path) -> None:
        dataset = fam.datasets.get(dataset_name)()
        x, y = dataset.load(split, n, seed)  # type: ignore[arg-type]
        groups = dataset.groups(split, n, seed)  # type: ignore[arg-type]
        x = x.astype(np.float32)
        if outlier_fraction > 0:
            # Real inputs scaled far out of range, as a glitching sensor or a bad crop would
            # give: min/max calibration stretches its ranges to them, robust calibrators don't.
            rng = np.random.default_rng(seed + 1)
            count = max(1, round(outlier_fraction * len(x)))
            picked = rng.choice(len(x), size=count, replace=False)
            x[picked] *= outlier_scale
        with open(tmp, "wb") as fh:
            extra = {"y": y} if y is not None else {}
            if groups is not None:
                extra["g"] = groups  # which inputs were drawn together (accuracy intervals)
            np.savez(fh, x=x, **extra)

    # v2: the file holds `g`, the dataset's groups, where it has any
    key = {"dataset": dataset_name, "split": split, "n": n, "seed": seed, "v": 2}
    if outlier_fraction > 0:
        key["outliers"] = [outlier_fraction, outlier_scale]
    return cached_file("inputs", key, ".npz", build)


def prepare(cell: Cell) -> dict[str, Any]:
    import torch

    fam = load_all()
    started = time.perf_counter()
    source = fam.models.get(cell.model_plugin)()
    model_params = source.Params(**cell.model_params)
    loaded = source.load(model_params)
    dataset_name = cell.accuracy["dataset"]
    if dataset_name == "auto":
        dataset_name = source.dataset_for(model_params)
    dataset = fam.datasets.get(dataset_name)()
    eval_path, _ = _inputs(dataset_name, "eval", cell.accuracy["samples"], 0)
    eval_x = np.load(eval_path)["x"]

    def fp32_onnx() -> Path:
        from qbench.methods.export import fp32_onnx as export

        return export(loaded.sha256, loaded.module, tuple(dataset.input_shape), loaded.onnx_path)

    def fp32_tflite() -> Path:
        from qbench.methods.export_tflite import fp32_tflite as convert

        return convert(loaded.sha256, loaded.module, tuple(dataset.input_shape))

    def build_reference(tmp: Path) -> None:
        if loaded.module is not None:
            with torch.inference_mode():
                out = torch.cat(
                    [
                        loaded.module(torch.as_tensor(eval_x[i : i + 32]))
                        for i in range(0, len(eval_x), 32)
                    ]
                ).numpy()
        else:  # an ONNX-file model is its own reference, run by ONNX Runtime without changes
            import onnxruntime as ort

            session = ort.InferenceSession(
                str(loaded.onnx_path), providers=["CPUExecutionProvider"]
            )
            name = session.get_inputs()[0].name
            out = session.run(None, {name: eval_x})[0]
        with open(tmp, "wb") as fh:
            np.save(fh, out.astype(np.float32))

    reference_path, _ = cached_file(
        "reference", {"model_sha": loaded.sha256, "eval": eval_path.name}, ".npy", build_reference
    )

    method = fam.methods.get(cell.method)()
    params = method.Params(**cell.method_params)
    calib, calib_sha = None, None
    if method.needs_calibration(params):
        c = cell.calibration
        calib_path, _ = _inputs(dataset_name, "calib", c["samples"], c["seed"],
                                c["outlier_fraction"], c["outlier_scale"])  # fmt: skip
        calib = np.load(calib_path)["x"]
        calib_sha = _array_sha(calib)

    from qbench.methods.base import MakeContext

    ctx = MakeContext(
        model_name=cell.model_plugin,
        source=source,
        model_params=model_params,
        model=loaded,
        input_shape=tuple(dataset.input_shape),
        calib=calib,
        fp32_onnx=fp32_onnx,
        fp32_tflite=fp32_tflite,
    )
    fmt = cell.artifact_format
    assert fmt is not None
    method_key = {"method": cell.method, "params": params.model_dump()}
    key = {
        "model_sha": loaded.sha256,
        **method_key,
        "method_version": method.version,
        "format": fmt,
        "calib": calib_sha,
        "v": ARTIFACT_VERSION,
    }
    if fmt in ("tflite", "edgetpu"):
        from qbench.methods._litert_quant import LITERT_QUANT_VERSION
        from qbench.methods.export_tflite import package_version

        # The LiteRT converter and quantizer change their output between releases.
        key["tools"] = {p: package_version(p) for p in ("litert-torch", "ai-edge-quantizer")}
        key["litert_quant"] = LITERT_QUANT_VERSION
    suffix = {"onnx": ".onnx", "torch": ".pt"}.get(fmt, f".{fmt}")
    artifact, cached = cached_file(
        "artifacts", key, suffix, lambda tmp: method.make(fmt, params, ctx, tmp)
    )
    meta = read_meta(artifact)  # packed_bytes, layer_bits_json, artifact_notes, ...
    macs, macs_note = _model_macs(loaded.sha256, tuple(dataset.input_shape), fp32_onnx)
    if macs_note:
        meta["artifact_notes"] = [*meta.get("artifact_notes", []), macs_note]
    return {
        **meta,
        "model_macs": macs,
        "artifact_path": str(artifact),
        "artifact_cached": cached,
        "artifact_bytes": artifact.stat().st_size,
        "artifact_sha256": file_sha256(str(artifact)),
        "prepare_s": time.perf_counter() - started,
        "eval_path": str(eval_path),
        "reference_path": str(reference_path),
        "model_weights": loaded.weights,
        "model_sha256": loaded.sha256,
        "method_sha256": stable_hash(method_key),
        "calib_sha256": calib_sha,
        "calib_samples": None if calib is None else len(calib),
        "accuracy_dataset": dataset_name,
        "labelled": dataset.labelled,
        "label_note": dataset.label_note,
    }


def _model_macs(
    model_sha: str, input_shape: tuple[int, ...], fp32_onnx: Any
) -> tuple[int | None, str | None]:
    """MACs of one fp32 inference from the fp32 ONNX graph, cached per model; (None, why) when
    the graph cannot be exported or counted (the cell goes on without the figure)."""
    from qbench.measure.opcount import count_macs

    def build(tmp: Path) -> None:
        counted = count_macs(fp32_onnx())
        tmp.write_text(json.dumps({**counted, "input_shape": list(input_shape)}))

    try:
        path, _ = cached_file(
            "opcount", {"model_sha": model_sha, "shape": list(input_shape), "v": 1}, ".json",
            build,
        )  # fmt: skip
        counted = json.loads(path.read_text())
    except Exception as exc:  # no op count is no reason to fail the cell
        return None, f"model_macs empty: op count failed ({type(exc).__name__}: {exc})"
    note = None
    if counted["uncounted"]:
        note = f"model_macs leaves out {len(counted['uncounted'])} node(s) of unknown shape"
    return int(counted["macs"]), note


def _batch_of(x: np.ndarray, batch: int) -> np.ndarray:
    reps = -(-batch // len(x))
    return (
        np.ascontiguousarray(np.concatenate([x] * reps)[:batch])
        if reps > 1
        else np.ascontiguousarray(x[:batch])
    )


def measure(cell: Cell, prepared: dict[str, Any]) -> dict[str, Any]:
    from qbench.measure.energy import EnergyRecorder
    from qbench.measure.fidelity import accuracy, fidelity
    from qbench.measure.latency import time_rounds
    from qbench.measure.memory import peak_rss_mb
    from qbench.measure.stats import summarize

    fam = load_all()
    backend = fam.backends.get(cell.backend)()
    params = backend.Params(**cell.backend_params)
    data = np.load(prepared["eval_path"])
    eval_x, labels, groups = data["x"], data.get("y"), data.get("g")
    reference = np.load(prepared["reference_path"])

    started = time.perf_counter()
    session = backend.open(
        Path(prepared["artifact_path"]), cell.artifact_format, cell.threads, params
    )
    load_s = time.perf_counter() - started

    m = cell.measurement
    run = session.runner(_batch_of(eval_x, cell.batch))
    energy = EnergyRecorder(cell.power, cell.device, cell.device_kind)
    try:
        # Idle baseline first, then the warm-up, so the timed loop starts exactly as it would
        # without a meter; the meter samples the timed rounds only (time_rounds is untouched).
        energy.idle()
        for _ in range(m["warmup"]):
            run()
        with energy.window():
            rounds = time_rounds(
                run, 0, m["min_iters"], m["min_seconds"], m["repeats"], m["max_iters"]
            )
    finally:
        energy.close()
    samples = [s for r in rounds for s in r]
    power = energy.columns(len(samples) * cell.batch)
    stats = summarize(samples)

    # A session that computes no outputs (the null backend) returns None: its accuracy and
    # fidelity columns stay empty, with the reason in the notes.
    first = session.predict(np.ascontiguousarray(eval_x[: cell.batch]))
    outputs = None
    if first is not None:
        outputs = np.concatenate(
            [first]
            + [
                session.predict(np.ascontiguousarray(eval_x[i : i + cell.batch]))
                for i in range(cell.batch, len(eval_x), cell.batch)
            ]
        )
    row: dict[str, Any] = {
        "runtime_version": backend.version(),
        "load_s": load_s,
        "warmup_iters": m["warmup"],
        "iters": len(samples),
        "repeats": len(rounds),
        **stats,
        "latency_repeat_p50s_ms": [float(np.median(r)) for r in rounds],
        "latency_samples_ms": samples,
        "throughput_ips": cell.batch * 1000.0 / stats["latency_mean_ms"],
        "peak_rss_mb": peak_rss_mb(),  # read before inspect(), which opens a second session
        **power,
    }
    notes: list[str] = energy.row_notes(power)
    if outputs is None:
        notes.append(f"accuracy empty: the {cell.backend} backend computes no outputs")
    else:
        row["accuracy_samples"] = len(eval_x)
        row.update(fidelity(reference, outputs, groups))
        if labels is not None:
            row.update(accuracy(outputs, labels, groups))
        else:
            notes.append(prepared["label_note"])
    inspected = session.inspect()
    notes += inspected.pop("notes", [])
    row.update(inspected)
    # The CPU this process runs on: the device's own over ssh/adb, not the host that planned.
    cpu, cpu_note = device_cpu()
    row.update(cpu)
    if cpu_note:
        notes.append(cpu_note)
    row["notes"] = notes
    return row


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    stage, cell_path, out_path = args[0], Path(args[1]), Path(args[2])
    warnings.simplefilter("ignore")  # torch.ao deprecation notes on every call, exporter chatter
    cell = Cell.from_json(json.loads(cell_path.read_text()))
    try:
        if stage == "prepare":
            result = prepare(cell)
        elif stage == "measure":
            prepared = json.loads((cell_path.parent / "prepared.json").read_text())
            result = measure(cell, prepared)
        else:
            raise SystemExit(f"unknown stage {stage!r}")
        result["status"] = "ok"
        code = 0
    except Exception as exc:  # the cell failed; the run goes on
        result = {
            "status": "failed",
            "error": f"{type(exc).__name__}: {exc}".strip(),
            "traceback": traceback.format_exc(),
        }
        code = 1
    tmp = out_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, default=str))
    tmp.replace(out_path)
    return code


if __name__ == "__main__":
    sys.exit(main())
