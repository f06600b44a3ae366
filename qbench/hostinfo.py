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

from qbench.cpuinfo import QUANT_FLAGS  # noqa: F401  (re-exported)

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


def cpu_info(text: str | None = None) -> dict[str, Any]:
    """CPU model and the QUANT_FLAGS it has, from /proc/cpuinfo (or `text`).

    On ARM the model names the cores from their part numbers, after the board where the
    kernel names it: "Raspberry Pi 5 Model B Rev 1.0 (4x Cortex-A76)".
    """
    from qbench.cpuinfo import parse_cpuinfo

    if text is None:
        try:
            text = Path("/proc/cpuinfo").read_text()
        except OSError:
            text = ""
    parsed = parse_cpuinfo(text)
    model = parsed["model"] or platform.processor() or platform.machine()
    if parsed["arch"] == "arm" and parsed["board"]:
        model = f"{parsed['board']} ({model})"
    return {"cpu_model": model, "cpu_flags": parsed["quant_flags"]}


def device_cpu(cpuinfo: Path = Path("/proc/cpuinfo")) -> tuple[dict[str, Any], str | None]:
    """The result row's device_cpu_model/device_cpu_flags, read where this process runs.

    The agent's measure stage calls it, so over ssh or adb they name the device's CPU, not
    the host's. With no readable /proc/cpuinfo (macOS, Windows) the flags stay empty and the
    second item says why (a note for the row); otherwise it is None.
    """
    try:
        text = cpuinfo.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        model = platform.processor() or platform.machine() or None
        why = f"{cpuinfo} is not readable ({type(exc).__name__})"
        return (
            {"device_cpu_model": model, "device_cpu_flags": None},
            f"device_cpu_flags empty: {why} where the cell was measured",
        )
    cpu = cpu_info(text)
    return {"device_cpu_model": cpu["cpu_model"], "device_cpu_flags": cpu["cpu_flags"]}, None


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


def onednn_isa() -> str | None:
    """The ISA oneDNN dispatches torch's kernels to on this host (its verbose `isa:` line, which
    names AMX where torch's get_cpu_capability() does not), under this environment's
    ONEDNN_MAX_CPU_ISA. Read in a child interpreter (importing torch here would cost the run
    ~1 s and hold its memory) and remembered per CPU, torch version and cap in the cache."""
    import json
    from importlib.util import find_spec

    from qbench.cache import cache_root
    from qbench.params import stable_hash

    if find_spec("torch") is None:
        return None
    torch_version = None
    with contextlib.suppress(PackageNotFoundError):
        torch_version = version("torch")
    cpu = cpu_info()
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA")
    key = stable_hash([cpu["cpu_model"], cpu["cpu_flags"], torch_version, cap])
    path = cache_root() / "host" / f"onednn-isa-{key}.json"
    with contextlib.suppress(OSError, ValueError):
        return json.loads(path.read_text())["isa"]
    from qbench.backends._onednn import host_isa

    isa = host_isa()
    if isa:
        with contextlib.suppress(OSError):
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps({"isa": isa}))
            tmp.replace(path)
    return isa


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
        "onednn_isa": onednn_isa(),
    }
