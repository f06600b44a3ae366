"""Weight-only blockwise quantization through ONNX Runtime's MatMulNBits (4-bit by default).

The fp32 ONNX export's MatMul/Gemm weights become 2/4/8-bit integers with one float32 scale per
block of `block_size` weights along the input dimension (K), and a packed zero point per block
when asymmetric; activations stay float32 (accuracy_level=4 lets ORT quantize them to int8 per
block at run time). ONNX Runtime's `MatMulNBitsQuantizer` does the quantization and packing.

Torch exports Linear layers as Gemm, which that quantizer does not take: every Gemm with a
constant 2-D float32 weight (alpha=1, beta=1, transA=0) is first rewritten as MatMul (+ Add of
its bias), the weight transposed for transB=1 (`gemm_to_matmul`). Convolutions are not touched:
MatMulNBits has no convolution form, so CNNs keep their Conv layers in float32.

Which kernel ORT's CPU provider runs depends on the bit width, block size and accuracy level
(`GetComputeType` in ORT's matmul_nbits.cc and MLAS's kernel table). Observed with ORT 1.32 on
x86-64 (AVX2): 4-bit has float-compute kernels for every block size and int8-compute ones with
accuracy_level=4; 8-bit has int8-compute kernels only (accuracy_level=4); 2-bit has int8-compute
kernels for block sizes 32-128 only. Without a kernel ORT dequantizes the whole weight to
float32 on every run and calls SGEMM (13-30x slower than fp32 on a 2048x2048 MatMul): those
cells are labelled `simulated`.

LiteRT (tflite, torch models): ai-edge-quantizer's 4/8-bit recipes on the fp32 conversion, which
quantize CONV_2D and FULLY_CONNECTED weights (DEPTHWISE_CONV_2D too at 8 bits) symmetric per
output channel: block_size is not used (it takes its default only). accuracy_level=4 gives
dynamic_wi{bits}_afp32 (hybrid kernels quantize the activations to int8 at run time: native);
otherwise weight_only_wi{bits}_afp32, a DEQUANTIZE to float32 in front of each weight and float
kernels (simulated). 2-bit and asymmetric weights are not built for LiteRT. rounding=gptq
re-rounds the quantizer's int8/int4 weights with GPTQ (Frantar et al. 2022) on its own scales,
Hessians of each layer's inputs from the calibration inputs run through the fp32 .tflite
(qbench.methods._litert_quant.gptq_weights): LiteRT only.
"""

from __future__ import annotations

import contextlib
import io
import logging
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field

from qbench.methods.base import MakeContext, Method, fp32_tflite, packed_bytes
from qbench.params import Params
from qbench.plugins import methods

FLOAT_BITS = 32  # ORT stores one scale per block in the weight's own type: float32 here

# Weight bits/block sizes with an MLAS kernel for each compute type (ORT 1.32, x86-64): the rest
# run ORT's dequantize-then-SGEMM fallback. 4 = accuracy_level 4 (int8 compute).
_KERNELS: dict[str, dict[int, tuple[int, ...]]] = {
    "float32": {4: (16, 32, 64, 128, 256)},
    "int8": {4: (16, 32, 64, 128, 256), 8: (16, 32, 64, 128, 256), 2: (32, 64, 128)},
}


class WeightOnlyParams(Params):
    bits: Literal[2, 4, 8] = Field(
        default=4,
        description="weight bits (ORT's MatMulNBits takes 2, 4 or 8; on x86 CPUs only 4-bit "
        "has float-compute kernels, 2/8-bit need accuracy_level=4)",
    )
    block_size: Literal[16, 32, 64, 128, 256] = Field(
        default=32,
        description="weights per scale along the input dimension K (MLAS quantizes blocks of "
        "16 to 256)",
    )
    symmetric: bool = Field(
        default=True,
        description="scale only (True) or scale + a packed `bits`-wide zero point per block",
    )
    accuracy_level: Literal[None, 0, 1, 2, 3, 4] = Field(
        default=None,
        description="MatMulNBits accuracy_level, the minimum precision of the activation input "
        "in the product: 1 fp32, 2 fp16, 3 bf16, 4 int8 (the activations are quantized to int8 "
        "per block at run time, int32 accumulation); None/0 leave it unset. ORT's x86 CPU "
        "kernels compute in fp32 at every level but 4",
    )
    rounding: Literal["nearest", "gptq"] = Field(
        default="nearest",
        description="nearest: round each weight to its nearest level; gptq: GPTQ (Frantar et "
        "al. 2022) chooses each weight's rounding to minimise the layer's output error on "
        "calibration inputs, on the same scales (tflite format only; needs calibration)",
    )

    omitted_at_default: ClassVar[dict[str, Any]] = {"rounding": "nearest"}


