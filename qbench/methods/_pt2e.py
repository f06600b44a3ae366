"""static_int8 on torch through torchao's PT2E flow, compiled by inductor.

Build (`build_pt2e_artifact`): `torch.export.export` of the fp32 module (strict, i.e. traced by
TorchDynamo; non-strict if Dynamo cannot trace it) with a dynamic batch axis; torchao's
`prepare_pt2e` with `X86InductorQuantizer().set_global(get_default_x86_inductor_quantization_
config())`: activations uint8 asymmetric per tensor on the full 0..255 grid (reduce_range=False;
torchao recommends True only on CPUs without VNNI), ranges from torch's HistogramObserver;
weights int8 symmetric per output channel (PerChannelMinMaxObserver); BatchNorm folded into the
convs; a conv or linear and its ReLU/ReLU6/Hardtanh/... share one output quantizer; the model's
outputs stay float. Calibration on the context's calibration inputs in batches of 16, then
`convert_pt2e` (int8 weights folded into constants, quantize/dequantize pairs around each
quantized op); the fp32 weights the converted graph no longer reads are dropped; the converted
module is exported again (dynamic batch), its example inputs dropped, and written with
`torch.export.save`. The artifact is a qbench torch artifact (the keys of
qbench.methods.base.save_torch_artifact, an empty state dict) plus "exported": those bytes.

Run: `load_exported(bytes)` gives the program's module; `compile_int8(module)` compiles it with
inductor with freezing on, which lowers the dequantize -> conv/linear -> quantize patterns to
oneDNN's int8 kernels (onednn.qconv_pointwise / qlinear_pointwise, int8 weights prepacked);
eagerly, the module runs its quantize/dequantize pairs and float convolutions (~3-5x slower
than fp32 eager). `count_pt2e_compute` counts the conv/linear nodes whose weights are int8.

Safety of `torch.export.load` (torch 2.13, torch/export/__init__.py, torch/export/pt2_archive/
_package.py, torch/_export/serde/serialize.py, torch/export/_unlift.py; its docstring: "uses
pickle under the hood ... never load data from an untrusted source"). It is NOT limited to
weights-only unpickling; each of these was checked to run code from a crafted archive:
- weights and constants whose payload config says use_pickle are read with
  `torch.load(weights_only=False)`; "opaque" constants with `pickle.loads`, torchbind objects
  with `torch._C._pickle_load_obj`;
- sample inputs are read weights-only and, if that fails, again with weights_only=False; an
  archive load_pt2 rejects with a RuntimeError is retried as the torch 2.7 format, whose state
  dict and constants take the same fallback;
- an archive holding data/aotinductor/ loads that compiled shared library (native code);
- symbolic sizes in models/*.json are parsed by `sympy.sympify` (an eval); `.module()` turns
  the program's guards_code into Python source it execs (and runs on every call), and puts
  the forward argument names into generated code.
`load_exported` therefore checks the archive first (`check_exported`, with torch's own archive
reader): only the files torch.export.save writes for a plain program (no AOTInductor,
executorch, extra or legacy files), no pickled payload or non-tensor constant, sample inputs
(if any) that load weights-only, every size expression and guard a plain expression (sympy
constructors, size symbols, numbers, arithmetic and comparisons; no attribute access except
.size()/.stride() in guards, no dunder), argument names identifiers, pytree specs of tuples,
lists and dicts keyed by names. After loading it refuses a graph that calls anything but torch
operators (OpOverload) and Python's arithmetic/comparison operators, and calls
`.module(check_guards=False)`, which builds no guard function from strings at all (the
module checks its inputs' shapes in a forward pre-hook instead). A refused blob raises
UnsafeExportError (a ValueError) with one line; nothing of it ran.
"""

from __future__ import annotations

import ast
import contextlib
import functools
import io
import json
import logging
import operator
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

NOTE = "torchao PT2E (X86InductorQuantizer), compiled by inductor"
CALIBRATION_BATCH = 16
MAX_BATCH = 4096


