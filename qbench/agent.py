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
import os
import signal
import sys
import time
import traceback
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from qbench.cache import CacheEntry, cached_file, read_meta, recorded_sha256, verify_file
from qbench.datasets.base import Dataset, open_dataset
from qbench.hostinfo import device_cpu
from qbench.inputs import (
    Inputs,
    InputSpec,
    as_inputs,
    batch_of,
    bind,
    binding_notes,
    chunks,
    count,
    describe_fed,
    fed_shapes,
    fields_of,
    first,
    load_npz,
    save_npz,
)
from qbench.params import file_sha256, stable_hash
from qbench.plan import Cell
from qbench.plugins import load_all, load_members
from qbench.transports.base import traceback_tail
from qbench.transports.subprocess import PARENT_PID_VAR

ARTIFACT_VERSION = 3  # bump when any artifact or its metadata changes for the same inputs
# 3: metadata holds the audit's read-back counts and stored packed_bytes (qbench.formats.audit)


def _array_sha(inputs: Inputs) -> str:
    import hashlib

    digest = hashlib.sha256()
    for name, x in inputs.items():
        digest.update(name.encode())
        digest.update(np.ascontiguousarray(x).tobytes())
    return digest.hexdigest()[:16]


def _inputs(dataset: Dataset, split: str, n: int, seed: int, outlier_fraction: float = 0.0,
            outlier_scale: float = 1.0) -> CacheEntry:  # fmt: skip
    """The cached .npz of a dataset's split (qbench.inputs.save_npz: named inputs, labels y,
    groups g)."""

    def build(tmp: Path) -> None:
        x, y = dataset.load(split, n, seed)  # type: ignore[arg-type]
        groups = dataset.groups(split, n, seed)  # type: ignore[arg-type]
        inputs = {k: (v.astype(np.float32) if v.dtype.kind == "f" else v)
                  for k, v in as_inputs(x).items()}  # fmt: skip
        if outlier_fraction > 0:
            # Real inputs scaled far out of range, as a glitching sensor or a bad crop would
            # give: min/max calibration stretches its ranges to them, robust calibrators don't.
            rng = np.random.default_rng(seed + 1)
            total = count(inputs)
            picked = rng.choice(total, size=max(1, round(outlier_fraction * total)),
                                replace=False)  # fmt: skip
            for x_in in inputs.values():
                if x_in.dtype.kind == "f":  # token ids and masks are not scaled
                    x_in[picked] *= outlier_scale
        with open(tmp, "wb") as fh:
            extra = {"y": y} if y is not None else {}
            if groups is not None:
                extra["g"] = groups  # which inputs were drawn together (accuracy intervals)
            save_npz(fh, inputs, **extra)

    # v3: named inputs (save_npz); the dataset's parameters, its files' fingerprint and the
    # model inputs it shapes itself after (synthetic) are part of the key
    key: dict[str, Any] = {"dataset": dataset.name, "params": dataset.params.model_dump(),
                           "files": dataset.fingerprint(), "split": split, "n": n, "seed": seed,
                           "v": 3}  # fmt: skip
    if dataset.model_inputs is not None:
        key["model_inputs"] = [s.to_json() for s in dataset.model_inputs]
    if outlier_fraction > 0:
        key["outliers"] = [outlier_fraction, outlier_scale]
    return cached_file("inputs", key, ".npz", build)


