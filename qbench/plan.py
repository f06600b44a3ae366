"""Expand a suite into a plan: every cell of the matrix, runnable or skipped with a reason."""

from __future__ import annotations

import fnmatch
import functools
import itertools
import math
import types
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from qbench.devices import Device, resolve_devices
from qbench.inputs import InputSpec, binding
from qbench.measure.energy import plan_power
from qbench.params import CheckError
from qbench.plugins import Families, load_all
from qbench.registry import RegistryError
from qbench.suite.loader import SuiteSource, first_error, format_loc
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
    # {family: (member name, defining module)} of the cell's model, method and backend, so the
    # measure stage imports those alone (qbench.plugins.load_members). None: import them all.
    members: dict[str, tuple[str, str]] | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Cell:
        members = data.get("members")
        if members is not None:  # JSON has no tuples
            data = {**data, "members": {k: tuple(v) for k, v in members.items()}}
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


def _list_typed(params_cls: Any, key: str) -> bool:
    """The field takes a list itself (a model's `inputs`): its list value is one value."""
    field = getattr(params_cls, "model_fields", {}).get(key)
    if field is None:
        return False
    annotation = field.annotation
    options = typing.get_args(annotation) if typing.get_origin(annotation) in _UNIONS else ()
    return any(typing.get_origin(a) is list or a is list for a in (annotation, *options))


_UNIONS = (typing.Union, types.UnionType)


# Expansions of one member entry, and cells of one suite, beyond which a suite is refused
# before anything is built: a product of a few long lists reaches 10^8 quietly.
MAX_EXPANSIONS = 10_000
MAX_CELLS = 100_000


def expand_params(params: dict[str, Any], params_cls: Any = None) -> list[dict[str, Any]]:
    """Cartesian product over list values: {bits: [4, 8], sym: true} -> two dicts. A field that
    itself takes a list (per `params_cls`) expands only over a list of lists.

    Unknown parameter names (per `params_cls`) and products larger than MAX_EXPANSIONS raise
    CheckError before the product is built."""
    fields = getattr(params_cls, "model_fields", None)
    if fields is not None and params_cls.model_config.get("extra") == "forbid":
        unknown = [k for k in params if k not in fields]
        if unknown:
            raise CheckError(unknown[0], f"unknown field (known: {', '.join(fields) or 'none'})")
    keys = list(params)
    values = []
    for key, value in params.items():
        one = not isinstance(value, list) or (
            _list_typed(params_cls, key) and not all(isinstance(v, list) for v in value)
        )
        values.append([value] if one else value)
    size = math.prod(len(v) for v in values)
    if size > MAX_EXPANSIONS:
        raise CheckError("", f"its list values expand to {size} cells (at most "
                         f"{MAX_EXPANSIONS} per entry): list fewer values")  # fmt: skip
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*values)]


def _expand(ref: MemberRef, params_cls: Any, loc: list[str | int],
            source: SuiteSource) -> list[dict[str, Any]]:  # fmt: skip
    try:
        return expand_params(ref.params, params_cls)
    except CheckError as exc:
        raise source.error([*loc, "params", *([exc.field] if exc.field else [])],
                           str(exc)) from None  # fmt: skip


# What separates the parts of a cell id (model/method/backend/device/bN/tN): a label holding it
# would make two different cells read as one (`d/sq` + `fp32` and `d` + `sq/fp32`).
CELL_ID_SEPARATOR = "/"


def _check_label(label: str, what: str, loc: list[str | int], source: SuiteSource) -> None:
    """A label that becomes part of a cell id holds no separator of its parts."""
    if CELL_ID_SEPARATOR in label:
        raise source.error(loc, f"{what} label {label!r} contains {CELL_ID_SEPARATOR!r}, which "
                           "separates the parts of a cell id (model/method/backend/device/"
                           "bN/tN): give a `label` without it")  # fmt: skip


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
        for params in _expand(ref, member.Params, [family, i], source):
            try:
                typed = member.Params(**params)
            except ValidationError as exc:
                raise first_error(source, exc, prefix=[family, i, "params"]) from None
            out.append((ref, member, typed.model_dump(), typed))
    return out