def _first_line(exc: BaseException) -> str:
    """The first sentence of an exception's message, for a one-line error."""
    text = (str(exc).strip().splitlines() or [""])[0]
    text = text.split(". This is an internal", 1)[0]  # miniz's boilerplate
    return (text[:157] + "...") if len(text) > 160 else (text or type(exc).__name__)


class UnsafeExportError(ValueError):
    """An "exported" blob that is not a program torch.export.save writes for plain tensors and
    torch operators (or no valid archive at all): refused before any of it ran. str(): one
    line."""


@contextlib.contextmanager
def _quiet_torchao() -> Iterator[None]:
    """torchao's import logs a warning for each optional CUDA extension it cannot load, and
    torch's pytree one about a deprecated registration: not news for a CPU build."""
    loggers = [logging.getLogger(n) for n in ("torchao", "torch.utils._pytree")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


@functools.lru_cache(maxsize=1)
def pt2e_unavailable() -> str | None:
    """Why torchao's PT2E flow cannot be used here, or None (imports torchao, quietly)."""
    try:
        with _quiet_torchao():
            import torchao.quantization.pt2e.quantize_pt2e
            import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer  # noqa: F401
    except Exception as exc:  # ImportError, or a torch/torchao mismatch failing at import
        return f"torchao's PT2E quantization does not import ({_first_line(exc)})"
    return None


def pt2e_unavailable_at_plan() -> str | None:
    """pt2e_unavailable's answer for planning, remembered in the qbench cache per installed
    torch and torchao version: every plan with a torch static_int8 cell asks, and importing
    torchao (and torch) costs seconds that `qbench run --dry-run` should not pay each time."""
    import json
    import os
    from importlib import metadata

    from qbench.cache import cache_root

    try:
        versions = f"torch-{metadata.version('torch')}-torchao-{metadata.version('torchao')}"
    except metadata.PackageNotFoundError as exc:
        return f"torchao's PT2E quantization needs Python package {exc}, not installed"
    record = cache_root() / "checks" / f"pt2e-import-{versions}.json"
    try:
        return json.loads(record.read_text())["unavailable"]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    reason = pt2e_unavailable()
    record.parent.mkdir(parents=True, exist_ok=True)
    partial = record.with_name(f".{record.name}.{os.getpid()}")
    partial.write_text(json.dumps({"unavailable": reason}))
    os.replace(partial, record)  # readers see the whole record or none
    return reason


def _quantizer(reduce_range: bool = False) -> Any:
    """X86InductorQuantizer's default config; reduce_range: activations on a 7-bit grid
    (0..127), so that u8×s8 pair sums fit the 16-bit lanes of CPUs without VNNI/AMX."""
    from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import (
        X86InductorQuantizer,
        get_default_x86_inductor_quantization_config,
    )

    config = get_default_x86_inductor_quantization_config(reduce_range=reduce_range)
    return X86InductorQuantizer().set_global(config)


def _as_tensors(inputs: Any) -> tuple[Any, ...]:
    import torch

    return tuple(torch.as_tensor(v) for v in inputs.values())


def _export(module: Any, example: tuple[Any, ...], strict: bool = False) -> Any:
    """torch.export with the batch axis of every input dynamic (1..MAX_BATCH)."""
    import torch

    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    return torch.export.export(
        module, example, dynamic_shapes=tuple({0: batch} for _ in example), strict=strict
    )


def _export_for_quantization(module: Any, example: tuple[Any, ...]) -> Any:
    """The program X86InductorQuantizer annotates. Strict export (TorchDynamo) first: it
    records which call of a module each node comes from (source_fn_stack). torch 2.13's
    default non-strict export does not, and torchao then groups the nodes of a module called
    twice (torchvision's BasicBlock calls its one ReLU twice) into one partition and fails
    ("Input partition has more than one output node"). A module Dynamo cannot trace is
    exported non-strict."""
    try:
        return _export(module, example, strict=True)
    except Exception:
        return _export(module, example, strict=False)


def _drop_unused_weights(gm: Any) -> int:
    """Delete the parameters and buffers no node of the converted graph reads (convert_pt2e
    leaves the fp32 conv/linear weights beside their int8 copies). Returns how many."""
    used = {str(n.target) for n in gm.graph.nodes if n.op == "get_attr"}
    dropped = 0
    names = [n for n, _ in gm.named_parameters(remove_duplicate=False)]
    names += [n for n, _ in gm.named_buffers(remove_duplicate=False)]
    for name in names:
        if name in used:
            continue
        owner_name, _, attr = name.rpartition(".")
        owner = gm.get_submodule(owner_name) if owner_name else gm
        if hasattr(owner, attr):
            delattr(owner, attr)
            dropped += 1
    return dropped


def quantize_module(module: Any, calibration: Any, reduce_range: bool = False) -> Any:
    """The converted (quantize/dequantize) GraphModule of `module` calibrated on
    `calibration` (inputs by name, in the module's call order); reduce_range: _quantizer's."""
    import torch

    from qbench.inputs import batch_of, count, take

    reason = pt2e_unavailable()  # imports torchao quietly
    if reason:
        raise RuntimeError(reason)
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    example = _as_tensors(batch_of(calibration, 2))  # 2: batch 1 would be specialised
    exported = _export_for_quantization(module.eval(), example)
    prepared = prepare_pt2e(exported.module(), _quantizer(reduce_range))
    with torch.no_grad():
        for start in range(0, count(calibration), CALIBRATION_BATCH):
            prepared(*_as_tensors(take(calibration, start, start + CALIBRATION_BATCH)))
    converted = convert_pt2e(prepared)
    _drop_unused_weights(converted)
    return converted


def export_bytes(converted: Any, calibration: Any) -> bytes:
    """torch.export.save of the converted module, exported again (dynamic batch)."""
    import torch

    from qbench.inputs import batch_of

    program = _export(converted, _as_tensors(batch_of(calibration, 2)))
    # Without its example inputs the program is smaller (two calibration samples: 1.2 MB for
    # a 224x224 model) and .module() builds no guard function from generated code; the
    # module still checks its inputs against the program's shapes (a forward pre-hook).
    program.example_inputs = None
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    return buffer.getvalue()


def save_exported_artifact(path: Path, ctx: Any, method: str, params: Any, exported: bytes) -> None:
    """A qbench torch artifact (save_torch_artifact's keys, empty state dict) plus "exported":
    the program's bytes as a uint8 tensor (torch.save writes Python bytes about 1.5x larger;
    a tensor is stored as it is), read back weights-only as backends read it."""
    import torch

    from qbench.methods.base import save_torch_artifact

    blob = torch.frombuffer(bytearray(exported), dtype=torch.uint8)
    saved = save_torch_artifact(path, ctx, method, params, {}, {"exported": blob})
    if saved.get("exported") is None or saved["exported"].numpy().tobytes() != exported:
        raise ValueError(f"method {method}: PT2E artifact did not read back its program")


def build_pt2e_artifact(ctx: Any, method: str, params: Any, out: Path) -> list[str]:
    """Quantize ctx's module with PT2E, write the artifact to `out`; returns row notes."""
    import copy

    module = copy.deepcopy(ctx.model.module).eval()  # export/prepare must not touch ctx's
    # static_int8's reduce_range as decided for the device's CPU (for_cpu); others: False
    seven = getattr(params, "reduce_range", False) is True
    converted = quantize_module(module, ctx.calibration, seven)
    quantized, compute = count_pt2e_compute(converted)
    save_exported_artifact(out, ctx, method, params, export_bytes(converted, ctx.calibration))
    from qbench.inputs import count

    return [
        f"{NOTE}: {quantized} of {compute} conv/linear layers with int8 weights, "
        f"HistogramObserver activation ranges from {count(ctx.calibration)} calibration inputs"
        + (" on a 7-bit grid (reduce_range)" if seven else "")
    ]


# --- counting ---------------------------------------------------------------------------------


def _compute_targets() -> set[Any]:
    import torch

    aten = torch.ops.aten
    return {
        aten.conv1d.default,
        aten.conv2d.default,
        aten.conv3d.default,
        aten.convolution.default,
        aten.linear.default,
        aten.addmm.default,
        aten.mm.default,
        aten.matmul.default,
    }


def _int8_dequantized(node: Any) -> bool:
    """`node` is a dequantize of int8 data (per channel or per tensor)."""
    import torch

    qd = torch.ops.quantized_decomposed
    dequant = {
        qd.dequantize_per_channel.default,
        qd.dequantize_per_tensor.default,
        qd.dequantize_per_tensor.tensor,
    }
    if getattr(node, "op", None) != "call_function" or node.target not in dequant:
        return False
    dtype = node.args[-1] if node.args else node.kwargs.get("dtype")
    return dtype == torch.int8


def _weight_source(node: Any) -> Any:
    """The node a conv/linear/matmul node's weight comes from, through views (t/permute)."""
    import torch

    aten = torch.ops.aten
    index = 2 if node.target == aten.addmm.default else 1
    weight = node.args[index] if len(node.args) > index else None
    views = {aten.t.default, aten.permute.default, aten.transpose.int}
    while getattr(weight, "op", None) == "call_function" and weight.target in views:
        weight = weight.args[0]
    return weight


def count_pt2e_compute(module: Any) -> tuple[int, int]:
    """(quantized, compute) in a converted PT2E graph (a GraphModule, the module of a loaded
    program, or an ExportedProgram): conv/linear nodes whose weight comes through a dequantize
    of int8 data, and all conv/linear nodes. Nested graphs are counted too."""
    graph_module = getattr(module, "graph_module", module)
    targets = _compute_targets()
    quantized = compute = 0
    for sub in graph_module.modules():
        for node in getattr(getattr(sub, "graph", None), "nodes", ()):
            if node.op == "call_function" and node.target in targets:
                compute += 1
                quantized += _int8_dequantized(_weight_source(node))
    return quantized, compute


# --- loading ----------------------------------------------------------------------------------

_ARCHIVE_FILES = re.compile(
    r"(archive_format|archive_version|byteorder|\.data/version|\.data/serialization_id"
    r"|models/model\.json|data/sample_inputs/model\.pt"
    r"|data/weights/model_weights_config\.json|data/weights/weight_\d+"
    r"|data/constants/model_constants_config\.json|data/constants/tensor_\d+)"
)
# sympy's constructors and torch's sympy functions an export writes (srepr form)
_SYMPY_NAMES = frozenset({
    "Symbol", "Integer", "Rational", "Float", "Add", "Mul", "Pow", "Mod", "Max", "Min", "Abs",
    "Eq", "Ne", "Lt", "Le", "Gt", "Ge", "And", "Or", "Not", "StrictLessThan",
    "StrictGreaterThan", "LessThan", "GreaterThan", "Equality", "Unequality", "BooleanTrue",
    "BooleanFalse", "true", "false", "oo", "zoo", "nan", "Half", "One", "Zero", "NegativeOne",
    "Infinity", "NegativeInfinity", "FloorDiv", "ModularIndexing", "Where", "PythonMod",
    "CleanDiv", "CeilToInt", "FloorToInt", "CeilDiv", "LShift", "RShift", "PowByNatural",
    "FloatPow", "FloatTrueDiv", "IntTrueDiv", "IsNonOverlappingAndDenseIndicator",
    "TruncToFloat", "TruncToInt", "RoundToInt", "RoundDecimal", "ToFloat", "Identity",
    "OpaqueUnaryFn_sqrt", "BitwiseFn_bitwise_and", "BitwiseFn_bitwise_or", "True", "False",
    "None",
})  # fmt: skip
_SYMBOL = re.compile(r"[a-z]+\d+")
_GUARD_ATTRS = frozenset({"size", "stride", "storage_offset", "dim", "numel"})
_EXPR_NODES = (
    ast.Expression, ast.BinOp, ast.UnaryOp, ast.BoolOp, ast.Compare, ast.Constant, ast.Load,
    ast.operator, ast.unaryop, ast.boolop, ast.cmpop, ast.Tuple,
)  # fmt: skip


def _check_expression(text: str, guard: bool) -> str | None:
    """Why `text` is not a plain sympy (srepr) expression / shape guard, or None."""
    if not isinstance(text, str) or any(c in text for c in "#;\\\n\r") or "__" in text:
        return "it holds characters an expression of sizes never does"
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError:
        return "it does not parse as one expression"
    for node in ast.walk(tree):
        if isinstance(node, _EXPR_NODES):
            if isinstance(node, ast.Constant) and not isinstance(
                node.value, int | float | bool | str | type(None)
            ):
                return "it holds a constant that is not a number or name"
            if (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and (not node.value.isidentifier())
            ):
                return "it holds a string that is not a name"
            continue
        if isinstance(node, ast.Name):
            if node.id in _SYMPY_NAMES or _SYMBOL.fullmatch(node.id) or (guard and node.id == "L"):
                continue
            return f"it names {node.id!r}"
        if isinstance(node, ast.keyword):
            if node.arg and node.arg.isidentifier() and not node.arg.startswith("_"):
                continue
            return "it passes an odd keyword"
        if isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Name) and func.id in _SYMPY_NAMES:
                continue
            if guard and isinstance(func, ast.Attribute) and func.attr in _GUARD_ATTRS:
                continue
            return "it calls something other than a sympy constructor"
        if guard and isinstance(node, ast.Attribute) and node.attr in _GUARD_ATTRS:
            continue
        if guard and isinstance(node, ast.Subscript):
            continue
        return f"it holds a {type(node).__name__}"
    return None


