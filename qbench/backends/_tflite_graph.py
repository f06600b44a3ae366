""".tflite graphs: what a model holds (from its flatbuffer) and what a delegate took (from an
allocated LiteRT interpreter).

Plain functions shared by the `litert` and `edgetpu` backends (the plugin loader skips this
module: its name starts with an underscore). Only the primary subgraph (index 0, the one the
interpreter runs) is read: the interpreter's node i is that subgraph's operator i.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Ops that do the multiply-accumulate work. Their weight (filter) operand is input 1 for all of
# them (TRANSPOSE_CONV and CONV_3D_TRANSPOSE: [output_shape, weights, input, bias]).
COMPUTE_OPS = frozenset(
    {
        "CONV_2D",
        "DEPTHWISE_CONV_2D",
        "FULLY_CONNECTED",
        "BATCH_MATMUL",
        "TRANSPOSE_CONV",
        "CONV_3D",
        "CONV_3D_TRANSPOSE",
        "STABLEHLO_CONVOLUTION",
        "STABLEHLO_DOT_GENERAL",
    }
)
WEIGHT_INPUT = 1
# Integer element types a weight can be stored in and computed from (int8 full-integer and
# dynamic-range "hybrid" kernels, int4 weights, int16).
INTEGER_WEIGHT_TYPES = frozenset({"INT8", "UINT8", "INT4", "UINT4", "INT2", "INT16"})
EDGETPU_CUSTOM_OP = "edgetpu-custom-op"
DELEGATE_NODE = "DELEGATE"  # name of a delegate kernel's node in the interpreter's node list


@dataclass(frozen=True)
class TfliteOp:
    name: str  # builtin operator name (CONV_2D) or, for a custom op, its custom code
    custom: bool
    inputs: tuple[int, ...]  # tensor indices, -1 for an omitted optional input
    input_types: tuple[str | None, ...]  # element type of each input (None where omitted)
    outputs: tuple[int, ...] = ()  # tensor indices


@dataclass(frozen=True)
class TfliteGraph:
    ops: tuple[TfliteOp, ...]
    tensor_names: tuple[str, ...] = ()  # by tensor index
    tensor_types: tuple[str, ...] = ()  # element type by tensor index (INT8, FLOAT32, ...)

    @property
    def op_names(self) -> list[str]:
        return [op.name for op in self.ops]

    def compute_ops(self) -> list[TfliteOp]:
        return [op for op in self.ops if op.name in COMPUTE_OPS]

    def quantized_compute_ops(self) -> list[TfliteOp]:
        """Compute ops whose weight is stored as an integer type, so they run integer or hybrid
        kernels. A weight fed through a DEQUANTIZE op (weight-only int8/int4, fp16 weights)
        reaches the op as float32: that op runs float kernels and is not counted."""
        return [
            op
            for op in self.compute_ops()
            if len(op.input_types) > WEIGHT_INPUT
            and op.input_types[WEIGHT_INPUT] in INTEGER_WEIGHT_TYPES
        ]


def _enum_names(enum_cls: Any) -> dict[int, str]:
    return {v: k for k, v in vars(enum_cls).items() if not k.startswith("_")}


def read_tflite_graph(model: Path | bytes) -> TfliteGraph:
    """The primary subgraph's operators, read straight from the flatbuffer (no interpreter)."""
    from ai_edge_litert import schema_py_generated as schema

    data = Path(model).read_bytes() if isinstance(model, Path | str) else bytes(model)
    m = schema.Model.GetRootAsModel(data, 0)
    op_names = _enum_names(schema.BuiltinOperator)
    type_names = _enum_names(schema.TensorType)
    sg = m.Subgraphs(0)
    ops = []
    for i in range(sg.OperatorsLength()):
        op = sg.Operators(i)
        oc = m.OperatorCodes(op.OpcodeIndex())
        # Codes above 127 live only in BuiltinCode; older files only fill the deprecated byte.
        code = max(oc.BuiltinCode(), oc.DeprecatedBuiltinCode())
        custom = code == schema.BuiltinOperator.CUSTOM
        name = (oc.CustomCode() or b"").decode() if custom else op_names.get(code, str(code))
        inputs = tuple(int(op.Inputs(j)) for j in range(op.InputsLength()))
        types = tuple(
            type_names.get(sg.Tensors(t).Type(), str(sg.Tensors(t).Type())) if t >= 0 else None
            for t in inputs
        )
        outputs = tuple(int(op.Outputs(j)) for j in range(op.OutputsLength()))
        ops.append(TfliteOp(name, custom, inputs, types, outputs))
    tensors = [sg.Tensors(t) for t in range(sg.TensorsLength())]
    return TfliteGraph(
        tuple(ops),
        tuple((t.Name() or b"").decode() for t in tensors),
        tuple(type_names.get(t.Type(), str(t.Type())) for t in tensors),
    )


@dataclass
class DelegateSummary:
    """Which of the model's ops each delegate partition replaced."""

    model_ops: int
    partitions: list[set[int]] = field(default_factory=list)  # original op indices per partition

    @property
    def delegated(self) -> set[int]:
        return set().union(*self.partitions)

    def undelegated(self) -> list[int]:
        taken = self.delegated
        return [i for i in range(self.model_ops) if i not in taken]


def delegate_partitions(interpreter: Any, model_ops: int) -> DelegateSummary:
    """Exact count of the ops delegates replaced, from an interpreter after allocate_tensors().

    The node list then holds the model's `model_ops` original nodes (still listed when
    replaced) followed by one DELEGATE node per delegated partition. A DELEGATE node's inputs
    and outputs are its partition's boundary tensors, so walking producers back from its outputs
    until its inputs visits exactly the original ops it replaced. (Cross-check: with
    experimental_disable_delegate_node_fusion=True every delegated op becomes its own DELEGATE
    node; both counts agreed on every model tried.)
    """
    nodes = interpreter._get_ops_details()  # private, but the only view of the executed graph
    if len(nodes) < model_ops:
        raise ValueError(f"interpreter has {len(nodes)} nodes, the model {model_ops} ops")
    orig, dels = nodes[:model_ops], nodes[model_ops:]
    others = sorted({d["op_name"] for d in dels if d["op_name"] != DELEGATE_NODE})
    if others:  # the layout this walk relies on changed
        raise ValueError(f"unexpected nodes after the model's ops: {others}")
    producer = {int(t): i for i, n in enumerate(orig) for t in n["outputs"]}
    summary = DelegateSummary(model_ops)
    for d in dels:
        stop = {int(t) for t in d["inputs"]}
        stack = [int(t) for t in d["outputs"]]
        replaced: set[int] = set()
        while stack:
            t = stack.pop()
            if t in stop:
                continue
            p = producer.get(t)
            if p is None or p in replaced:
                continue
            replaced.add(p)
            stack.extend(int(u) for u in orig[p]["inputs"] if u >= 0)
        summary.partitions.append(replaced)
    return summary


def histogram(names: list[str]) -> str:
    """'DEPTHWISE_CONV_2D×17, ADD×2', most frequent first."""
    return ", ".join(f"{k}×{v}" for k, v in Counter(names).most_common())