@dataclass
class PlannedModel:
    """One model entry of a suite with its parameters, checked before anything runs."""

    ref: MemberRef
    index: int  # position in the suite's `models`
    source: Any  # the ModelSource, bound to its parameters
    params: dict[str, Any]  # typed parameters, dumped (relative paths made absolute)
    label: str
    dataset: dict[str, Any]  # {name, params}: the inputs it is evaluated and calibrated on
    fixed_batch: int | None


def _dataset_dict(value: Any, base: Any, fam: Families) -> dict[str, Any]:
    """{name, params} of a dataset given as a name or {name, params[, label]}, its relative
    paths made absolute against the suite's folder."""
    from qbench.datasets.base import dataset_ref

    name, params = dataset_ref(value)
    if name in fam.datasets:
        params = fam.datasets.get(name).Params.absolute_paths(params, base)
    return {"name": name, "params": params}


def _absolute(cls: Any, raw: dict[str, Any], base: Any, fam: Families) -> dict[str, Any]:
    """A model's untyped parameters with relative paths made absolute against the suite's
    folder, a dataset given inside them included."""
    out = cls.absolute_paths(raw, base)
    if isinstance(out.get("dataset"), dict):
        out["dataset"] = {**out["dataset"], **_dataset_dict(out["dataset"], base, fam)}
    return out


def _labels(ref: MemberRef, sources: list[tuple[Any, dict[str, Any]]]) -> list[str]:
    """Each expansion's label: the suite's, else the source's own; expansions of one entry
    that would share it get the values their list-valued parameters took (`m[epochs=5]`)."""
    labels = [ref.label or s.default_label(s.params) for s, _ in sources]
    if len(set(labels)) == len(labels):
        return labels
    varying = [k for k, v in ref.params.items() if isinstance(v, list)]

    def short(value: Any) -> str:
        return Path(value).name if isinstance(value, str) and "/" in value else str(value)

    return [f"{label}[{','.join(f'{k}={short(raw[k])}' for k in varying)}]"
            for label, (_, raw) in zip(labels, sources, strict=True)]  # fmt: skip


def _resolve_models(suite: Suite, fam: Families, source: SuiteSource) -> list[PlannedModel]:
    """Each model entry (and each expansion of its list-valued params) typed, its files and
    factory checked, its inputs matched with its dataset's fields, and its label unique."""
    base = source.path.resolve().parent
    suite_data = None
    if suite.accuracy.dataset.name != "auto":
        suite_data = _dataset_dict(suite.accuracy.dataset, base, fam)
    out: list[PlannedModel] = []
    labels: dict[str, PlannedModel] = {}
    for i, ref in enumerate(suite.models):
        try:
            cls = fam.models.get(ref.name)
        except RegistryError as exc:
            loc: list[str | int] = ["models", i, "name"]
            raise source.error(
                loc if source.line_of(loc) != source.line_of(["models", i]) else ["models", i],
                str(exc),
            ) from None
        bound: list[tuple[Any, dict[str, Any]]] = []
        for raw in _expand(ref, cls.Params, ["models", i], source):
            try:
                model = cls(cls.Params(**_absolute(cls.Params, raw, base, fam)))
            except ValidationError as exc:
                raise first_error(source, exc, prefix=["models", i, "params"]) from None
            try:
                model.check(model.params)
            except CheckError as exc:
                raise source.error(["models", i, "params", exc.field], str(exc)) from None
            bound.append((model, raw))
        for (model, _), label in zip(bound, _labels(ref, bound), strict=True):
            _check_label(label, "model", ["models", i, *(["label"] if ref.label else [])], source)
            if suite_data is not None:
                dataset, data_loc = suite_data, ["accuracy", "dataset"]
            else:
                dataset = _dataset_dict(model.dataset_for(model.params), base, fam)
                data_loc = ["models", i, "params", "dataset"]
            _check_data(model, dataset, data_loc, source, fam)
            planned = PlannedModel(ref, i, model, model.params.model_dump(), label, dataset,
                                   model.fixed_batch(model.params))  # fmt: skip
            other = labels.get(label)
            if other is not None and other.params != planned.params:
                raise source.error(
                    ["models", i],
                    f"model label {label!r} is also that of models[{other.index}] with other "
                    "parameters (another file?): give one of them a `label`, or their cells "
                    "would be one",
                )
            labels[label] = planned
            out.append(planned)
    return out


