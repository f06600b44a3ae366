"""oneDNN, the kernel library under torch's CPU convolutions and matmuls: which instruction set
it really uses, and capping it.

`torch.backends.cpu.get_cpu_capability()` names ATen's vector ISA ("AVX512") and never AMX, yet
oneDNN runs bf16 and int8 convolutions on AMX tiles where the CPU has them. oneDNN says which
ISA it dispatches to in its verbose output: an `info,cpu,isa:` line when verbose mode first
prints, and each executed primitive's implementation (`brg_conv_fwd:avx512_core_amx`). Both are
read here by sending the process's stdout (file descriptor 1, where oneDNN's C code prints)
to a temporary file for the duration of one call.

`ONEDNN_MAX_CPU_ISA` caps the dispatch (e.g. `AVX512_CORE_BF16` turns AMX off). oneDNN reads it
once, when its first primitive is created, so it must be set before any convolution runs in the
process; `set_isa_cap` does that and `observed_isa` reports what oneDNN then took, so a cap that
came too late shows in the row instead of passing silently.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Callable
from typing import Any

ISA_ENV = "ONEDNN_MAX_CPU_ISA"
# oneDNN's documented ONEDNN_MAX_CPU_ISA values for x86 (dev_guide_cpu_dispatcher_control),
# lowest to highest; qbench's `isa` option takes them in lower case.
ISA_LEVELS = (
    "sse41",
    "avx",
    "avx2",
    "avx2_vnni",
    "avx2_vnni_2",
    "avx512_core",
    "avx512_core_vnni",
    "avx512_core_bf16",
    "avx10_1_512",
    "avx512_core_fp16",
    "avx10_1_512_amx",
    "avx512_core_amx",
    "avx10_1_512_amx_fp16",
    "avx512_core_amx_fp16",
    "avx10_2_512",
    "avx10_2_512_amx_2",
    "default",
)
_PRIMITIVE = re.compile(r"^onednn_verbose,(?:v\d+,)?(?:[^,]*,)?primitive,exec,cpu,([^,]+),([^,]+),")
_observed: str | None = None  # the info line's ISA, once per process: oneDNN prints it once


def set_isa_cap(isa: str | None) -> None:
    """Cap oneDNN's ISA for this process (None: no cap). Takes effect only before the first
    oneDNN primitive is created; observed_isa() says whether it did."""
    if isa:
        os.environ[ISA_ENV] = isa.upper()


def capture_stdout(fn: Callable[[], Any]) -> str:
    """What C code printed to file descriptor 1 while `fn` ran (Python's own prints too)."""
    sys.stdout.flush()
    libc = ctypes.CDLL(None)
    saved = os.dup(1)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 1)
        try:
            fn()
        finally:
            libc.fflush(None)  # oneDNN prints through C stdio: flush before restoring the fd
            os.dup2(saved, 1)
            os.close(saved)
        sink.seek(0)
        return sink.read().decode("utf-8", errors="replace")


def verbose_text(fn: Callable[[], Any]) -> str:
    """oneDNN's verbose output while `fn` runs (fn's own return value is dropped)."""
    import torch

    def run() -> None:
        with torch.backends.mkldnn.verbose(torch.backends.mkldnn.VERBOSE_ON):
            fn()

    text = capture_stdout(run)
    global _observed
    isa = isa_from_verbose(text)
    if isa:
        _observed = isa
    return text


def isa_from_verbose(text: str) -> str | None:
    """The ISA of oneDNN's `info,cpu,isa:` line, e.g. "Intel AVX10.1 and Intel AMX with
    bfloat16 and 8-bit integer support"."""
    for line in text.splitlines():
        _, found, isa = line.partition(",info,cpu,isa:")
        if found:
            return isa.strip()
    return None


def kernels_from_verbose(text: str) -> Counter[str]:
    """Executed primitives by kind and implementation: {"convolution brg_conv_fwd:avx512_core_amx":
    20, ...}; reorders (layout changes) left out."""
    found: Counter[str] = Counter()
    for line in text.splitlines():
        m = _PRIMITIVE.match(line)
        if m and m.group(1) != "reorder":
            found[f"{m.group(1)} {m.group(2)}"] += 1
    return found


def observed_isa() -> str | None:
    """The ISA oneDNN dispatches to in this process: read once (a 64-channel convolution with
    verbose on), then remembered. None where torch has no oneDNN."""
    if _observed is None:
        import torch

        if not torch.backends.mkldnn.is_available():
            return None

        def conv() -> None:
            x = torch.randn(1, 64, 28, 28).contiguous(memory_format=torch.channels_last)
            torch.nn.functional.conv2d(x, torch.randn(64, 64, 3, 3))

        verbose_text(conv)
    return _observed


def cap_excludes_amx(isa: str | None) -> bool:
    """Whether an `isa` cap lies below oneDNN's first AMX level (ISA_LEVELS is in order;
    `default` is no cap)."""
    return bool(isa) and ISA_LEVELS.index(str(isa)) < ISA_LEVELS.index("avx10_1_512_amx")


def uses_amx(isa_or_kernels: str | None) -> bool:
    """Whether an ISA line or a kernel list names AMX."""
    return bool(isa_or_kernels) and "amx" in str(isa_or_kernels).lower()


def kernel_summary(kernels: Counter[str], limit: int = 6) -> str:
    """ "convolution brg_conv_fwd:avx512_core_amx x20, inner_product ... x1" (most used first)."""
    return ", ".join(f"{name} x{n}" for name, n in kernels.most_common(limit))


def host_isa(timeout: float = 60.0) -> str | None:
    """oneDNN's ISA on this host under this process's environment (a cap in ONEDNN_MAX_CPU_ISA
    applies), read in a fresh interpreter so nothing here imports torch or initialises oneDNN.
    None where torch is missing or the child fails."""
    code = "from qbench.backends._onednn import observed_isa; print(observed_isa() or '')"
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=tempfile.gettempdir(),  # not a checkout: python -c puts the cwd on sys.path
            env={**os.environ, "PYTHONPATH": _package_parent()},
        )
        if out.returncode == 0:
            return out.stdout.strip().splitlines()[-1] if out.stdout.strip() else None
    return None


def _package_parent() -> str:
    from pathlib import Path

    here = str(Path(__file__).resolve().parents[2])
    rest = os.environ.get("PYTHONPATH")
    return here + (os.pathsep + rest if rest else "")
