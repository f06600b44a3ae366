"""Coral EdgeTPU: a full-integer int8 .tflite (static_int8's LiteRT path) compiled with Coral's
`edgetpu_compiler`.

The compiler maps the longest supported run of ops from the model's input into one Edge TPU
custom op. Ops it cannot map, and by default every op after the first unmapped one ("More than
one subgraph is not supported"), stay as builtin TFLite ops and run on the host CPU. Its log
gives the op counts and the operator table. They become the row's accelerator_nodes (ops on the
Edge TPU) and graph_nodes (all ops), plus a note that names the ops left on the CPU.

The compiler is closed source and x86-64 Linux only: the apt package `edgetpu-compiler` from
Coral's repository (https://coral.ai/docs/edgetpu/compiler/). Without it on PATH every cell of
this method is planned as skipped, with that reason.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field

from qbench.methods._edgetpu_log import EdgeTpuCompileReport, parse_compiler_log
from qbench.methods.base import MakeContext, Method, packed_bytes
from qbench.methods.packing import int8_weight_bits
from qbench.models.base import already_quantized
from qbench.params import Params
from qbench.plugins import methods

COMPILER = "edgetpu_compiler"
NO_COMPILER = (
    "edgetpu_compiler not found on PATH (Coral's compiler: x86-64 Linux, apt package "
    "edgetpu-compiler from Coral's repository)"
)
# Wall-clock limit of one compiler run. The 16.x compiler also stops itself after 180 s by
# default ("Started a compilation timeout timer of 180 seconds").
COMPILE_TIMEOUT_S = 600


def _given_quantized(source: Any) -> bool:
    """The model is a .tflite file of the user's that is already quantized."""
    return source.format == "tflite" and bool(already_quantized(source))


class EdgeTpuParams(Params):
    min_runtime_version: int | None = Field(
        default=None,
        ge=10,
        description="lowest Edge TPU runtime the compiled model must run on (edgetpu_compiler "
        "-m); None: the compiler's default, its own runtime version",
    )
    search_delegate: bool = Field(
        default=False,
        description="edgetpu_compiler --search_delegate (compiler 16+): when compilation "
        "fails, retry with the Edge TPU segment cut earlier in the graph (the rest runs on "
        "the CPU)",
    )
    # What static_int8's LiteRT path does before the compiler sees the model: none of it
    # changes the graph the Edge TPU maps, only ranges, float weights and integer choices.
    calibrator: Literal["minmax", "entropy", "percentile", "mse"] = Field(
        default="minmax",
        description="activation ranges of the full-integer model (static_int8's calibrators)",
    )
    percentile: float = Field(
        default=99.999, gt=50, le=100, description="with calibrator=percentile (static_int8's)"
    )
    equalize: bool = Field(
        default=False,
        description="cross-layer equalization of the float model first (static_int8's)",
    )
    rounding: Literal["nearest", "gptq"] = Field(
        default="nearest", description="int8 weight rounding (static_int8's: nearest or gptq)"
    )
    output_range_scale: float = Field(
        default=2.0,
        ge=1,
        le=16,
        description="the model outputs' calibrated range times this (static_int8's)",
    )

    omitted_at_default: ClassVar[dict[str, Any]] = {
        "calibrator": "minmax",
        "percentile": 99.999,
        "equalize": False,
        "rounding": "nearest",
    }


def compiler_command(compiler: str, model: Path, out_dir: Path, params: EdgeTpuParams) -> list[str]:
    """The edgetpu_compiler command line for `model`. `-s` prints the operator table and `-o`
    puts `<stem>_edgetpu.tflite` and `<stem>_edgetpu.log` in out_dir."""
    cmd = [compiler, "-s", "-o", str(out_dir)]
    if params.min_runtime_version is not None:
        cmd += ["-m", str(params.min_runtime_version)]
    if params.search_delegate:
        cmd.append("--search_delegate")
    cmd.append(str(model))
    return cmd


class EdgeTpuCompileError(RuntimeError):
    """edgetpu_compiler rejected the model; the message holds the compiler's own reason."""


