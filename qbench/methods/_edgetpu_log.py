"""Parse what Coral's `edgetpu_compiler` prints, and the operation log it writes.

Two inputs share this parser:

* the compiler's stdout (with `-s`, it includes the operator table), for example::

    Edge TPU Compiler version 16.0.384591198
    Started a compilation timeout timer of 180 seconds.

    Model compiled successfully in 3173 ms.

    Input model: yolov5s-int8-224.tflite
    ...
    On-chip memory used for caching model parameters: 6.08MiB
    On-chip memory remaining for caching model parameters: 0.00B
    Off-chip memory used for streaming uncached model parameters: 1.70MiB
    Number of Edge TPU subgraphs: 2
    Total number of operations: 294
    Operation log: yolov5s-int8-224_edgetpu.log

    Model successfully compiled but not all operations are supported by the Edge TPU. ...
    Number of operations that will run on Edge TPU: 289
    Number of operations that will run on CPU: 5

    Operator                       Count      Status

    TRANSPOSE                      1          Operation is otherwise supported, but not ...
    CONV_2D                        62         Mapped to Edge TPU
    Compilation child process completed within timeout period.
    Compilation succeeded!

* the operation log `<model>_edgetpu.log` that the compiler writes next to the compiled model.
  It has the version line, `Input:` / `Output:` and the same operator table. It has no
  summary lines.

When every op maps, the "not all operations" paragraph and both `Number of operations that
will run on ...` lines are missing. The parser then gives tpu_ops = total_ops and cpu_ops = 0.
Failures print the version line and then the reason, for example `Invalid model: m.tflite` /
`Model not quantized`, `Internal compiler error. Aborting!`, or `ERROR: ...` /
`Compilation failed: ...` / `Compilation failed!`.

Real recorded logs are in tests/data/edgetpu/ (SOURCES.md names where each came from).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

MAPPED = "Mapped to Edge TPU"

_UNITS = {
    "B": 1,
    "KiB": 1024,
    "MiB": 1024**2,
    "GiB": 1024**3,
    "KB": 1000,
    "MB": 1000**2,
    "GB": 1000**3,
}
_SIZE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([KMG]?i?B)\s*$")
_ROW = re.compile(r"^([A-Z][A-Z0-9_]*)\s+(\d+)\s+(\S.*?)\s*$")
_HEADER = re.compile(r"^Operator\s+Count\s+Status\s*$")

# Lines the compiler prints around a compilation that say nothing about why it failed.
_BOILERPLATE = (
    "Edge TPU Compiler version",
    "Started a compilation timeout timer",
    "Searching for valid delegate",
    "Try to compile segment",
    "Compilation child process completed within timeout period",
    "Compilation failed!",
    "Compilation succeeded!",
)


def size_to_bytes(text: str) -> int:
    """'5.90MiB' -> 6186598, '41.75KiB' -> 42752, '0.00B' -> 0 (rounded to whole bytes).

    The compiler prints IEC units (B, KiB, MiB). KB / MB / GB are read as powers of 1000."""
    m = _SIZE.match(text)
    if not m:
        raise ValueError(f"not a size: {text!r}")
    return round(float(m.group(1)) * _UNITS[m.group(2)])


@dataclass(frozen=True)
class OperatorRow:
    """One row of the compiler's operator table. One op type can appear in several rows, one
    per status."""

    op: str
    count: int
    status: str

    @property
    def mapped(self) -> bool:
        return self.status == MAPPED


@dataclass
class EdgeTpuCompileReport:
    """What one edgetpu_compiler run reported. None means the log does not say."""

    compiled: bool
    source: str  # "stdout" or "operation_log" (the <model>_edgetpu.log file)
    compiler_version: str | None = None
    compile_ms: int | None = None
    input_model: str | None = None
    output_model: str | None = None
    input_bytes: int | None = None
    output_bytes: int | None = None
    on_chip_used_bytes: int | None = None
    on_chip_remaining_bytes: int | None = None
    on_chip_available_bytes: int | None = None  # compilers 2.0.x print this instead
    off_chip_used_bytes: int | None = None
    subgraphs: int | None = None
    total_ops: int | None = None
    tpu_ops: int | None = None
    cpu_ops: int | None = None
    operators: list[OperatorRow] = field(default_factory=list)
    error_lines: list[str] = field(default_factory=list)
    # Raw memory strings as printed ("5.90MiB"), for notes.
    memory_text: dict[str, str] = field(default_factory=dict)

    @property
    def error(self) -> str | None:
        """Why the compilation failed, in the compiler's words (None when it succeeded)."""
        if self.compiled:
            return None
        return "; ".join(self.error_lines) or "edgetpu_compiler reported no reason"

    @property
    def short_version(self) -> str | None:
        """'16.0' from '16.0.384591198'."""
        if not self.compiler_version:
            return None
        return ".".join(self.compiler_version.split(".")[:2])

    @property
    def cpu_rows(self) -> list[OperatorRow]:
        return [r for r in self.operators if not r.mapped]

    def summary(self) -> str:
        """'edgetpu_compiler 16.0: 69 of 70 ops mapped to the EdgeTPU in 1 subgraph;
        CPU: TRANSPOSE×1 (Operation not supported)'."""
        version = self.short_version or "?"
        if not self.compiled:
            return f"edgetpu_compiler {version} failed: {self.error}"
        text = (
            f"edgetpu_compiler {version}: {self.tpu_ops} of {self.total_ops} ops mapped to the "
            "EdgeTPU"
        )
        if self.subgraphs is not None:
            text += f" in {self.subgraphs} subgraph{'' if self.subgraphs == 1 else 's'}"
        if self.cpu_rows:
            by_status: dict[str, list[str]] = {}
            for r in self.cpu_rows:
                by_status.setdefault(r.status, []).append(f"{r.op}×{r.count}")
            text += "; CPU: " + "; ".join(f"{', '.join(ops)} ({s})" for s, ops in by_status.items())
        elif self.cpu_ops:
            text += f"; {self.cpu_ops} ops on the CPU"
        return text

    def memory_note(self) -> str | None:
        """'parameters: 5.90MiB cached on-chip, 41.75KiB streamed from the host every inference'."""
        cached = self.memory_text.get("on_chip_used")
        streamed = self.memory_text.get("off_chip_used")
        if cached is None and streamed is None:
            return None
        parts = []
        if cached is not None:
            parts.append(f"{cached} cached on-chip")
        if streamed is not None:
            parts.append(f"{streamed} streamed from the host every inference")
        return "EdgeTPU parameters: " + ", ".join(parts)