def _walk_json(obj: Any, found: list[tuple[str, Any]], keys: frozenset[str]) -> None:
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k in keys:
                found.append((k, v))
            _walk_json(v, found, keys)
    elif isinstance(obj, list):
        for v in obj:
            _walk_json(v, found, keys)


def _check_treespec(text: Any) -> str | None:
    """Why a serialized pytree spec holds more than tuples, lists, dicts and leaves."""
    try:
        _protocol, spec = json.loads(text)
    except (TypeError, ValueError):
        return "a pytree spec that is not JSON"
    stack = [spec]
    while stack:
        node = stack.pop()
        if not isinstance(node, dict):
            return "a malformed pytree spec"
        kind = node.get("type")
        if kind not in (None, "builtins.tuple", "builtins.list", "builtins.dict"):
            return f"a pytree spec of {kind}"
        if kind == "builtins.dict":
            try:
                context = json.loads(node.get("context") or "[]")
            except ValueError:
                return "a malformed pytree spec"
            if not all(isinstance(k, str) and k.isidentifier() for k in context):
                return "a pytree spec with keys that are not names"
        stack.extend(node.get("children_spec") or [])
    return None


def check_exported(data: bytes) -> None:
    """Refuse (UnsafeExportError, one line) an "exported" blob that torch.export.load would
    unpickle, exec or load native code from (module docstring), or that is no PT2 archive."""
    import torch
    from torch.export.pt2_archive._package import PT2ArchiveReader

    def refuse(why: str) -> UnsafeExportError:
        return UnsafeExportError(f"exported program refused: {why}")

    if not isinstance(data, bytes | bytearray) or not data:
        raise refuse("it is not the bytes of torch.export.save")
    try:
        reader = PT2ArchiveReader(io.BytesIO(bytes(data)))
        names = reader.get_file_names()
    except Exception as exc:
        raise refuse(f"not a PT2 archive of torch.export.save ({_first_line(exc)})") from exc
    odd = sorted(n for n in names if not _ARCHIVE_FILES.fullmatch(n))
    if odd:
        raise refuse(f"the archive holds files torch.export.save of a plain program does not "
                     f"write ({', '.join(odd[:3])})")  # fmt: skip
    for needed in ("archive_version", "models/model.json", "data/sample_inputs/model.pt",
                   "data/weights/model_weights_config.json",
                   "data/constants/model_constants_config.json"):  # fmt: skip
        if needed not in names:
            raise refuse(f"the archive has no {needed}")
    if reader.read_string("archive_version") != "0":
        raise refuse("archive version is not 0 (torch 2.13's)")
    try:
        weights = json.loads(reader.read_string("data/weights/model_weights_config.json"))
        constants = json.loads(reader.read_string("data/constants/model_constants_config.json"))
        model = json.loads(reader.read_string("models/model.json"))
    except ValueError as exc:
        raise refuse(f"a config is not JSON ({exc})") from exc
    for what, config in (("weight", weights), ("constant", constants)):
        entries = config.get("config") if isinstance(config, dict) else None
        if not isinstance(entries, dict):
            raise refuse(f"malformed {what} config")
        for fqn, meta in entries.items():
            if not isinstance(meta, dict) or meta.get("use_pickle") is not False:
                raise refuse(f"{what} {fqn} is pickled (torch.load with weights_only=False)")
            prefix = "weight_" if what == "weight" else "tensor_"
            if not str(meta.get("path_name", "")).startswith(prefix):
                raise refuse(f"{what} {fqn} is not a tensor")
    samples = reader.read_bytes("data/sample_inputs/model.pt")
    try:
        if samples:  # empty: saved without example inputs (as export_bytes saves)
            torch.load(io.BytesIO(samples), weights_only=True)
    except Exception as exc:
        raise refuse("its sample inputs do not load weights-only") from exc
    if not isinstance(model, dict):
        raise refuse("models/model.json is not a program")
    found: list[tuple[str, Any]] = []
    _walk_json(model, found, frozenset({"expr_str", "forward_arg_names", "in_spec",
                                        "out_spec"}))  # fmt: skip
    for key, value in found:
        if key == "expr_str":
            why = _check_expression(value, guard=False)
            if why:
                raise refuse(f"a symbolic size is not a sympy expression ({why})")
        elif key == "forward_arg_names":
            if not isinstance(value, list) or not all(
                isinstance(n, str) and n.isidentifier() and not n.startswith("__") for n in value
            ):
                raise refuse("its argument names are not identifiers")
        elif value is not None:
            why = _check_treespec(value)
            if why:
                raise refuse(f"its inputs/outputs are described by {why}")
    for name in model.get("range_constraints") or {}:
        if not _SYMBOL.fullmatch(str(name)):
            raise refuse(f"range constraint on {name!r}, not a size symbol")
    for guard in model.get("guards_code") or []:
        why = _check_expression(guard, guard=True)
        if why:
            raise refuse(f"guard {str(guard)[:60]!r} is not a size check ({why})")


