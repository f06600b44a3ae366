"""Expand a suite into a plan: every cell of the matrix, runnable or skipped with a reason."""

from __future__ import annotations

import fnmatch
import itertools
from dataclasses import asdict, dataclass, field
from typing import Any

from pydantic import ValidationError

from qbench.devices import Device, resolve_devices
from qbench.measure.energy import plan_power
from qbench.plugins import Families, load_all
from qbench.registry import RegistryError
from qbench.suite.loader import SuiteSource, first_error
from qbench.suite.schema import MemberRef, Rule, Suite


@dataclass(frozen=True)
class Cell:
    """One point of the matrix, as plain data that crosses process boundaries as JSON."""

    cell_id: str
    suite: str
    model: str  # label shown in rows (default: the registered name)
    model_plugin: str
    model_params: dict[str, Any]
    method: str
    method_params: dict[str, Any]
    backend: str
    backend_params: dict[str, Any]
    device: str
    device_kind: str
    transport: str
    transport_params: dict[str, Any]
    batch: int
    threads: int
    artifact_format: str | None
    measurement: dict[str, Any]
    accuracy: dict[str, Any]
    calibration: dict[str, Any]
    skip_reason: str | None = None
    # Power and energy (qbench.measure.energy.plan_power): mode, meter and its parameters,
    # cadence, idle seconds, TDP. None (cells written before it existed): measure, auto meter.
    power: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Cell:
        return cls(**data)


@dataclass
class Plan:
    cells: list[Cell] = field(default_factory=list)
    excluded: int = 0

    @property
    def runnable(self) -> list[Cell]:
        return [c for c in self.cells if c.skip_reason is None]

    @property
    def skipped(self) -> list[Cell]:
        return [c for c in self.cells if c.skip_reason is not None]


def expand_params(params: dict[str, Any]) -> list[dict[str, Any]]:
    """Cartesian product over list values: {bits: [4, 8], sym: true} -> two dicts."""
    keys = list(params)
    values = [v if isinstance(v, list) else [v] for v in params.values()]
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*values)]


def _params_label(params: dict[str, Any]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(params.items()))


def _matches(rule: Rule, values: dict[str, Any]) -> bool:
    for key, pattern in rule.model_dump(exclude_none=True).items():
        patterns = pattern if isinstance(pattern, list) else [pattern]
        if not any(fnmatch.fnmatch(str(values[key]), str(p)) for p in patterns):
            return False
    return True


def _resolve_members(
    refs: list[MemberRef], family: str, fam: Families, source: SuiteSource
) -> list[tuple[MemberRef, Any, dict[str, Any], Any]]:
    """(ref, member instance, params dict, typed params) for each expanded member entry."""
    registry = fam.by_name(family)
    out = []
    for i, ref in enumerate(refs):
        try:
            member = registry.get(ref.name)()
        except RegistryError as exc:
            raise source.error(
                [family, i, "name"]
                if source.line_of([family, i, "name"]) != source.line_of([family, i])
                else [family, i],
                str(exc),
            ) from None
        for params in expand_params(ref.params):
            try:
                typed = member.Params(**params)
            except ValidationError as exc:
                raise first_error(source, exc, prefix=[family, i, "params"]) from None
            out.append((ref, member, typed.model_dump(), typed))
    return out


def non_default(typed: Any) -> dict[str, Any]:
    """Parameters that differ from their defaults: what names a cell."""
    defaults = {
        k: f.get_default(call_default_factory=True)
        for k, f in type(typed).model_fields.items()
        if not f.is_required()
    }
    return {k: v for k, v in typed.model_dump().items() if k not in defaults or defaults[k] != v}


def _cell_id(
    model: str,
    method: str,
    mparams: dict[str, Any],
    backend: str,
    bparams: dict[str, Any],
    device: str,
    batch: int,
    threads: int,
    outliers: float = 0.0,
) -> str:
    method_part = f"{method}[{_params_label(mparams)}]" if mparams else method
    if outliers:
        method_part += f"{{outliers={outliers:g}}}"
    backend_part = f"{backend}[{_params_label(bparams)}]" if bparams else backend
    return f"{model}/{method_part}/{backend_part}/{device}/b{batch}/t{threads}"


