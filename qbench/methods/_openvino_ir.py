"""OpenVINO IR in one file: the artifact format "openvino".

An IR is an .xml graph plus a .bin of weights; qbench's cache keeps (and hashes) one file per
entry, so both travel in one container, written here and read by qbench.backends.openvino
without unpacking anything to disk:

    8 bytes   magic b"QBOVIR1\\0" (the container's version is its last digit)
    8 bytes   length H of the header, little-endian
    H bytes   header, UTF-8 JSON: xml_bytes, bin_bytes, sha256 (of xml + bin),
              inference_precision (f32, bf16 or f16: what the backend runs under its
              `inference_precision: auto`), openvino (the version that wrote it), notes
    xml_bytes the IR's .xml
    bin_bytes the IR's .bin

The sizes must add up to the file's, and the payload's SHA-256 must match, or the file is
refused with one line (ContainerError). `make_precision_ir` writes the IR of a model's fp32
ONNX export marked with the precision its bf16/fp16 cells run in.
"""

from __future__ import annotations

import hashlib
import json
import struct
import tempfile
from pathlib import Path
from typing import Any

MAGIC = b"QBOVIR1\0"
_HEADER_LEN = struct.Struct("<Q")
PREFIX = len(MAGIC) + _HEADER_LEN.size
MAX_HEADER = 1 << 20
# OpenVINO's names for the inference precisions a container may ask for
PRECISIONS = ("f32", "bf16", "f16")
# method name -> the precision its IR runs in
METHOD_PRECISION = {"fp32": "f32", "bf16": "bf16", "fp16": "f16"}


class ContainerError(ValueError):
    """A file that is not a whole, intact qbench OpenVINO IR container (one line)."""


def pack(out: Path, xml: bytes, weights: bytes, meta: dict[str, Any]) -> dict[str, Any]:
    """Write `xml` and `weights` (the .bin) with `meta` to `out`; returns the header."""
    precision = meta.get("inference_precision", "f32")
    if precision not in PRECISIONS:
        raise ValueError(f"inference_precision {precision!r}: one of {', '.join(PRECISIONS)}")
    digest = hashlib.sha256(xml)
    digest.update(weights)
    header = {
        **meta,
        "inference_precision": precision,
        "xml_bytes": len(xml),
        "bin_bytes": len(weights),
        "sha256": digest.hexdigest(),
    }
    text = json.dumps(header, sort_keys=True).encode()
    with open(out, "wb") as f:
        f.write(MAGIC)
        f.write(_HEADER_LEN.pack(len(text)))
        f.write(text)
        f.write(xml)
        f.write(weights)
    return header


def unpack(path: Path) -> tuple[dict[str, Any], bytes, bytearray]:
    """(header, xml, weights) of a container; ContainerError (one line) for anything else."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            prefix = f.read(PREFIX)
            if len(prefix) < PREFIX or prefix[: len(MAGIC)] != MAGIC:
                raise ContainerError(f"{path}: not a qbench OpenVINO IR container (no "
                                     f"{MAGIC[:7].decode()} header)")  # fmt: skip
            (length,) = _HEADER_LEN.unpack(prefix[len(MAGIC) :])
            if length > min(MAX_HEADER, size - PREFIX):
                raise ContainerError(f"{path}: OpenVINO IR container header of {length} bytes "
                                     f"in a file of {size} (truncated or damaged)")  # fmt: skip
            try:
                header = json.loads(f.read(length))
                xml_len, bin_len = int(header["xml_bytes"]), int(header["bin_bytes"])
                expected = str(header["sha256"])
            except (ValueError, KeyError, TypeError) as exc:
                raise ContainerError(f"{path}: OpenVINO IR container header unreadable "
                                     f"({type(exc).__name__})") from None  # fmt: skip
            if xml_len < 0 or bin_len < 0 or PREFIX + length + xml_len + bin_len != size:
                raise ContainerError(
                    f"{path}: OpenVINO IR container holds {size - PREFIX - length} payload "
                    f"bytes, its header says {xml_len} + {bin_len} (truncated or damaged)"
                )
            xml = f.read(xml_len)
            weights = bytearray(bin_len)  # writable: the backend shares it with OpenVINO
            f.readinto(weights)
    except OSError as exc:
        raise ContainerError(f"{path}: cannot read OpenVINO IR container "
                             f"({exc.strerror or exc})") from None  # fmt: skip
    digest = hashlib.sha256(xml)
    digest.update(weights)
    if digest.hexdigest() != expected:
        raise ContainerError(f"{path}: OpenVINO IR container payload does not match its "
                             "SHA-256 (corrupted)")  # fmt: skip
    if header.get("inference_precision", "f32") not in PRECISIONS:
        raise ContainerError(f"{path}: OpenVINO IR container asks for inference precision "
                             f"{header.get('inference_precision')!r}")  # fmt: skip
    return header, xml, weights


def header_of(path: Path) -> dict[str, Any]:
    """The container's header, its payload checked."""
    return unpack(path)[0]