_ALLOWED_PYTHON_OPS = frozenset(
    {
        operator.getitem, operator.add, operator.sub, operator.mul, operator.truediv,
        operator.floordiv, operator.mod, operator.pow, operator.neg, operator.eq, operator.ne,
        operator.lt, operator.le, operator.gt, operator.ge, operator.and_, operator.or_,
        operator.not_,
    }
)  # fmt: skip


def _check_graph(program: Any) -> None:
    import torch

    for sub in program.graph_module.modules():
        graph = getattr(sub, "graph", None)
        for node in getattr(graph, "nodes", ()):
            if node.op == "call_function":
                target = node.target
                if isinstance(target, torch._ops.OpOverload) or target in _ALLOWED_PYTHON_OPS:
                    continue
                raise UnsafeExportError(
                    f"exported program refused: it calls {getattr(target, '__name__', target)!r}"
                    ", not a torch operator"
                )
            if node.op in ("call_module", "call_method"):
                raise UnsafeExportError(f"exported program refused: it has a {node.op} node")


class _Captured(logging.Handler):
    """Holds the records torch.export.load logs (it logs why an archive failed to deserialize,
    then raises a generic error)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def reason(self) -> str | None:
        for record in reversed(self.records):
            if record.exc_info and record.exc_info[1] is not None:
                exc = record.exc_info[1]
                return f"{type(exc).__name__}: {_first_line(exc)}"
        return None


def register_quantized_ops() -> None:
    """Register the quantized_decomposed operators a PT2E program calls: a program that names
    them does not deserialize before (torchao imports torch.ao's definitions)."""
    if pt2e_unavailable():
        import torch.ao.quantization.fx._decomposed  # noqa: F401


def load_exported(data: bytes | Any) -> Any:
    """The module of a program saved with torch.export.save (an artifact's "exported"):
    `torch.export.load(io.BytesIO(data)).module(check_guards=False)` after check_exported,
    with the quantized_decomposed operators registered first. `data`: bytes (or the same
    bytes as a uint8 tensor). UnsafeExportError (one line) for a blob that is not such a
    program or does not deserialize. check_guards=False: the program's guard strings are not
    turned into code (qbench's programs carry none); the module checks its inputs' shapes in
    a forward pre-hook instead."""
    import torch

    if isinstance(data, torch.Tensor) and data.dtype == torch.uint8 and data.dim() == 1:
        data = data.numpy().tobytes()
    check_exported(data)
    register_quantized_ops()
    captured = _Captured()
    export_log = logging.getLogger("torch.export")
    propagate = export_log.propagate
    export_log.addHandler(captured)
    export_log.propagate = False
    try:
        program = torch.export.load(io.BytesIO(bytes(data)))
    except Exception as exc:
        why = captured.reason() or f"{type(exc).__name__}: {_first_line(exc)}"
        raise UnsafeExportError(
            f"exported program refused: torch.export.load failed ({why})"
        ) from exc
    finally:
        export_log.removeHandler(captured)
        export_log.propagate = propagate
    _check_graph(program)
    return program.module(check_guards=False)


def compile_int8(module: Any, *, cpp_wrapper: bool = False, check_inputs: bool = False) -> Any:
    """`module` (from load_exported) compiled by inductor so that its quantize/dequantize
    patterns run as oneDNN int8 kernels (qconv/qlinear pointwise ops, int8 weights
    prepacked). The first call compiles (seconds; minutes for big models on few cores).

    Sets, process-wide, what torchao's X86InductorQuantizer tutorial sets:
    torch._inductor.config.freezing = True (weights become constants: without it inductor
    cannot prepack them and runs float kernels on dequantized weights). Importing torchao's
    x86_inductor_quantizer (pt2e_unavailable) registers its fusion passes and sets
    inductor's pre_grad_custom_pass (quant_lift_up). cpp_wrapper=True sets
    torch._inductor.config.cpp_wrapper too (the tutorial's option: C++ instead of Python
    wrapper code; faster calls at batch 1, a slower first call). check_inputs=False turns
    off the exported module's per-call Python check of input shapes (its validate_inputs):
    torch.compile's guards already recompile for a shape the graph was not compiled for, and
    the check costs ~0.05-0.1 ms per call on this CPU. The compile itself is the torch
    backend's (qbench.backends._inductor.compile_module: freezing, inductor's cache under the
    qbench cache), so a PT2E program runs as every other compiled cell does."""
    import torch._inductor.config as inductor_config

    from qbench.backends._inductor import compile_module

    reason = pt2e_unavailable()
    if reason:
        raise RuntimeError(reason)
    if cpp_wrapper:
        inductor_config.cpp_wrapper = True
    if not check_inputs and hasattr(module, "validate_inputs"):
        module.validate_inputs = False
    return compile_module(module)