def _reference(
    loaded: Any, source: Any, eval_x: Inputs, eval_path: Path
) -> tuple[CacheEntry | None, str | None]:
    """The fp32 model's outputs (its first output) on the evaluation inputs, cached; (None, why)
    where there is no float model to compute them. A causal LM's are its next-token
    log-probabilities (qbench.measure.llm.reference_logprobs), [windows, T, vocab] float16."""
    why = source.quantized(source.params)
    if why:
        return None, (f"fidelity to fp32 empty: model {source.default_label(source.params)} is "
                      f"already quantized ({why}); there is no float reference")  # fmt: skip
    lm = source.output_kind(source.params) == "token_logits"

    def build(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            if lm:
                from qbench.measure.llm import reference_logprobs

                np.save(fh, reference_logprobs(loaded.module, first(eval_x)))
                return
            outputs = reference_outputs(loaded, eval_x, source.fixed_batch(source.params) or 32)
            np.save(fh, outputs.astype(np.float32))

    key = {"model_sha": loaded.sha256, "eval": eval_path.name, "v": 2, "logprobs": lm}
    return cached_file("reference", key, ".npy", build), None


def _probe(loaded: Any, source: Any, dataset: Dataset, spec: list[InputSpec]) -> CacheEntry:
    """A linear probe fitted on the fp32 encoder's embeddings of the train split (never
    evaluated), cached per model and inputs (qbench.measure.probe)."""
    from qbench.measure.probe import PROBE_TRAIN_SAMPLES, fit_probe, save_probe

    train = _inputs(dataset, "train", PROBE_TRAIN_SAMPLES, 0)

    def build(tmp: Path) -> None:  # the train inputs are read only when the probe is built
        x, extra = load_npz(train.path)
        embeddings = reference_outputs(loaded, bind(spec, x), 32)
        save_probe(tmp, fit_probe(embeddings, extra["y"]))

    key = {"model_sha": loaded.sha256, "train": train.path.name, "v": 1}
    return cached_file("probe", key, ".npz", build)


def reference_outputs(loaded: Any, x: Inputs, batch: int = 32) -> np.ndarray:
    """Output 0 of the unchanged fp32 model: the torch module, or the user's own ONNX / .tflite
    file run as it is, fed in batches its graph accepts (a fixed batch of 1 is the Model Zoo's
    norm): `batch` samples per call, the last call padded."""
    n = count(x)
    if loaded.has_module:
        import torch

        from qbench.backends.base import first_output

        # The module is built here on first use (lazily): built inside inference_mode, its
        # parameters would become inference tensors that a later export in this process
        # (litert-torch) cannot trace. no_grad keeps them ordinary tensors.
        module, outs = loaded.module, []
        with torch.no_grad():
            for part in chunks(x, batch):
                out = first_output(module(*(torch.as_tensor(v) for v in part.values())))
                outs.append(out.float().numpy())
        return np.concatenate(outs)[:n]
    if loaded.onnx_path is not None:
        import onnxruntime as ort

        session = ort.InferenceSession(str(loaded.onnx_path), providers=["CPUExecutionProvider"])
        outs = [np.asarray(session.run(None, part)[0]) for part in chunks(x, batch)]
        return np.concatenate(outs)[:n]
    from qbench.backends.litert import LitertSession

    session = LitertSession(loaded.tflite_path, threads=1)
    return np.concatenate([session.predict(part) for part in chunks(x, 1)])[:n]


def prepare(cell: Cell) -> dict[str, Any]:
    fam = load_all()
    started = time.perf_counter()
    source = fam.models.get(cell.model_plugin).bound(cell.model_params)
    model_params = source.params
    loaded = source.load(model_params)
    # the planner resolved `auto` to the model's own dataset: {name, params}
    dataset = open_dataset(cell.accuracy["dataset"], source.inputs(model_params))
    spec = source.inputs(model_params) or dataset.fields()
    eval_entry = _inputs(dataset, "eval", cell.accuracy["samples"], 0)
    eval_path = eval_entry.path
    eval_data = load_npz(eval_path)[0]
    eval_x = bind(spec, eval_data)

    def fp32_onnx() -> Path:
        from qbench.methods.export import fp32_onnx as export

        if loaded.tflite_path is not None:
            raise ValueError(f"model {cell.model} is a .tflite file; it has no ONNX graph")
        return export(loaded.sha256, loaded.module, spec, loaded.onnx_path)

    def fp32_tflite() -> Path:
        if loaded.tflite_path is not None:
            return loaded.tflite_path
        from qbench.methods.export_tflite import fp32_tflite as convert

        return convert(loaded.sha256, loaded.module, spec)

    try:
        reference_entry, reference_note = _reference(loaded, source, eval_x, eval_path)
    except Exception as exc:  # a graph that refuses the fed shapes: say which, and what to set
        raise _fed_error(exc, eval_x, source.fixed_batch(model_params) or 32, spec,
                         dataset) from exc  # fmt: skip
    reference_path = None if reference_entry is None else reference_entry.path
    output_kind = source.output_kind(model_params)
    probe_entry = None
    if output_kind == "embedding" and dataset.labelled and reference_entry is not None:
        probe_entry = _probe(loaded, source, dataset, spec)

    method = fam.methods.get(cell.method)()
    fmt = cell.artifact_format
    assert fmt is not None
    # `auto` settings decided for the CPU this stage runs on (the device's): they enter the
    # artifact's key and the row's described columns
    cpu_flags = device_cpu()[0]["device_cpu_flags"] or []
    params, cpu_notes = method.for_cpu(fmt, method.Params(**cell.method_params), cpu_flags)
    calib, calib_sha = None, None
    entries: list[CacheEntry] = []
    if method.needs_calibration(params):
        c = cell.calibration
        calib_entry = _inputs(dataset, "calib", c["samples"], c["seed"],
                              c["outlier_fraction"], c["outlier_scale"])  # fmt: skip
        calib_path = calib_entry.path
        entries.append(calib_entry)
        calib = bind(spec, load_npz(calib_path)[0])
        calib_sha = _array_sha(calib)

    from qbench.methods.base import MakeContext

    ctx = MakeContext(
        model_name=cell.model_plugin,
        source=source,
        model_params=model_params,
        model=loaded,
        input_shape=tuple(d or 1 for d in spec[0].shape),
        calib=None if calib is None or len(calib) != 1 else first(calib),
        fp32_onnx=fp32_onnx,
        fp32_tflite=fp32_tflite,
        inputs=spec,
        calib_inputs=calib,
    )
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
    elif fmt in ("openvino", "torch"):
        from qbench.methods.export_tflite import package_version

        # OpenVINO IR and NNCF's choices, torch.export programs (PT2E) and torchao's quantizer
        # change between releases: an upgrade rebuilds instead of reusing a stale artifact.
        tools = ("openvino", "nncf") if fmt == "openvino" else ("torch", "torchao")
        key["tools"] = {p: package_version(p) for p in tools}
    suffix = {"onnx": ".onnx", "torch": ".pt"}.get(fmt, f".{fmt}")

    def build(tmp: Path) -> dict[str, Any] | None:
        meta = method.make(fmt, params, ctx, tmp)
        if fmt == "onnx":
            _check_onnx_loads(tmp, cell.method)
        from qbench.formats.audit import audit
        from qbench.measure.fidelity import judged_output_note

        # read back what the artifact holds: a quantizing method's float-only file fails here
        # (never cached), and its counts and stored packed_bytes replace any prediction; with
        # several outputs, which one accuracy and fidelity judge (read once, kept in the meta)
        return {**(meta or {}), **audit(method, fmt, params, tmp),
                "judged_output_note": judged_output_note(tmp)}  # fmt: skip

    artifact_entry = cached_file("artifacts", key, suffix, build)
    artifact, cached = artifact_entry.path, artifact_entry.cached
    entries += [artifact_entry, eval_entry, *([reference_entry] if reference_entry else []),
                *([probe_entry] if probe_entry else [])]  # fmt: skip
    meta = read_meta(artifact)  # packed_bytes, layer_bits_json, artifact_notes, ...
    # a cache entry that failed its hash check was rebuilt: the row says so
    notes = [*cpu_notes, *meta.get("artifact_notes", []), *(e.note for e in entries if e.note)]
    if loaded.onnx_path is not None and fmt == "onnx" and cell.method != "original":
        # what normalising the user's graph changed (the cached graph's metadata)
        notes += read_meta(fp32_onnx()).get("notes", [])
    if output_kind == "token_logits" and loaded.has_module:
        macs, macs_note = _decode_step_macs(loaded), None
        notes.append("model_macs: one decode step (the Linear layers' multiply-accumulates "
                     "for one token), the unit of the latency and throughput columns")  # fmt: skip
    elif loaded.tflite_path is None:
        macs, macs_note = _model_macs(loaded.sha256, spec, fp32_onnx)
    else:
        macs, macs_note = None, "model_macs empty: MACs are counted on ONNX graphs, not .tflite"
    if macs_note:
        notes.append(macs_note)
    notes += binding_notes(spec, fields_of(eval_data))  # transposed, fixed and constant inputs
    judged = meta.pop("judged_output_note", None)  # read when the artifact was built
    if judged and dataset.measures_fidelity:
        notes.append(judged)
    if reference_note:
        notes.append(reference_note)
    meta["artifact_notes"] = notes
    artifact_sha = _entry_sha(artifact)
    described = {k: v for k, v in method.describe(fmt, params).items() if k != "notes"}
    return {
        **described,  # as decided for this CPU (for_cpu): bits_w of reduce_range=auto ...
        **meta,
        "model_macs": macs,
        "artifact_path": str(artifact),
        "artifact_cached": cached,
        "artifact_bytes": artifact.stat().st_size,
        "artifact_sha256": artifact_sha[:16],
        "prepare_s": time.perf_counter() - started,
        "eval_path": str(eval_path),
        # what measure checks the files against before it uses them (another process, maybe
        # another machine: a file changed in between is refused, never loaded)
        "file_sha256": {
            "artifact_path": artifact_sha,
            "eval_path": _entry_sha(eval_path),
            **({"reference_path": _entry_sha(reference_path)} if reference_path else {}),
            **({"probe_path": _entry_sha(probe_entry.path)} if probe_entry else {}),
        },
        "output_kind": output_kind,
        "probe_path": None if probe_entry is None else str(probe_entry.path),
        "model_inputs": [s.to_json() for s in spec],
        "reference_path": None if reference_path is None else str(reference_path),
        "model_weights": loaded.weights,
        "model_sha256": loaded.sha256,
        "method_sha256": stable_hash(method_key),
        "calib_sha256": calib_sha,
        "calib_samples": None if calib is None else count(calib),
        "accuracy_dataset": dataset.label,
        "labelled": dataset.labelled,
        "label_note": dataset.label_note,
        "measures_fidelity": dataset.measures_fidelity,
    }


def _fed_error(exc: Exception, x: Inputs, batch: int, spec: list[InputSpec],
               dataset: Dataset) -> ValueError:  # fmt: skip
    """The fp32 model's failure on the evaluation inputs in one line: the shapes it was fed
    and, where synthetic data chose the size of a dynamic axis, the parameter that sets it."""
    from qbench.datasets.synthetic import SyntheticParams

    why = " ".join(f"{type(exc).__name__}: {exc}".split())[:300]
    fed = describe_fed(chunks(x, batch)[0]) if count(x) else "none"
    hints = []
    p = dataset.params
    if isinstance(p, SyntheticParams):
        if any(d is None for s in spec if s.value is None for d in s.shape):
            hints.append(f"synthetic data sets every dynamic axis to dynamic_size="
                         f"{p.dynamic_size}: give the size the model needs (--data-param "
                         "dynamic_size=N, or dynamic_size in the synthetic dataset's "
                         "params)")  # fmt: skip
        drawn = [s.name for s in spec if not s.batched and s.value is None]
        if drawn:  # a sample rate drawn at random is no sample rate the model takes
            hints.append(f"{', '.join(drawn)} drawn at random: give a value the model takes "
                         "(--input NAME=VALUE, or the model's `constants`)")  # fmt: skip
    return ValueError(f"the fp32 model failed on inputs {fed}, {batch} per call ({why})"
                      + "".join(f"; {h}" for h in hints))  # fmt: skip


def _entry_sha(path: Path) -> str:
    """A cache entry's full SHA-256: the one recorded when it was built (cached_file checked
    it on this use), else read from the file (a user's own .tflite given as the artifact)."""
    return recorded_sha256(path) or file_sha256(str(path), 64)


def _check_onnx_loads(path: Path, method: str) -> None:
    """An ONNX artifact that ONNX Runtime refuses is never kept: the cell fails here, in
    prepare, with ORT's reason (an opset-9 graph given per-channel DequantizeLinear `axis`)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # ORT's Fail / InvalidGraph / NotImplemented
        reason = " ".join(str(exc).split())[:300]
        raise ValueError(f"{method} wrote an ONNX graph that ONNX Runtime cannot load: "
                         f"{reason}") from None  # fmt: skip


def _decode_step_macs(loaded: Any) -> int:
    """A causal LM's multiply-accumulates for one generated token: its Linear layers (the
    attention over the cache grows with the context and is left out, as llama-bench's
    per-token figures leave it out). Counted on the module (exporting a graph to count it
    would cost minutes and its size on disk for an LLM), cached per model: a cached cell's
    prepare builds no module."""

    def build(tmp: Path) -> None:
        import torch

        macs = sum(m.in_features * m.out_features for m in loaded.module.modules()
                   if isinstance(m, torch.nn.Linear))  # fmt: skip
        tmp.write_text(json.dumps({"macs": macs}))

    path, _ = cached_file("opcount", {"model_sha": loaded.sha256, "decode_step": 1}, ".json",
                          build)  # fmt: skip
    return int(json.loads(path.read_text())["macs"])


def _model_macs(
    model_sha: str, spec: list[InputSpec], fp32_onnx: Any
) -> tuple[int | None, str | None]:
    """MACs of one fp32 inference from the fp32 ONNX graph, cached per model; (None, why) when
    the graph cannot be exported or counted (the cell goes on without the figure)."""
    from qbench.measure.opcount import count_macs

    def build(tmp: Path) -> None:
        counted = count_macs(fp32_onnx())
        tmp.write_text(json.dumps({**counted, "inputs": inputs}))

    inputs = [s.to_json() for s in spec]
    try:
        path, _ = cached_file(
            "opcount", {"model_sha": model_sha, "inputs": inputs, "v": 2}, ".json", build
        )
        counted = json.loads(path.read_text())
    except Exception as exc:  # no op count is no reason to fail the cell
        return None, f"model_macs empty: op count failed ({type(exc).__name__}: {exc})"
    note = None
    if counted["uncounted"]:
        note = f"model_macs leaves out {len(counted['uncounted'])} node(s) of unknown shape"
    return int(counted["macs"]), note


def measure(cell: Cell, prepared: dict[str, Any]) -> dict[str, Any]:
    from qbench.measure.energy import EnergyRecorder
    from qbench.measure.fidelity import accuracy, fidelity
    from qbench.measure.guards import check_outputs
    from qbench.measure.latency import time_rounds
    from qbench.measure.load import LoadWindow
    from qbench.measure.memory import peak_rss_mb
    from qbench.measure.stats import summarize

    # only this cell's own members: the process holds one runtime (see load_members)
    fam = load_members(cell.members) if cell.members else load_all()
    backend = fam.backends.get(cell.backend)()
    params = backend.Params(**cell.backend_params)
    spec = [InputSpec.from_json(s) for s in prepared["model_inputs"]]
    for key, sha in (prepared.get("file_sha256") or {}).items():
        verify_file(Path(prepared[key]), sha)  # IntegrityError: the cell fails, nothing loads
    loaded_x, extra = load_npz(prepared["eval_path"])
    eval_x, labels, groups = bind(spec, loaded_x), extra.get("y"), extra.get("g")
    started = time.perf_counter()
    session = backend.open(
        Path(prepared["artifact_path"]), cell.artifact_format, cell.threads, params
    )
    load_s = time.perf_counter() - started
    if prepared.get("output_kind") == "token_logits":
        return _measure_lm(cell, prepared, backend, session, eval_x, load_s)
    reference = None
    if prepared.get("reference_path"):
        reference = np.load(prepared["reference_path"])

    m = cell.measurement
    fed = batch_of(eval_x, cell.batch)
    run = session.runner(fed)
    energy = EnergyRecorder(cell.power, cell.device, cell.device_kind)
    try:
        # Idle baseline first, then the warm-up, so the timed loop starts exactly as it would
        # without a meter; the meter samples the timed rounds only (time_rounds is untouched).
        energy.idle()
        for _ in range(m["warmup"]):
            run()
        with energy.window(), LoadWindow() as load:
            rounds = time_rounds(
                run, 0, m["min_iters"], m["min_seconds"], m["repeats"], m["max_iters"]
            )
    finally:
        energy.close()
    samples = [s for r in rounds for s in r]
    power = energy.columns(len(samples) * cell.batch)
    stats = summarize(samples)

    # A session that computes no outputs (the null backend) returns None: its accuracy and
    # fidelity columns stay empty, with the reason in the notes. The last batch is padded to
    # the cell's batch (a graph of a fixed batch takes no other) and the padding dropped.
    parts = chunks(eval_x, cell.batch)
    head = session.predict(parts[0])
    outputs = None
    if head is not None:
        outputs = np.concatenate([head] + [session.predict(p) for p in parts[1:]])
        outputs = outputs[: count(eval_x)]
        # NaN/Inf outputs or labels no output class can match fail the cell with the reason:
        # a metric computed from them would be stored as a plausible ok result
        check_outputs(outputs, reference, labels, prepared.get("output_kind"))
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
        "input_shapes_json": json.dumps(fed_shapes(fed)),  # what each input was fed at
        "peak_rss_mb": peak_rss_mb(),  # read before inspect(), which opens a second session
        **power,
        **load.columns(),  # what else ran meanwhile: ratios across unequal loads get flagged
    }
    notes: list[str] = energy.row_notes(power)
    if outputs is None:
        notes.append(f"accuracy empty: the {cell.backend} backend computes no outputs")
    elif not prepared.get("measures_fidelity", True):
        notes.append(f"accuracy and fidelity empty: {prepared['label_note']}")
    else:
        row["accuracy_samples"] = count(eval_x)
        scores, embedding = None, prepared.get("output_kind") == "embedding"
        if embedding and prepared.get("probe_path"):
            from functools import partial

            from qbench.measure.probe import load_probe, probe_scores

            probe = load_probe(prepared["probe_path"])
            scores = partial(probe_scores, probe)
            notes.append(
                f"embeddings: top1 and fp32_agreement through a linear probe fitted on the fp32 "
                f"encoder's embeddings of {int(probe['train_samples'])} train-split inputs "
                f"(train accuracy {float(probe['train_accuracy']):.3f}), never evaluated"
            )
        if reference is not None:  # else prepare's note says why
            if embedding and scores is None:
                notes.append(
                    "fp32_agreement empty: an embedding has no top-1 class (cosine columns "
                    "compare it with fp32); labelled data would add a probe"
                )
                row.update(fidelity(reference, outputs, groups, notes, agreement=False))
            else:
                row.update(fidelity(reference, outputs, groups, notes, scores))
        if labels is not None and embedding and scores is None:
            notes.append("top1 empty: an embedding has no classes, and without an fp32 "
                         "reference there is no probe to give it some")  # fmt: skip
        elif labels is not None:
            # the fp32 outputs of the same inputs give the paired top1_change
            ref_scores = None if reference is None or scores is None else scores(reference)
            row.update(accuracy(outputs if scores is None else scores(outputs), labels, groups,
                                notes, reference if scores is None else ref_scores))  # fmt: skip
        else:
            notes.append(prepared["label_note"])
    return _finish(row, notes, session)


def _finish(row: dict[str, Any], notes: list[str], session: Any) -> dict[str, Any]:
    """What every measured row ends with: what the session says ran (inspect), and the CPU."""
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


def _measure_lm(cell: Cell, prepared: dict[str, Any], backend: Any, session: Any,
                eval_x: Inputs, load_s: float) -> dict[str, Any]:  # fmt: skip
    """A causal LM's row: prefill and decode speed, then perplexity, KL divergence and top-1
    agreement against the fp32 reference (qbench.measure.llm)."""
    from qbench.measure.energy import EnergyRecorder
    from qbench.measure.llm import measure_quality, measure_speed, open_reference, prompts
    from qbench.measure.load import LoadWindow
    from qbench.measure.memory import peak_rss_mb

    windows = first(eval_x)
    m = cell.measurement
    by_length, notes = prompts(windows, m.get("prompt_lengths") or [128])
    if not by_length:
        raise ValueError("no prompt length fits the eval text: " + "; ".join(notes))
    # the longest sequence one round reaches: the longest prompt, the warm-up and decode steps,
    # or a whole eval window fed token by token (measure_quality's decode pass)
    lm = session.lm(max(max(by_length) + m["decode_tokens"] + 8, windows.shape[1]))
    energy = EnergyRecorder(cell.power, cell.device, cell.device_kind)
    try:
        energy.idle()
        # what else ran meanwhile, as for every timed cell: ratios across loads get flagged
        with energy.window(), LoadWindow() as load:
            speed, speed_notes = measure_speed(lm, by_length, m)
    finally:
        energy.close()
    power = energy.columns(len(speed["latency_samples_ms"]))
    row: dict[str, Any] = {
        "runtime_version": backend.version(),
        "load_s": load_s,
        "warmup_iters": m["warmup"],
        **speed,
        # after timing, before the quality pass (its [T, vocab] log-probabilities are not the
        # cell's working set)
        "peak_rss_mb": peak_rss_mb(),
        **power,
        **load.columns(),
    }
    notes += speed_notes + energy.row_notes(power)
    quality, quality_notes = measure_quality(
        lm, windows, open_reference(prepared.get("reference_path"))
    )
    row.update(quality)
    notes += quality_notes
    return _finish(row, notes, session)


def _end_group(*_: Any) -> None:
    """End this stage and everything it started: its process group when it leads one (the
    subprocess transport starts each stage in its own session), else itself."""
    if os.getpgrp() == os.getpid():
        os.killpg(os.getpgrp(), signal.SIGKILL)
    os.kill(os.getpid(), signal.SIGKILL)


def die_with_parent() -> None:
    """A stage runs in its own session (so a timeout can kill its whole group), which a Ctrl-C
    or kill -9 of qbench does not reach: ask the kernel for SIGTERM when the parent dies
    (Linux PR_SET_PDEATHSIG) and end the group on it. A parent already gone ends it now."""
    parent = os.environ.get(PARENT_PID_VAR)
    if not parent:
        return
    signal.signal(signal.SIGTERM, _end_group)
    armed = False
    if sys.platform.startswith("linux"):
        import ctypes

        try:
            libc = ctypes.CDLL(None, use_errno=True)
            armed = libc.prctl(1, int(signal.SIGTERM), 0, 0, 0) == 0  # PR_SET_PDEATHSIG = 1
        except (OSError, AttributeError):
            armed = False
    if os.getppid() != int(parent):
        _end_group()
    if not armed:  # no prctl: look once a second (a sleeping thread costs no measured time)
        import threading

        def watch() -> None:
            while os.getppid() == int(parent):
                time.sleep(1.0)
            _end_group()

        threading.Thread(target=watch, daemon=True).start()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    die_with_parent()
    stage, cell_path, out_path = args[0], Path(args[1]), Path(args[2])
    warnings.simplefilter("ignore")  # torch.ao deprecation notes on every call, exporter chatter
    spec = json.loads(cell_path.read_text())
    try:
        if stage == "prepare":
            result = prepare(Cell.from_json(spec))
        elif stage == "measure":
            prepared = json.loads((cell_path.parent / "prepared.json").read_text())
            result = measure(Cell.from_json(spec), prepared)
        elif stage == "confirm":  # the file holds two cells and their prepare results
            from qbench.confirm.stage import confirm

            result = confirm(spec)
        else:
            raise SystemExit(f"unknown stage {stage!r}")
        result["status"] = "ok"
        code = 0
    except Exception as exc:  # the cell failed; the run goes on
        result = {
            "status": "failed",
            "error": f"{type(exc).__name__}: {exc}".strip(),
            "traceback": traceback_tail(traceback.format_exc()),
        }
        code = 1
    tmp = out_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, default=str))
    tmp.replace(out_path)
    return code


if __name__ == "__main__":
    sys.exit(main())