def save_model(
    model: Any, out: Path, meta: dict[str, Any], compress_to_fp16: bool = False
) -> dict[str, Any]:
    """Serialize an ov.Model as IR into one container at `out`. Weights stay in their types
    (OpenVINO's save_model would compress float32 weights to float16 unless told not to)."""
    import openvino as ov

    with tempfile.TemporaryDirectory(prefix="qbench-ovir-") as tmp:
        xml = Path(tmp) / "model.xml"
        ov.save_model(model, str(xml), compress_to_fp16=compress_to_fp16)
        weights = xml.with_suffix(".bin")
        data = weights.read_bytes() if weights.exists() else b""
        return pack(out, xml.read_bytes(), data, {"openvino": ov.__version__, **meta})


def read_model(core: Any, path: Path) -> tuple[Any, dict[str, Any], Any]:
    """(ov.Model, header, weights tensor) of a container, read from memory: nothing is unpacked
    to disk. Keep the tensor alive as long as the model: its constants may share its memory."""
    import numpy as np
    import openvino as ov

    header, xml, weights = unpack(path)
    tensor = ov.Tensor(np.frombuffer(weights, np.uint8), shared_memory=True)
    try:
        model = core.read_model(model=xml.decode(), weights=tensor)
    except (RuntimeError, UnicodeDecodeError) as exc:
        reason = " ".join(str(exc).split())[:300]
        raise ContainerError(f"{path}: OpenVINO cannot read the IR it holds: {reason}") from None
    return model, header, tensor


# op type -> the input port its weight arrives on (Gather: an embedding table)
WEIGHT_PORTS = {"Convolution": 1, "GroupConvolution": 1, "MatMul": 1, "Gather": 0}
_CHAIN = ("Convert", "Subtract", "Multiply", "Reshape", "Transpose")
_WEIGHT_TYPES = ("f32", "f16", "bf16", "i8", "u8", "i4", "u4", "i2", "u2", "nf4")


def weight_sources(model: Any, gather: bool = False) -> dict[str, Any]:
    """op friendly name -> the Constant (or FakeQuantize) its weight comes from, for each
    Convolution/GroupConvolution/MatMul (and Gather where `gather`) whose weight input is a
    constant, followed back through the Convert/Subtract/Multiply/Reshape/Transpose chain
    NNCF writes for compressed weights. Op names survive NNCF; weight names may not (it
    transposes some MatMul weights into new constants)."""
    found: dict[str, Any] = {}
    for op in model.get_ordered_ops():
        port = WEIGHT_PORTS.get(op.get_type_name())
        if port is None or (port == 0 and not gather):
            continue
        node = op.input_value(port).get_node()
        for _ in range(8):  # the decompression chain is short
            kind = node.get_type_name()
            if kind == "FakeQuantize":
                found[op.get_friendly_name()] = node
                break
            if kind == "Constant":
                if node.get_element_type().get_type_name() in _WEIGHT_TYPES:
                    found[op.get_friendly_name()] = node
                break
            if kind not in _CHAIN:
                break
            node = node.input_value(0).get_node()
    return found


def compute_weights(model: Any) -> dict[str, str]:
    """weight name -> element type of each Convolution/GroupConvolution/MatMul weight that is a
    constant (FakeQuantize'd weights: 'fq')."""
    out = {}
    for node in weight_sources(model).values():
        kind = node.get_type_name()
        out[node.get_friendly_name()] = (
            "fq" if kind == "FakeQuantize" else node.get_element_type().get_type_name()
        )
    return out


def make_precision_ir(ctx: Any, out: Path, precision: str) -> dict[str, Any]:
    """The IR of ctx's fp32 ONNX export, marked to run in `precision` (bf16, fp16/f16 or
    fp32/f32) under the openvino backend's `inference_precision: auto`; written to `out`.
    fp16 stores its weights as float16 (converted back by the CPU plugin at compile where it
    runs f16); bf16 keeps float32 weights, which the CPU plugin converts to bf16 at compile.
    Returns the artifact metadata the method adds to its row (artifact_notes)."""
    import openvino as ov

    precision = METHOD_PRECISION.get(precision, precision)
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r}: one of {', '.join(PRECISIONS)} "
                         "(or the method names fp32, bf16, fp16)")  # fmt: skip
    model = ov.convert_model(str(ctx.fp32_onnx()))
    half_weights = precision == "f16"
    save_model(model, out, {"inference_precision": precision, "producer": "make_precision_ir"},
               compress_to_fp16=half_weights)  # fmt: skip
    stored = "float16" if half_weights else "float32"
    version = ov.__version__.split("-")[0]
    return {
        "artifact_notes": [
            f"OpenVINO {version} IR of the fp32 ONNX export, {stored} weights, marked to run "
            f"with INFERENCE_PRECISION_HINT {precision}"
        ]
    }
