"""Cells that expect a speedup the hardware cannot give: int8 on a CPU without VNNI/AMX (x86)
or the dot product (ARM), fp16/bf16 arithmetic on a CPU without fp16/bf16 instructions; and
cells on a CPU with AMX whose oneDNN kernels did not use it (an `isa` cap: torch rows record
the kernels that ran in onednn_kernels), whose speed is below what that CPU gives the type.

Data-driven: a row's compute type comes from its act_dtype/weight_dtype and execution, the
CPU's ISA flags from the row's own `device_cpu_flags` (read by the agent where the cell was
measured: the device itself over ssh/adb, a fleet node under an executor). A row without them
(a store from before that column) falls back to its run's `cpu_flags` (the host fingerprint)
only when the cell ran on that host: transport subprocess, and no executor node whose host
differs from the run's. Rows on GPUs/TPUs, simulated rows and rows whose CPU flags are unknown
(adb benchmark_model rows, remote rows of old stores) get no warning.
"""

from __future__ import annotations

from typing import Any

from qbench.report.data import is_missing

ROW_FLAG_COLUMN = "device_cpu_flags"
LOCAL_TRANSPORTS = ("subprocess",)
INT_TYPES = ("int8", "uint8")


def compute_type(act_dtype: Any, weight_dtype: Any) -> str | None:
    """ "int8", "fp16", "bf16" or None: which kernels a native cell asks the CPU for."""
    act = "" if is_missing(act_dtype) else str(act_dtype)
    weight = "" if is_missing(weight_dtype) else str(weight_dtype)
    if act in INT_TYPES and weight.startswith(("int", "uint")):
        return "int8"
    if act == "float16" and weight == "float16":
        return "fp16"
    if act == "bfloat16" and weight == "bfloat16":
        return "bf16"
    return None


def _flags(value: Any) -> list[str] | None:
    from qbench.report.fmt import text_list

    if is_missing(value):
        return None
    flags = text_list(value)
    return flags or None


def warning_for(kind: str, flags: list[str]) -> tuple[str, str] | None:
    """(sentence, short label) when `flags` cannot run `kind` kernels fast, else None."""
    from qbench.probe import cpu_arch, kernel_readiness

    arch = cpu_arch(flags)
    if arch is None:
        return None
    why = kernel_readiness(flags)[kind]
    if why is None:
        return None
    shown = " ".join(flags)
    if kind == "int8":
        if arch == "x86":
            return (
                f"int8 on a CPU without VNNI or AMX (flags: {shown}): integer kernels can't "
                "beat fp32 by much here",
                "no VNNI: little int8 gain",
            )
        return (
            f"int8 on a CPU without the int8 dot product (asimddp) or i8mm (flags: {shown}): "
            "integer kernels can't beat fp32 by much here",
            "no dot product: little int8 gain",
        )
    name = "fp16" if kind == "fp16" else "bf16"
    return (
        f"{name} compute on a CPU without {name} arithmetic ({why}; flags: {shown}): its "
        f"kernels convert to fp32, expect no speedup over fp32",
        f"no {name} arithmetic: runs as fp32",
    )


AMX_FLAG = {"int8": "amx_int8", "bf16": "amx_bf16", "fp16": "amx_fp16"}


def amx_unused(kind: str, flags: list[str], kernels: Any) -> tuple[str, str] | None:
    """(sentence, label) for a cell whose CPU has AMX for its type but whose oneDNN kernels
    (torch rows: onednn_kernels) ran without it: an `isa` cap, or a kernel oneDNN has no AMX
    form of. Its speed is not what this CPU can give that type."""
    flag = AMX_FLAG.get(kind)
    if flag is None or flag not in flags or is_missing(kernels) or not str(kernels).strip():
        return None
    if "amx" in str(kernels).lower():
        return None
    return (
        f"{kind} on a CPU with {flag.upper().replace('_', '-')} whose oneDNN kernels ran "
        f"without AMX ({kernels}): an ISA cap or a kernel without an AMX form; this CPU can "
        "run it faster",
        "AMX not used",
    )


def _ran_on_run_host(row: Any, run_hosts: dict[str, str | None]) -> bool:
    """Whether the row's cell was measured on the host its run's fingerprint describes."""
    transport = row.get("transport")
    if not is_missing(transport) and str(transport) not in LOCAL_TRANSPORTS:
        return False
    node_host = row.get("executor_host")
    if is_missing(node_host):
        return True
    run_host = run_hosts.get(str(row.get("run_id")))
    return run_host is not None and str(node_host) == run_host


def hardware_warnings(df: Any, runs: Any) -> tuple[Any, Any]:
    """(sentence, short label) Series on the index of `df` (the prepared results), None where
    the row expects nothing the hardware cannot give."""
    import pandas as pd

    run_flags: dict[str, list[str] | None] = {}
    run_hosts: dict[str, str | None] = {}
    if runs is not None and len(runs):
        for _, run in runs.iterrows():
            rid = str(run.get("run_id"))
            run_flags[rid] = _flags(run.get("cpu_flags"))
            host = run.get("host")
            run_hosts[rid] = None if is_missing(host) else str(host)
    sentences = pd.Series([None] * len(df), index=df.index, dtype=object)
    shorts = pd.Series([None] * len(df), index=df.index, dtype=object)
    for idx, row in df.iterrows():
        if str(row.get("status")) != "ok" or str(row.get("execution")) != "native":
            continue
        if str(row.get("device_kind")) != "cpu":
            continue
        kind = compute_type(row.get("act_dtype"), row.get("weight_dtype"))
        if kind is None:
            continue
        flags = _flags(row.get(ROW_FLAG_COLUMN))
        if flags is None and _ran_on_run_host(row, run_hosts):
            flags = run_flags.get(str(row.get("run_id")))
        if not flags:
            continue
        found = warning_for(kind, flags) or amx_unused(kind, flags, row.get("onednn_kernels"))
        if found:
            sentences[idx], shorts[idx] = found
    return sentences, shorts


def banner(df: Any) -> str:
    """A visible block listing the warned cells, grouped by warning; "" when there are none."""
    from qbench.report.fmt import esc

    if "hw_warning" not in df.columns:
        return ""
    warned = df[df["hw_warning"].notna()]
    if warned.empty:
        return ""
    items = []
    for sentence, group in warned.groupby("hw_warning", sort=True):
        cells = sorted({str(c) for c in group["cell_id"]})
        listed = "".join(f"<li><code>{esc(c)}</code></li>" for c in cells)
        items.append(f"<li>{esc(sentence)} — {len(cells)} cell(s):<ul>{listed}</ul></li>")
    return (
        '<div class="hwwarn" id="hardware-warnings"><b>⚠ Hardware cannot give the expected '
        f"speedup for {len(warned)} row(s).</b> Their speedup is marked ⚠ in the table."
        f"<ul>{''.join(items)}</ul></div>"
    )