def _compute(params: WeightOnlyParams) -> str:
    """'int8' where ORT's CPU kernel quantizes the activations, else 'float32'."""
    int8 = _KERNELS["int8"].get(params.bits, ())
    return "int8" if params.accuracy_level == 4 and params.block_size in int8 else "float32"


def _has_kernel(params: WeightOnlyParams) -> bool:
    return params.block_size in _KERNELS[_compute(params)].get(params.bits, ())


@methods.register
class WeightOnly(Method):
    name = "weight_only"
    description = "4-bit (2/8) blockwise weight-only MatMul/Gemm through ORT's MatMulNBits"
    Params = WeightOnlyParams
    produces = ("onnx", "tflite")

    def needs_calibration(self, params: Params) -> bool:
        assert isinstance(params, WeightOnlyParams)
        return params.rounding == "gptq"  # GPTQ's Hessians come from the calibration inputs

    def execution(self, fmt: str, params: Params) -> str:
        assert isinstance(params, WeightOnlyParams)
        if fmt == "tflite":
            return "native" if params.accuracy_level == 4 else "simulated"
        return "native" if _has_kernel(params) else "simulated"

    def describe(self, fmt: str, params: Params) -> dict[str, Any]:
        assert isinstance(params, WeightOnlyParams)
        if fmt == "tflite":
            return _describe_tflite(params)
        int8 = _compute(params) == "int8"
        notes = []
        if params.accuracy_level == 4 and not int8:
            notes.append(f"accuracy_level=4: ORT's CPU has no int8-compute kernel for "
                         f"{params.bits}-bit weights in blocks of {params.block_size}; "
                         f"activations stay float32")  # fmt: skip
        if not _has_kernel(params):
            notes.append(f"ORT's CPU has no {params.bits}-bit kernel for this block size and "
                         "accuracy level: it dequantizes the weights to float32 on every run "
                         "and runs a float GEMM")  # fmt: skip
        row: dict[str, Any] = {
            "bits_w": params.bits,
            "bits_a": 8 if int8 else 32,
            "granularity": "per_group",
            "group_size": params.block_size,
            "symmetric_weights": params.symmetric,
            "act_dtype": "int8" if int8 else "float32",
            "weight_dtype": f"int{params.bits}" if params.symmetric else f"uint{params.bits}",
            "weight_scheme": "uniform",
        }
        if notes:
            row["notes"] = notes
        if int8:
            row["calibrator"] = "dynamic"  # activation ranges taken per block at run time
        return row

    def unsupported(self, fmt: str, params: Params, source: Any) -> str | None:
        # Whether the model has a MatMul/Gemm layer is known only from its graph, which
        # unsupported() does not get (and torch models would need torch imported while
        # planning): make() raises a ValueError that names the model instead.
        if fmt == "tflite":
            assert isinstance(params, WeightOnlyParams)
            return super().unsupported(fmt, params, source) or _tflite_unsupported(params)
        if fmt != "onnx":
            return f"{self.name} builds ONNX (MatMulNBits) and LiteRT artifacts only"
        assert isinstance(params, WeightOnlyParams)
        if params.rounding == "gptq":
            return ("rounding=gptq is built for LiteRT (tflite) only; the ONNX MatMulNBits path "
                    "rounds to nearest")  # fmt: skip
        return super().unsupported(fmt, params, source)

    def make(self, fmt: str, params: Params, ctx: MakeContext, out: Path) -> dict[str, Any]:
        assert isinstance(params, WeightOnlyParams)
        if fmt == "tflite":
            return _make_tflite(params, ctx, out)
        assert fmt == "onnx"
        import onnx

        from qbench.backends.onnxruntime import count_compute_nodes

        model = onnx.load(str(ctx.fp32_onnx()))
        _, compute_before, _ = count_compute_nodes([n.op_type for n in model.graph.node])
        layers = weight_matrices(model)
        if not layers:
            raise ValueError(
                f"model {ctx.model_name} has no MatMul/Gemm layer with a constant 2-D float32 "
                "weight for MatMulNBits (weight-only quantization leaves Conv layers alone)"
            )
        model, rewritten, origin = gemm_to_matmul(model)
        quantized = quantize_matmul_nbits(model, params)
        ops = [n.op_type for n in quantized.graph.node]
        converted = ops.count("MatMulNBits")
        if converted == 0:
            raise ValueError(f"ONNX Runtime's MatMulNBits quantizer left every layer of model "
                             f"{ctx.model_name} in float32")  # fmt: skip
        onnx.save(quantized, str(out))
        # Count the weights ORT really took (it names them "<weight>_Q<bits>"); every eligible
        # one if that naming ever changes.
        taken = {n.input[1].removesuffix(f"_Q{params.bits}") for n in quantized.graph.node
                 if n.op_type == "MatMulNBits"}  # fmt: skip
        took = {origin.get(name, name) for name in taken}
        layers = {k: v for k, v in layers.items() if k in took} or layers

        def bits(name: str, weight: Any) -> int | None:
            # Torch models are counted on their modules (layer name + ".weight" is the
            # exported initializer's name), ONNX files on their initializers.
            dims = layers.get(name) or layers.get(f"{name}.weight")
            return None if dims is None else matmul_nbits_bits(*dims, params)

        note = (f"MatMulNBits covers MatMul/Gemm layers only: {converted} of {compute_before} "
                "compute nodes quantized")  # fmt: skip
        if rewritten:
            note += f" ({rewritten} Gemm rewritten as MatMul for it)"
        _, _, left = count_compute_nodes([op for op in ops if op != "MatMulNBits"])
        if left:
            note += "; " + ", ".join(f"{op}×{n}" for op, n in sorted(left.items()))
            note += " stay float32"
        return {"packed_bytes": packed_bytes(ctx, bits), "artifact_notes": [note]}