def _check_data(model: Any, dataset: dict[str, Any], loc: list[str | int],
                source: SuiteSource, fam: Families) -> None:  # fmt: skip
    """The dataset exists, its parameters and files are valid, and its fields fit the model's
    inputs: one line naming the field where not."""
    try:
        cls = fam.datasets.get(dataset["name"])
    except RegistryError as exc:
        raise source.error(loc, str(exc)) from None
    try:
        typed_data = cls.Params(**dataset["params"])
    except ValidationError as exc:
        raise first_error(source, exc, prefix=[*loc, "params"]) from None
    inputs: list[InputSpec] | None = model.inputs(model.params)
    data = cls(typed_data, inputs)
    try:
        data.check()
        fields = data.fields()
        if inputs is not None:
            binding(inputs, fields)
    except CheckError as exc:
        raise source.error([*loc, "params", exc.field], str(exc)) from None
    except ValueError as exc:
        raise source.error(loc, f"{dataset['name']}: {exc}") from None


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
    btyped: Any,
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
    if (
        source is not None
        and source.output_kind(source.params) == "token_logits"
        and not getattr(backend, "generates", False)
    ):
        return (f"backend {backend_name} has no token-by-token path (prefill, KV-cache "
                "decode) for causal LMs in qbench yet; torch and onnxruntime have")  # fmt: skip
    reasons = []
    for fmt in formats:
        reason = method.unsupported(fmt, typed, source) or backend.refuses(
            method.name, typed, fmt, btyped, device_cpu_flags(device)
        )
        if reason is None:
            fmt_holder[0] = fmt
            return None
        reasons.append(reason)
    return "; ".join(reasons)


def device_cpu_flags(device: Device) -> list[str]:
    """The ISA flags of a device's CPU as far as planning knows them: the device file's
    isa_features, else, for a device on this host (subprocess transport), this CPU's own."""
    if device.isa_features:
        return list(device.isa_features)
    if device.transport.name == "subprocess":
        return list(_host_flags())
    return []


@functools.cache
def _host_flags() -> tuple[str, ...]:
    from qbench.hostinfo import cpu_info

    return tuple(cpu_info()["cpu_flags"])


def _check_transports(devices: list[Device], fam: Families, source: SuiteSource) -> None:
    """Each device's transport parameters, typed and checked without connecting (a host that
    ssh would read as an option, a missing key file, an interpreter that does not exist), so
    no run is stored before a cell could ever reach its device."""
    from qbench.suite.loader import SuiteSource as Source

    for device in devices:
        if device.transport.name not in fam.transports:
            continue  # its cells are skipped with the reason (see build_plan)
        cls = fam.transports.get(device.transport.name)
        file = Source(device.source_path) if device.source_path else source
        loc: list[str | int] = ["transport", "params"]
        try:
            params = cls.Params(**device.transport.params)
            check = getattr(cls(), "check", None)  # a plugin's transport may not define it
            if check is not None:
                check(params)
        except ValidationError as exc:
            raise first_error(file, exc, prefix=loc) from None
        except CheckError as exc:
            raise file.error([*loc, *([exc.field] if exc.field else [])], str(exc)) from None