def compile_for_edgetpu(
    compiler: str,
    model: Path,
    out_dir: Path,
    params: EdgeTpuParams,
    timeout_s: float = COMPILE_TIMEOUT_S,
) -> tuple[Path, EdgeTpuCompileReport]:
    """Run the compiler on `model`. Returns the compiled model's path and the parsed report.
    Raises EdgeTpuCompileError, which quotes the compiler's error text, if compilation fails."""
    out_dir.mkdir(parents=True, exist_ok=True)
    cmd = compiler_command(compiler, model, out_dir, params)
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired as exc:
        raise EdgeTpuCompileError(
            f"edgetpu_compiler did not finish within {timeout_s:g} s: {' '.join(cmd)}"
        ) from exc
    output = (proc.stdout or "") + ("\n" + proc.stderr if proc.stderr else "")
    report = parse_compiler_log(output)
    compiled = out_dir / f"{model.stem}_edgetpu.tflite"
    if proc.returncode != 0 or not report.compiled or not compiled.is_file():
        reason = report.error if not report.compiled else None
        if reason is None:
            reason = (
                f"exit status {proc.returncode}"
                if proc.returncode != 0
                else f"no {compiled.name} written"
            )
        tail = "\n".join(output.strip().splitlines()[-20:])
        raise EdgeTpuCompileError(
            f"edgetpu_compiler failed ({reason}); command: {' '.join(cmd)}\n{tail}"
        )
    op_log = out_dir / f"{model.stem}_edgetpu.log"
    if not report.operators and op_log.is_file():
        # Without the table on stdout, take it from the operation log.
        report.operators = parse_compiler_log(op_log.read_text()).operators
    return compiled, report


def _static_int8() -> Method:
    return methods.get("static_int8")()


def _static_params(static: Method, params: EdgeTpuParams) -> Params:
    """static_int8's parameters for the full-integer .tflite: int8 asymmetric activations, int8
    symmetric per-channel weights (its LiteRT path's only weight layout), integer model I/O,
    with this method's calibrator, equalization and rounding."""
    wanted = {
        "calibrator": params.calibrator,
        "percentile": params.percentile,
        "equalize": params.equalize,
        "rounding": params.rounding,
        "output_range_scale": params.output_range_scale,
        "activations": "int8",
        "per_channel": True,
    }
    known = static.Params.model_fields
    return static.Params(**{k: v for k, v in wanted.items() if k in known})


@methods.register
class EdgeTpu(Method):
    name = "edgetpu"
    description = "full-integer int8 .tflite compiled for the Coral EdgeTPU with edgetpu_compiler"
    Params = EdgeTpuParams
    produces = ("edgetpu",)
    uses_calibration = True
    version = 2  # 2: the full-integer model's outputs widened (static_int8 version 5)

    def describe(self, fmt: str, params: Params) -> dict[str, Any]:
        assert isinstance(params, EdgeTpuParams)
        row: dict[str, Any] = {
            "bits_w": 8,
            "bits_a": 8,
            "granularity": "per_channel",
            "calibrator": params.calibrator,
            "symmetric_weights": True,
            "act_dtype": "int8",
            "weight_dtype": "int8",
            "weight_scheme": "uniform",
        }
        if params.calibrator == "percentile":
            row["percentile"] = params.percentile
        return row

    def unsupported(self, fmt: str, params: Params, source: Any) -> str | None:
        assert isinstance(params, EdgeTpuParams)
        if source.format == "onnx":
            return (
                f"model {source.name} is an ONNX file; the full-integer .tflite is exported "
                "from its torch module (litert-torch) or given as a .tflite file"
            )
        if shutil.which(COMPILER) is None:
            return NO_COMPILER
        if _given_quantized(source):
            return None  # an int8 .tflite of the user's is compiled as it is
        static = _static_int8()
        if "tflite" not in static.produces:
            return "static_int8 builds no tflite artifact in this qbench (needed as input)"
        reason = static.unsupported("tflite", _static_params(static, params), source)
        if reason:
            return f"static_int8 tflite: {reason}"
        return None

    def make(self, fmt: str, params: Params, ctx: MakeContext, out: Path) -> dict[str, Any]:
        assert isinstance(params, EdgeTpuParams)
        compiler = shutil.which(COMPILER)
        if compiler is None:
            raise EdgeTpuCompileError(NO_COMPILER)
        static = _static_int8()
        with tempfile.TemporaryDirectory(prefix="qbench-edgetpu-") as tmp:
            model = Path(tmp) / "model.tflite"
            if _given_quantized(ctx.source):  # the user's int8 file, compiled as it is
                shutil.copyfile(ctx.model.tflite_path, model)
                from qbench.methods.packing import packed_bytes_tflite

                static_meta = {"artifact_notes": ["compiled the .tflite file as given"],
                               "packed_bytes": packed_bytes_tflite(model, None)}  # fmt: skip
            else:
                static_meta = static.make("tflite", _static_params(static, params), ctx,
                                          model) or {}  # fmt: skip
            compiled, report = compile_for_edgetpu(compiler, model, Path(tmp) / "out", params)
            shutil.copyfile(compiled, out)
        notes = [report.summary()]
        memory = report.memory_note()
        if memory:
            notes.append(memory)
        notes += [n for n in static_meta.get("artifact_notes", []) if n not in notes]
        weights = static_meta.get("packed_bytes")
        if weights is None:
            weights = packed_bytes(ctx, int8_weight_bits(8, True))
        return {
            "packed_bytes": weights,
            "accelerator_nodes": report.tpu_ops,
            "graph_nodes": report.total_ops,
            "delegate": "EdgeTPU",
            "artifact_notes": notes,
        }