def _skip_reason(
    device: Device,
    backend_name: str,
    backend: Any,
    method: Any,
    typed: Any,
    source: Any,
    fmt_holder: list[str | None],
) -> str | None:
    if device.backends and backend_name not in device.backends:
        return (
            f"device {device.name} has no backend {backend_name} "
            f"(it has: {', '.join(device.backends)})"
        )
    # Which packages and libraries a backend finds is a fact of the host it runs on: for a
    # device reached by ssh or adb, the device file's `backends:` list speaks for it, and a
    # backend missing there fails that cell's measure stage with the device's own reason.
    why = backend.unavailable() if device.transport.name == "subprocess" else None
    if why:
        return f"backend {backend_name} {why}"
    formats = [f for f in method.produces if f in backend.loads]
    if not formats:
        return (
            f"method {method.name} produces {'/'.join(method.produces)} artifacts; "
            f"backend {backend_name} loads {'/'.join(backend.loads)}"
        )
    reasons = []
    for fmt in formats:
        reason = method.unsupported(fmt, typed, source)
        if reason is None:
            fmt_holder[0] = fmt
            return None
        reasons.append(reason)
    return "; ".join(reasons)


def build_plan(suite: Suite, source: SuiteSource, families: Families | None = None) -> Plan:
    fam = families or load_all()
    devices = resolve_devices(suite.devices, source)
    models = _resolve_members(suite.models, "models", fam, source)
    methods = _resolve_members(suite.methods, "methods", fam, source)
    backends = _resolve_members(suite.backends, "backends", fam, source)
    if suite.accuracy.dataset != "auto" and suite.accuracy.dataset not in fam.datasets:
        raise source.error(
            ["accuracy", "dataset"],
            f"unknown dataset {suite.accuracy.dataset!r} (known: auto, {', '.join(fam.datasets)})",
        )
    # A device whose transport is not installed (ssh, adb, ... from a plugin package) keeps
    # its cells in the plan, skipped with the reason, like a backend that is not installed.
    no_transport = {
        device.name: f"transport {device.transport.name} is not installed "
        f"(installed: {', '.join(fam.transports.names()) or 'none'})"
        for device in devices
        if device.transport.name not in fam.transports
    }

    powers = {
        device.name: plan_power(suite.power, device, d_index, fam, source)
        for d_index, device in enumerate(devices)
    }

    plan = Plan()
    seen: set[str] = set()
    for device, (mref, msrc, mparams, _), (qref, qm, qparams, qtyped), (
        bref,
        backend,
        bparams,
        btyped,
    ), batch, threads in itertools.product(
        devices, models, methods, backends, suite.scenario.batch, suite.scenario.threads
    ):
        model_label = mref.label or mref.name
        method_label = qref.label or qref.name
        values = {
            "model": model_label,
            "method": method_label,
            "backend": bref.name,
            "device": device.name,
            "batch": batch,
            "threads": threads,
        }
        if (suite.include and not any(_matches(r, values) for r in suite.include)) or any(
            _matches(r, values) for r in suite.exclude
        ):
            plan.excluded += 1
            continue
        calibrated = qm.needs_calibration(qtyped)
        fractions = suite.calibration.outlier_fraction if calibrated else [0.0]
        for fraction in fractions:
            cell_id = _cell_id(model_label, method_label, non_default(qtyped), bref.name,
                               non_default(btyped), device.name, batch, threads,
                               fraction)  # fmt: skip
            if cell_id in seen:
                continue  # the same cell listed twice in the suite
            seen.add(cell_id)
            fmt: list[str | None] = [None]
            reason = no_transport.get(device.name) or _skip_reason(
                device, bref.name, backend, qm, qtyped, msrc, fmt
            )
            calibration = {**suite.calibration.model_dump(), "outlier_fraction": fraction}
            plan.cells.append(
                Cell(
                    cell_id=cell_id,
                    suite=suite.name,
                    model=model_label,
                    model_plugin=mref.name,
                    model_params=mparams,
                    method=qref.name,
                    method_params=qparams,
                    backend=bref.name,
                    backend_params=bparams,
                    device=device.name,
                    device_kind=device.kind,
                    transport=device.transport.name,
                    transport_params=dict(device.transport.params),
                    batch=batch,
                    threads=threads,
                    artifact_format=fmt[0],
                    measurement=suite.measurement.model_dump(),
                    accuracy=suite.accuracy.model_dump(),
                    calibration=calibration,
                    skip_reason=reason,
                    power=powers[device.name],
                )
            )
    return plan