def build_plan(suite: Suite, source: SuiteSource, families: Families | None = None) -> Plan:
    fam = families or load_all()
    devices = resolve_devices(suite.devices, source)
    if suite.accuracy.dataset.name != "auto" and suite.accuracy.dataset.name not in fam.datasets:
        raise source.error(
            ["accuracy", "dataset"],
            f"unknown dataset {suite.accuracy.dataset.name!r} (known: auto, "
            f"{', '.join(fam.datasets)})",
        )
    models = _resolve_models(suite, fam, source)
    methods = _resolve_members(suite.methods, "methods", fam, source)
    backends = _resolve_members(suite.backends, "backends", fam, source)
    # A device whose transport is not installed (ssh, adb, ... from a plugin package) keeps
    # its cells in the plan, skipped with the reason, like a backend that is not installed.
    no_transport = {
        device.name: f"transport {device.transport.name} is not installed "
        f"(installed: {', '.join(fam.transports.names()) or 'none'})"
        for device in devices
        if device.transport.name not in fam.transports
    }

    _check_transports(devices, fam, source)
    size = math.prod(
        len(x) for x in (devices, models, methods, backends, suite.scenario.batch,
                         suite.scenario.threads)
    ) * max(len(suite.calibration.outlier_fraction), 1)  # fmt: skip
    if size > MAX_CELLS:
        raise source.error([], f"the suite's matrix has {size} cells (at most {MAX_CELLS}): list "
                           "fewer models, methods, backends, batch sizes or threads")  # fmt: skip
    powers = {
        device.name: plan_power(suite.power, device, d_index, fam, source)
        for d_index, device in enumerate(devices)
    }

    for q_index, ref in enumerate(suite.methods):
        _check_label(ref.label or ref.name, "method",
                     ["methods", q_index, *(["label"] if ref.label else [])], source)  # fmt: skip
    entry = {id(r): i for refs in (suite.methods, suite.backends) for i, r in enumerate(refs)}
    plan = Plan()
    seen: dict[str, tuple[Any, ...]] = {}
    rules = _RuleHits(suite)
    for (d_index, device), pm, (qref, qm, qparams, qtyped), (
        bref,
        backend,
        bparams,
        btyped,
    ), (b_index, batch), (t_index, threads) in itertools.product(
        enumerate(devices), models, methods, backends, enumerate(suite.scenario.batch),
        enumerate(suite.scenario.threads)
    ):  # fmt: skip
        model_label = pm.label
        method_label = qref.label or qref.name
        values = {
            "model": model_label,
            "method": method_label,
            "backend": bref.name,
            "device": device.name,
            "batch": batch,
            "threads": threads,
        }
        if not rules.keeps(values):
            plan.excluded += 1
            continue
        calibrated = qm.needs_calibration(qtyped)
        fractions = suite.calibration.outlier_fraction if calibrated else [0.0]
        for f_index, fraction in enumerate(fractions):
            cell_id = _cell_id(model_label, method_label, non_default(qtyped), bref.name,
                               non_default(btyped), device.name, batch, threads,
                               fraction)  # fmt: skip
            origin = (d_index, pm.index, entry[id(qref)], entry[id(bref)], b_index, t_index,
                      f_index)  # fmt: skip
            if cell_id in seen:  # listed twice, or two entries whose ids read the same
                raise _repeated(source, cell_id, seen[cell_id], origin)
            seen[cell_id] = origin
            fmt: list[str | None] = [None]
            reason = no_transport.get(device.name) or _skip_reason(
                device, bref.name, backend, qm, qtyped, pm.source, fmt, btyped
            )
            if reason is None and pm.fixed_batch is not None and batch != pm.fixed_batch:
                reason = (f"model {model_label}'s graph takes a fixed batch of "
                          f"{pm.fixed_batch}; batch {batch} cannot run")  # fmt: skip
            calibration = {**suite.calibration.model_dump(), "outlier_fraction": fraction}
            plan.cells.append(
                Cell(
                    cell_id=cell_id,
                    suite=suite.name,
                    model=model_label,
                    model_plugin=pm.ref.name,
                    model_params=pm.params,
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
                    accuracy={**suite.accuracy.model_dump(), "dataset": pm.dataset},
                    calibration=calibration,
                    skip_reason=reason,
                    power=powers[device.name],
                    members={
                        "models": (pm.ref.name, type(pm.source).__module__),
                        "methods": (qref.name, type(qm).__module__),
                        "backends": (bref.name, type(backend).__module__),
                    },
                )
            )
    rules.check_all_matched(source)
    return plan


