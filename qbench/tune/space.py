"""What `qbench tune` searches: methods with grids of their parameters, backends with theirs,
threads; and the suites of its stages, built from the user's suite or model."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

# Methods a runtime can execute natively (a simulated method is never a speed-up), each with
# the parameters worth trying. Cells a backend cannot run are planned and skipped with the
# planner's reason, as in any suite.
DEFAULT_METHODS: dict[str, dict[str, list[Any]]] = {
    "fp32": {},
    "fp16": {},
    "bf16": {},
    "dynamic_int8": {"weight_type": ["uint8", "int8"], "per_channel": [False, True]},
    "static_int8": {"calibrator": ["minmax", "percentile"], "per_channel": [True, False]},
    "weight_only": {"bits": [8, 4], "accuracy_level": [4]},
    "nncf_int8": {"preset": ["performance", "mixed"]},
    "torchao": {"scheme": ["int8_dynamic", "int4_weight"]},
}
# Backends with the parameters worth trying (the GPU and EdgeTPU ones are skipped with their
# reason where the device lacks them).
DEFAULT_BACKENDS: dict[str, dict[str, list[Any]]] = {
    "onnxruntime": {},
    "torch": {"compile": [None, True]},
    "litert": {},
    "openvino": {},
    "onnxruntime_gpu": {},
    "torch_cuda": {},
    "edgetpu": {},
}
SCREEN_MEASUREMENT = {"warmup": 2, "min_iters": 10, "min_seconds": 0.2, "repeats": 1}


def members(names: list[str] | None, defaults: dict[str, dict[str, list[Any]]],
            known: list[str], flag: str) -> list[dict[str, Any]]:  # fmt: skip
    """Suite entries ({name, params}) of the chosen members with their default grids."""
    chosen = names or list(defaults)
    unknown = [n for n in chosen if n not in known]
    if unknown:
        raise ValueError(f"{flag}: no such member {unknown[0]!r} (known: {', '.join(known)})")
    return [{"name": n, "params": dict(defaults.get(n, {}))} for n in chosen]


def stage_suite(base: dict[str, Any], name: str, methods: list[dict[str, Any]],
                backends: list[dict[str, Any]], threads: list[int],
                samples: int | None, screen: bool) -> dict[str, Any]:  # fmt: skip
    """A suite of one tune stage: the base suite's models, data, device and settings, the
    search space's methods and backends; the screen stage on `samples` inputs, timed briefly."""
    suite = copy.deepcopy(base)
    for key in ("include", "exclude", "report", "output"):
        suite.pop(key, None)
    suite["name"] = name
    suite["methods"] = methods
    suite["backends"] = backends
    scenario = dict(suite.get("scenario") or {})
    scenario["threads"] = threads
    scenario["batch"] = [_first(scenario.get("batch"), 1)]
    suite["scenario"] = scenario
    accuracy = dict(suite.get("accuracy") or {})
    if samples is not None:
        accuracy["samples"] = samples
    suite["accuracy"] = accuracy
    if screen:
        suite["measurement"] = {**dict(suite.get("measurement") or {}), **SCREEN_MEASUREMENT}
    return suite


def winner_suite(base: dict[str, Any], cell: Any, source_dir: Path) -> str:
    """A suite file (YAML text) that runs the winning cell alone, as tune measured it: `qbench
    run` on it rebuilds the same artifact (from the cache, or anew). Its model parameters are
    the planner's (paths resolved) and its device a file path where one describes it, so the
    file works from any folder."""
    from qbench.devices import REPO_DEVICES, find_device_file

    suite = copy.deepcopy(base)
    for key in ("include", "exclude", "report", "output"):
        suite.pop(key, None)
    suite["name"] = f"{base['name']}-winner"
    suite["description"] = f"qbench tune's pick: {cell.cell_id}"
    suite["models"] = [{"name": cell.model_plugin, "label": cell.model,
                        "params": cell.model_params}]  # fmt: skip
    suite["methods"] = [{"name": cell.method, "params": cell.method_params}]
    suite["backends"] = [{"name": cell.backend, "params": cell.backend_params}]
    device_file = find_device_file(cell.device, source_dir)
    shipped = device_file is None or device_file.resolve().parent == REPO_DEVICES.resolve()
    suite["devices"] = [cell.device if shipped else str(device_file.resolve())]
    suite["scenario"] = {"batch": [cell.batch], "threads": [cell.threads]}
    return yaml.safe_dump(suite, sort_keys=False)


def _first(value: Any, default: Any) -> Any:
    if isinstance(value, list):
        return value[0] if value else default
    return default if value is None else value