def matmul_nbits_bits(k: int, n: int, params: WeightOnlyParams) -> int:
    """Packed bits of a K x N weight: `bits` per weight, one float32 scale per block of
    `block_size` along K (the last block may be short) and, when asymmetric, a `bits`-wide zero
    point per block."""
    blocks = n * -(-k // params.block_size)
    zero_point_bits = 0 if params.symmetric else params.bits
    return k * n * params.bits + blocks * (FLOAT_BITS + zero_point_bits)


def weight_matrices(model: Any) -> dict[str, tuple[int, int]]:
    """Initializer name -> (K, N) of each MatMul/Gemm weight MatMulNBits can take: a constant
    2-D float32 B, of a MatMul or of a Gemm that `gemm_to_matmul` rewrites."""
    from onnx import TensorProto

    inits = {i.name: i for i in model.graph.initializer}
    found: dict[str, tuple[int, int]] = {}
    for node in model.graph.node:
        if node.op_type not in ("MatMul", "Gemm") or len(node.input) < 2:
            continue
        weight = inits.get(node.input[1])
        if weight is None or len(weight.dims) != 2 or weight.data_type != TensorProto.FLOAT:
            continue
        k, n = weight.dims
        if node.op_type == "Gemm":
            if not _plain_gemm(node):
                continue
            if _attr(node, "transB", 0):
                k, n = n, k
        found[weight.name] = (int(k), int(n))
    return found


def _attr(node: Any, name: str, default: Any) -> Any:
    from onnx import helper

    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _plain_gemm(node: Any) -> bool:
    """Y = A B' (+ C): no transposed A, no alpha/beta scaling."""
    has_c = len(node.input) > 2 and node.input[2] != ""
    return (
        _attr(node, "transA", 0) == 0
        and _attr(node, "alpha", 1.0) == 1.0
        and (not has_c or _attr(node, "beta", 1.0) == 1.0)
    )


def gemm_to_matmul(model: Any) -> tuple[Any, int, dict[str, str]]:
    """A copy of `model` with each Gemm whose B is a constant 2-D float32 initializer (alpha=1,
    beta=1, transA=0) replaced by MatMul(A, B) (+ Add of C); with transB=1 the MatMul gets a
    transposed copy of B. Gemm's A is 2-D by definition, so MatMul computes the same product.
    Returns the copy, the number of Gemm nodes rewritten and the original name of each
    transposed weight copy (one per weight, however many Gemms share it)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    taken = {i.name for i in graph.initializer} | {v.name for v in graph.input}
    taken |= {name for node in graph.node for name in [*node.input, *node.output, node.name]}

    def fresh(base: str) -> str:
        name, i = base, 1
        while name in taken:
            name, i = f"{base}_{i}", i + 1
        taken.add(name)
        return name

    nodes, rewritten, transposed = [], 0, {}
    for node in graph.node:
        weight = inits.get(node.input[1]) if node.op_type == "Gemm" else None
        if (
            weight is None
            or len(weight.dims) != 2
            or weight.data_type != TensorProto.FLOAT
            or not _plain_gemm(node)
        ):
            nodes.append(node)
            continue
        b = weight.name
        if _attr(node, "transB", 0):
            if b not in transposed:
                transposed[b] = fresh(f"{b}_transposed")
                array = numpy_helper.to_array(weight).T.copy()
                graph.initializer.append(numpy_helper.from_array(array, transposed[b]))
            b = transposed[b]
        has_c = len(node.input) > 2 and node.input[2] != ""
        product = fresh(f"{node.output[0]}_matmul") if has_c else node.output[0]
        nodes.append(helper.make_node("MatMul", [node.input[0], b], [product],
                                      name=fresh(f"{node.name or 'gemm'}_matmul")))  # fmt: skip
        if has_c:
            nodes.append(helper.make_node("Add", [product, node.input[2]], [node.output[0]],
                                          name=fresh(f"{node.name or 'gemm'}_bias")))  # fmt: skip
        rewritten += 1
    graph.ClearField("node")
    graph.node.extend(nodes)
    # Drop the transposed weights' originals that nothing reads any more.
    used = {name for node in graph.node for name in node.input}
    unused = [i for i in graph.initializer if i.name in transposed and i.name not in used]
    for init in unused:
        graph.initializer.remove(init)
    for value in [v for v in graph.input if v.name in transposed and v.name not in used]:
        graph.input.remove(value)
    return model, rewritten, {new: old for old, new in transposed.items()}


def quantize_matmul_nbits(model: Any, params: WeightOnlyParams) -> Any:
    """ONNX Runtime's MatMulNBitsQuantizer (QOperator format: MatMulNBits contrib nodes) with
    these parameters; returns the quantized ModelProto."""
    from onnxruntime.quantization import QuantFormat
    from onnxruntime.quantization.matmul_nbits_quantizer import (
        DefaultWeightOnlyQuantConfig,
        MatMulNBitsQuantizer,
    )

    config = DefaultWeightOnlyQuantConfig(
        block_size=params.block_size,
        is_symmetric=params.symmetric,
        accuracy_level=params.accuracy_level,
        quant_format=QuantFormat.QOperator,
        op_types_to_quantize=("MatMul",),
        bits=params.bits,
    )
    logger = logging.getLogger("onnxruntime.quantization.matmul_nbits_quantizer")
    level = logger.level
    logger.setLevel(logging.ERROR)  # it logs every node at INFO
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            quantizer = MatMulNBitsQuantizer(model, algo_config=config)
            quantizer.process()
    finally:
        logger.setLevel(level)
    return quantizer.model.model


# --- LiteRT ----------------------------------------------------------------------------------


def _tflite_unsupported(params: WeightOnlyParams) -> str | None:
    reasons = []
    if params.bits == 2:
        reasons.append("LiteRT path builds 4- and 8-bit weights only (bits=2)")
    if not params.symmetric:
        reasons.append("LiteRT's kernels take symmetric weights only (symmetric=False)")
    if params.block_size != WeightOnlyParams().block_size:
        reasons.append(f"LiteRT path quantizes weights per output channel; block_size takes its "
                       f"default ({WeightOnlyParams().block_size}) only")  # fmt: skip
    return "; ".join(reasons) or None


def _describe_tflite(params: WeightOnlyParams) -> dict[str, Any]:
    dynamic = params.accuracy_level == 4
    notes = ["LiteRT: ai-edge-quantizer quantizes Conv and FullyConnected weights (not only "
             "MatMul/Gemm) per output channel; block_size is not used"]  # fmt: skip
    if params.bits == 4:
        notes.append("4-bit: DEPTHWISE_CONV_2D weights stay float32 (ai-edge-quantizer's policy)")
    if dynamic:
        notes.append("accuracy_level=4: hybrid kernels quantize the activations to int8 at run "
                     "time")  # fmt: skip
    else:
        notes.append("weights dequantized to float32 by DEQUANTIZE ops; float kernels")
    if params.rounding == "gptq":
        notes.append("rounding=gptq: GPTQ (Frantar et al. 2022) chose each weight's integer on "
                     "ai-edge-quantizer's per-channel scales to minimise its layer's output error "
                     "on the calibration inputs (Hessians from the fp32 .tflite)")  # fmt: skip
    row: dict[str, Any] = {
        "bits_w": params.bits,
        "bits_a": 8 if dynamic else 32,
        "granularity": "per_channel",
        "symmetric_weights": True,
        "act_dtype": "int8" if dynamic else "float32",
        "weight_dtype": f"int{params.bits}",
        "weight_scheme": "uniform",
        "notes": notes,
    }
    if dynamic:
        row["calibrator"] = "dynamic"  # activation ranges; GPTQ's inputs: calib_samples
    elif params.rounding == "gptq":
        row["calibrator"] = "gptq"  # the calibration inputs give GPTQ's Hessians only
    return row


def _make_tflite(params: WeightOnlyParams, ctx: MakeContext, out: Path) -> dict[str, Any]:
    from qbench.methods._litert_quant import (
        aeq_version,
        dynamic_range,
        rewrite_notes,
        weight_bits,
        weight_dtypes,
        weight_only,
    )

    fp32 = fp32_tflite(ctx)
    gptq = params.rounding == "gptq"
    if gptq and (ctx.calib is None or len(ctx.calib) == 0):
        raise ValueError(f"model {ctx.model_name}: rounding=gptq needs calibration inputs")
    build = dynamic_range if params.accuracy_level == 4 else weight_only
    found = build(fp32, out, params.bits, ctx.calib if gptq else None, gptq=gptq)
    kind = "dynamic" if params.accuracy_level == 4 else "weight_only"
    recipe = f"{kind}_wi{params.bits}_afp32"
    dtypes = weight_dtypes(out)
    taken = dtypes.get(f"int{params.bits}", 0)
    note = (f"LiteRT {params.bits}-bit weights (ai-edge-quantizer {aeq_version()} {recipe}): "
            f"{taken} of {sum(dtypes.values())} CONV_2D/DEPTHWISE_CONV_2D/FULLY_CONNECTED "
            "weights quantized")  # fmt: skip
    if taken == 0:
        raise ValueError(f"ai-edge-quantizer left every weight of model {ctx.model_name} in "
                         "float32")  # fmt: skip
    notes = [note, *rewrite_notes(found)]
    if gptq:
        rewritten = found.get("gptq_weights", 0)
        if rewritten != taken:  # never leave a weight rounded to nearest without saying so
            raise ValueError(f"GPTQ re-rounded {rewritten} of the {taken} int{params.bits} "
                             f"weights of model {ctx.model_name}")  # fmt: skip
        assert ctx.calib is not None
        notes.append(f"GPTQ rounding of all {rewritten} int{params.bits} weights, Hessians "
                     f"from {len(ctx.calib)} calibration inputs")  # fmt: skip
    return {"packed_bytes": packed_bytes(ctx, weight_bits(params.bits)), "artifact_notes": notes}