# Where each part of a cell's origin (see build_plan) comes from in the suite.
_ORIGIN_LOCS: tuple[tuple[str, ...], ...] = (
    ("devices",), ("models",), ("methods",), ("backends",), ("scenario", "batch"),
    ("scenario", "threads"), ("calibration", "outlier_fraction"),
)  # fmt: skip


_OR_LABEL = ", or give one a `label` of its own"


def _repeated(source: SuiteSource, cell_id: str, first: tuple[Any, ...],
              again: tuple[Any, ...]) -> Exception:  # fmt: skip
    """Two points of the matrix (indices into the suite's lists, see build_plan) that would be
    one cell: the suite lists a thing twice (500 copies of a model would quietly measure one),
    or two labels read the same in a cell id. Either way the suite does not say what it means:
    refused, naming both entries."""
    part = next((i for i, (a, b) in enumerate(zip(first, again, strict=True)) if a != b), 1)
    where = _ORIGIN_LOCS[part]
    return source.error([*where, again[part]], f"gives cell {cell_id} again, as "
                        f"{format_loc([*where, first[part]])} does: each cell is measured once; "
                        f"remove the repeat{_OR_LABEL if part in (1, 2) else ''}")  # fmt: skip


class _RuleHits:
    """The suite's include/exclude rules, and which of them matched some cell of the matrix: a
    rule that matches none (`include: [{batch: -5}]`, a misspelt name) would silently keep or
    drop nothing it was written for, so it is refused."""

    def __init__(self, suite: Suite) -> None:
        self.include, self.exclude = suite.include, suite.exclude
        self.hits = {"include": [False] * len(self.include),
                     "exclude": [False] * len(self.exclude)}  # fmt: skip
        self.values: dict[str, set[str]] = {}

    def keeps(self, values: dict[str, Any]) -> bool:
        for key, value in values.items():
            self.values.setdefault(key, set()).add(str(value))
        matched = {
            name: [_matches(r, values) for r in rules]
            for name, rules in (("include", self.include), ("exclude", self.exclude))
        }
        for name, hits in matched.items():
            self.hits[name] = [a or b for a, b in zip(self.hits[name], hits, strict=True)]
        return (not self.include or any(matched["include"])) and not any(matched["exclude"])

    def check_all_matched(self, source: SuiteSource) -> None:
        for name, rules in (("include", self.include), ("exclude", self.exclude)):
            for i, rule in enumerate(rules):
                if not self.hits[name][i]:
                    raise source.error(
                        [name, i],
                        f"matches no cell of the suite "
                        f"({self._why(rule)}): correct or remove the rule",
                    )

    def _why(self, rule: Rule) -> str:
        """The first field of the rule that no cell has, with the values the cells have."""
        for key, pattern in rule.model_dump(exclude_none=True).items():
            patterns = pattern if isinstance(pattern, list) else [pattern]
            have = sorted(self.values.get(key, set()))
            if not any(fnmatch.fnmatch(v, str(p)) for v in have for p in patterns):
                listed = ", ".join(have[:8]) + (", ..." if len(have) > 8 else "")
                return f"{key} {pattern} is none of {listed}"
        return "no cell has all of its values at once"