_FIELDS = {
    # line prefix -> (attribute, kind)
    "Input model: ": ("input_model", str),
    "Output model: ": ("output_model", str),
    "Input: ": ("input_model", str),  # operation log
    "Output: ": ("output_model", str),  # operation log
    "Input size: ": ("input_bytes", "size"),
    "Output size: ": ("output_bytes", "size"),
    "On-chip memory used for caching model parameters: ": ("on_chip_used_bytes", "size"),
    "On-chip memory remaining for caching model parameters: ": (
        "on_chip_remaining_bytes",
        "size",
    ),
    "On-chip memory available for caching model parameters: ": (
        "on_chip_available_bytes",
        "size",
    ),
    "Off-chip memory used for streaming uncached model parameters: ": (
        "off_chip_used_bytes",
        "size",
    ),
    "Number of Edge TPU subgraphs: ": ("subgraphs", int),
    "Total number of operations: ": ("total_ops", int),
    "Number of operations that will run on Edge TPU: ": ("tpu_ops", int),
    "Number of operations that will run on CPU: ": ("cpu_ops", int),
}


def parse_operator_table(lines: Iterable[str]) -> list[OperatorRow]:
    """Rows after the `Operator  Count  Status` header (other lines are skipped)."""
    rows: list[OperatorRow] = []
    in_table = False
    for line in lines:
        if _HEADER.match(line.strip()):
            in_table = True
            continue
        if not in_table:
            continue
        m = _ROW.match(line.strip())
        if m:
            rows.append(OperatorRow(m.group(1), int(m.group(2)), m.group(3)))
    return rows


def parse_compiler_log(text: str) -> EdgeTpuCompileReport:
    """Parse edgetpu_compiler stdout (+ stderr) or a `<model>_edgetpu.log` file.

    One model per call: with several models (co-compilation) or segments, the first block's
    summary lines are the ones kept."""
    lines = text.splitlines()
    values: dict[str, object] = {}
    memory_text: dict[str, str] = {}
    version = None
    compile_ms = None
    for raw in lines:
        line = raw.strip()
        m = re.match(r"^Edge TPU Compiler version (\S+)", line)
        if m and version is None:
            version = m.group(1)
            continue
        m = re.match(r"^Models? compiled successfully in (\d+) ms", line)
        if m and compile_ms is None:
            compile_ms = int(m.group(1))
            continue
        for prefix, (attr, kind) in _FIELDS.items():
            if line.startswith(prefix) and attr not in values:
                value = line[len(prefix) :].strip()
                if kind == "size":
                    memory_text[attr.removesuffix("_bytes")] = value
                    values[attr] = size_to_bytes(value)
                elif kind is int:
                    values[attr] = int(value)
                else:
                    values[attr] = value
                break

    operators = parse_operator_table(lines)
    is_operation_log = (
        compile_ms is None
        and "total_ops" not in values
        and any(line.startswith("Output: ") for line in lines)
        and bool(operators)
    )
    failed = any(
        line.strip().startswith(("Compilation failed", "Invalid model", "Internal compiler error"))
        or "did not complete within timeout" in line
        for line in lines
    )
    # The operation log is only written for a model that compiled.
    compiled = (compile_ms is not None or is_operation_log) and not failed

    report = EdgeTpuCompileReport(
        compiled=compiled,
        source="operation_log" if is_operation_log else "stdout",
        compiler_version=version,
        compile_ms=compile_ms,
        operators=operators,
        memory_text=memory_text,
        **values,  # type: ignore[arg-type]
    )
    if report.total_ops is None and operators:
        report.total_ops = sum(r.count for r in operators)
    if compiled:
        # All ops mapped: the compiler prints neither "Number of operations ..." line.
        if report.cpu_ops is None:
            report.cpu_ops = sum(r.count for r in report.cpu_rows)
        if report.tpu_ops is None and report.total_ops is not None:
            report.tpu_ops = report.total_ops - report.cpu_ops
    else:
        report.error_lines = [
            line.strip()
            for line in lines
            if line.strip() and not line.strip().startswith(_BOILERPLATE)
        ]
    return report
