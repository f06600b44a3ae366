"""A fingerprint of the host: CPU, ISA flags, memory, OS, Python and package versions."""

from __future__ import annotations

import contextlib
import os
import platform
import socket
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

# ISA flags that decide which quantized kernels are fast (x86 and ARM spellings).
QUANT_FLAGS = (
    "avx2",
    "fma",
    "f16c",
    "avx512f",
    "avx512bw",
    "avx512_vnni",
    "avx_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "amx_tile",
    "amx_int8",
    "amx_bf16",
    "avx_vnni_int8",
    "asimd",
    "asimddp",
    "asimdhp",
    "i8mm",
    "bf16",
    "sve",
    "sve2",
    "fphp",
)
PACKAGES = (
    "qbench",
    "numpy",
    "torch",
    "onnx",
    "onnxruntime",
    "ai-edge-litert",
    "litert-torch",
    "ai-edge-quantizer",
    "pandas",
    "pyarrow",
    "plotly",
    "scikit-learn",
    "pydantic",
)


def cpu_info() -> dict[str, Any]:
    model, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip().lower()
            if key in ("model name", "hardware", "cpu model") and model in (
                "",
                platform.machine(),
                platform.processor(),
            ):
                model = value.strip()
            elif key in ("flags", "features"):
                flags.update(value.split())
    except OSError:
        pass
    return {"cpu_model": model, "cpu_flags": [f for f in QUANT_FLAGS if f in flags]}


def _physical_cores() -> int | None:
    try:
        import psutil

        return psutil.cpu_count(logical=False)
    except Exception:
        return None


def _ram_gb() -> float | None:
    try:
        pages, size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        return round(pages * size / 2**30, 2)
    except (ValueError, OSError):
        return None


def package_versions() -> dict[str, str]:
    out = {}
    for name in PACKAGES:
        with contextlib.suppress(PackageNotFoundError):
            out[name] = version(name)
    return out


def git_sha() -> str | None:
    repo = Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def fingerprint() -> dict[str, Any]:
    import json

    return {
        "host": socket.gethostname(),
        **cpu_info(),
        "cores_logical": os.cpu_count(),
        "cores_physical": _physical_cores(),
        "ram_gb": _ram_gb(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "packages_json": json.dumps(package_versions(), sort_keys=True),
        "git_sha": git_sha(),
    }
