"""Coral Edge TPU through LiteRT's external-delegate API (libedgetpu).

Runs a model compiled by edgetpu_compiler: the ops the compiler mapped are fused into
`edgetpu-custom-op` ops that the EdgeTPU delegate executes; the other ops stay on the CPU
(XNNPACK or builtin kernels, as for the `litert` backend). Inputs, outputs, batching and the
timed call are those of the litert session (see qbench/backends/litert.py).

How many of the *source* model's ops the compiler mapped cannot be read back from the compiled
file (each custom op swallows a whole segment): those counts come from the compiler's log, which
the edgetpu method stores in the artifact's metadata (accelerator_nodes, graph_nodes). This
backend reports which delegate took what in the compiled graph it ran (see EdgetpuSession).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform
from functools import cache
from pathlib import Path
from typing import Any

from pydantic import Field

from qbench.backends._tflite_graph import (
    EDGETPU_CUSTOM_OP,
    delegate_partitions,
    histogram,
    read_tflite_graph,
)
from qbench.backends.base import Backend, Session
from qbench.backends.litert import LitertParams, LitertSession, litert_version
from qbench.cache import read_meta
from qbench.params import Params
from qbench.plugins import backends

_LIBRARY = {"Linux": "libedgetpu.so.1", "Darwin": "libedgetpu.1.dylib", "Windows": "edgetpu.dll"}
_INSTALL = {
    "Linux": "install libedgetpu1-std from Coral's apt repository",
    "Darwin": "install the Edge TPU runtime for macOS from coral.ai/software",
    "Windows": "install the Edge TPU runtime for Windows from coral.ai/software",
}
_EXTRA_DIRS = {
    "Linux": ("/usr/lib", "/usr/local/lib", "/usr/lib/x86_64-linux-gnu",
              "/usr/lib/aarch64-linux-gnu", "/usr/lib/arm-linux-gnueabihf"),
    "Darwin": ("/usr/local/lib", "/opt/homebrew/lib"),
    "Windows": (),
}  # fmt: skip
_PATH_VARS = {"Linux": "LD_LIBRARY_PATH", "Darwin": "DYLD_LIBRARY_PATH", "Windows": "PATH"}


class EdgeTpuUnavailable(RuntimeError):
    """The Edge TPU runtime library or device could not be loaded."""


class EdgetpuParams(LitertParams):
    device: str | None = Field(
        default=None,
        description="Edge TPU to use: usb, usb:N, pci, pci:N (default: the first found)",
    )


def edgetpu_library_name(system: str) -> str:
    """File name of the Edge TPU runtime library on `system` (platform.system())."""
    try:
        return _LIBRARY[system]
    except KeyError:
        raise EdgeTpuUnavailable(f"no Edge TPU runtime for {system}") from None


def install_hint(system: str) -> str:
    return _INSTALL.get(system, "see coral.ai/software")


def delegate_options(params: EdgetpuParams) -> dict[str, str]:
    """Options for load_delegate: libedgetpu reads `device` ("usb", "usb:0", "pci:0")."""
    return {"device": params.device} if params.device else {}


@cache
def find_edgetpu_library(system: str | None = None) -> str | None:
    """Where the runtime library is (a path, or a name the loader resolves), or None.

    Looks without loading it: the library path variable and the usual folders, then
    ctypes.util.find_library (the ldconfig cache on Linux, PATH on Windows). Cached: it runs
    while planning, once per cell.
    """
    system = system or platform.system()
    if system not in _LIBRARY:
        return None
    name = edgetpu_library_name(system)
    dirs = [d for d in os.environ.get(_PATH_VARS[system], "").split(os.pathsep) if d]
    for folder in (*dirs, *_EXTRA_DIRS[system]):
        candidate = Path(folder) / name
        if candidate.is_file():
            return str(candidate)
    if system == platform.system():
        found = ctypes.util.find_library("edgetpu")
        if found and (system != "Linux" or Path(found).name.startswith("libedgetpu.so")):
            return found
    return None


def edgetpu_unavailable_reason(system: str | None = None) -> str | None:
    system = system or platform.system()
    if system not in _LIBRARY:
        return f"no Edge TPU runtime for {system}"
    if find_edgetpu_library(system) is None:
        name = edgetpu_library_name(system)
        return f"EdgeTPU runtime library {name} not found ({install_hint(system)})"
    return None


def load_edgetpu_delegate(library: str, options: dict[str, str]) -> Any:
    """load_delegate, with its failures (OSError: no library; ValueError: no device) as one
    clear EdgeTpuUnavailable."""
    from ai_edge_litert.interpreter import load_delegate

    try:
        # load_delegate opens the library the same way; opening it first turns a missing one
        # into an OSError here, before a half-made Delegate whose __del__ prints an
        # AttributeError when collected.
        ctypes.PyDLL(library)
        return load_delegate(library, options)
    except (OSError, ValueError) as exc:
        where = f" ({options['device']})" if options.get("device") else ""
        raise EdgeTpuUnavailable(
            f"cannot load the Edge TPU delegate from {library}{where}: {exc}"
        ) from exc


def count_edgetpu_ops(op_names: list[str]) -> tuple[int, list[str]]:
    """(edgetpu-custom-op ops, names of the other ops: those that run on the CPU)."""
    tpu = sum(name == EDGETPU_CUSTOM_OP for name in op_names)
    return tpu, [name for name in op_names if name != EDGETPU_CUSTOM_OP]


class EdgetpuSession(LitertSession):
    """A litert session whose interpreter carries the Edge TPU delegate.

    Row fields in a compiled model (one with edgetpu-custom-op ops) are in the units of the
    *source* model, like the edgetpu method's compiler-log figures (accelerator_nodes,
    graph_nodes) that reach the row from the artifact's metadata: graph_nodes, compute_nodes
    and quantized_nodes are left to them (the compiled file hides the ops inside each custom
    op), and delegated_nodes is the compiler's mapped-op count once the delegate is seen to
    have taken every custom op. The compiled graph's own counts go into a note.
    """

    delegate_name = "EdgeTPU"

    def inspect(self) -> dict[str, Any]:
        row = super().inspect()
        names = read_tflite_graph(self.path).op_names
        summary = delegate_partitions(self.interpreter, len(names))
        # Partitions holding an edgetpu-custom-op are the Edge TPU delegate's; the others are
        # XNNPACK's, which LiteRT still applies to the CPU ops.
        tpu_parts = [p for p in summary.partitions if any(names[i] == EDGETPU_CUSTOM_OP for i in p)]
        cpu_parts = [p for p in summary.partitions if p not in tpu_parts]
        taken = sum(names[i] == EDGETPU_CUSTOM_OP for i in set().union(*tpu_parts))
        xnnpack_ops = set().union(*cpu_parts)
        custom, cpu = count_edgetpu_ops(names)
        builtin = [names[i] for i in summary.undelegated()]
        row["notes"][0] = (
            f"compiled graph: {custom} {EDGETPU_CUSTOM_OP} op(s), {len(cpu)} CPU op(s)"
            + (f" ({histogram(cpu)})" if cpu else "")
            + f"; the Edge TPU delegate took {taken} custom op(s), XNNPACK {len(xnnpack_ops)}"
            + f" op(s) in {len(cpu_parts)} partition(s), builtin kernels ran {len(builtin)}"
            + (f" ({histogram(builtin)})" if builtin else "")
        )
        row["delegate"] = "EdgeTPU" if taken else "none"
        if not custom:  # not a compiled model: the compiled graph is the whole model
            row["delegated_nodes"] = 0
            return row
        for key in ("graph_nodes", "compute_nodes", "quantized_nodes", "delegated_nodes"):
            del row[key]
        row["notes"][1] = f"CPU {row['notes'][1]}"
        mapped = read_meta(self.path).get("accelerator_nodes")
        if taken == 0:
            row["delegated_nodes"] = 0
        elif taken == custom and mapped is not None:
            row["delegated_nodes"] = int(mapped)
        elif taken < custom:
            row["notes"].append(f"the Edge TPU delegate left {custom - taken} of {custom} "
                                f"{EDGETPU_CUSTOM_OP} op(s) unclaimed")  # fmt: skip
        return row


@backends.register
class EdgetpuBackend(Backend):
    name = "edgetpu"
    description = "Coral Edge TPU (edgetpu_compiler output) through LiteRT and libedgetpu"
    Params = EdgetpuParams
    loads = ("edgetpu",)
    requires = ("ai_edge_litert",)

    def unavailable(self) -> str | None:
        return super().unavailable() or edgetpu_unavailable_reason()

    def version(self) -> str:
        return litert_version()

    def open(self, artifact: Path, fmt: str, threads: int, params: Params) -> Session:
        assert isinstance(params, EdgetpuParams)
        system = platform.system()
        reason = edgetpu_unavailable_reason(system)
        if reason:  # checked first: load_delegate of a missing library also prints noise
            raise EdgeTpuUnavailable(reason)
        library = find_edgetpu_library(system) or edgetpu_library_name(system)
        delegate = load_edgetpu_delegate(library, delegate_options(params))
        return EdgetpuSession(artifact, threads, xnnpack=params.xnnpack, delegates=[delegate])
