"""Detect the local host for `qbench devices probe`: CPU, ISA flags, GPUs, Edge TPU, sensors.

The parsers (parse_cpuinfo, ...) are pure functions of text, tested on recorded /proc/cpuinfo
files of real machines. probe() reads this host and returns a Device-shaped dict that
`qbench.devices.Device` accepts. Only the standard library is imported at module level; GPU
and Edge TPU checks import what they need when they run.
"""

from __future__ import annotations

import contextlib
import os
import platform
import re
import shutil
import socket
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from qbench.cpuinfo import (  # noqa: F401  (re-exported: the probe's public names)
    ARM_BF16_FAST,
    ARM_FP16_FAST,
    ARM_INT8_FAST,
    ARM_MARKERS,
    ARM_PARTS,
    QUANT_FLAGS,
    X86_BF16_FAST,
    X86_FP16_FAST,
    X86_INT8_FAST,
    X86_MARKERS,
    arm_core_name,
    cpu_arch,
    kernel_readiness,
    parse_cpuinfo,
)
from qbench.hostinfo import onednn_isa

# Coral USB Accelerator: 1a6e:089a before its firmware is loaded, 18d1:9302 after
# (https://coral.ai/docs/accelerator/get-started/, udev rules of libedgetpu).
EDGETPU_USB_IDS = {
    ("1a6e", "089a"): "Coral USB Accelerator (Global Unichip, firmware not loaded yet)",
    ("18d1", "9302"): "Coral USB Accelerator (Google, runtime attached)",
}


# Dense multiply-accumulate throughput of one x86 core per cycle, as operations (2 per MAC),
# from Intel's optimization manual and oneDNN's kernel widths, assuming two 512-bit FMA ports
# (one-port parts reach half the AVX-512 figures). AMX's TMUL: 1024 int8 MACs or 512 bf16/fp16
# MACs per cycle. Without a native instruction a type runs at the fp32 rate (converted).
X86_OPS_PER_CYCLE = {
    "fp32": (("avx512f", 64), ("avx2", 32)),
    "bf16": (("amx_bf16", 1024), ("avx512_bf16", 128)),
    "fp16": (("amx_fp16", 1024), ("avx512_fp16", 128)),
    "int8": (("amx_int8", 2048), ("avx512_vnni", 256), ("avx_vnni", 128), ("avx512bw", 128)),
}


def peak_ops_per_cycle(
    kind: str, flags: list[str] | set[str] | tuple[str, ...], amx: bool = True
) -> tuple[float, str] | None:
    """(operations per cycle per core, the instruction that gives it) for `kind` (fp32, bf16,
    fp16, int8) on an x86 CPU with these flags; amx=False: the best without AMX (what a run
    whose kernels did not use AMX, or an ISA-capped one, can reach). None off x86."""
    have = set(flags)
    if cpu_arch(have) != "x86":
        return None
    for flag, ops in X86_OPS_PER_CYCLE.get(kind, ()):
        if flag in have and (amx or not flag.startswith("amx")):
            return float(ops), flag
    if kind != "fp32":
        return peak_ops_per_cycle("fp32", have, amx)
    return None


def readiness_summary(flags: list[str] | set[str] | tuple[str, ...]) -> str:
    """One line: what quantized kernels can gain on this CPU."""
    have, ready = set(flags), kernel_readiness(flags)
    arch = cpu_arch(flags)
    if arch is None:
        return "quantized kernels: ISA flags unknown (no /proc/cpuinfo flags)"
    base = "avx512" if "avx512f" in have else ("avx2" if "avx2" in have else "sse")
    if arch == "arm":
        base = "sve2" if "sve2" in have else ("sve" if "sve" in have else "asimd")
    fast8 = [f for f in (*X86_INT8_FAST, *ARM_INT8_FAST) if f in have]
    parts = [
        f"int8: {ready['int8']} ({base} only): expect little int8 speedup"
        if ready["int8"]
        else f"int8: {'+'.join(fast8)}: integer kernels can beat fp32",
        f"fp16: {ready['fp16']}: fp16 runs as fp32"
        if ready["fp16"]
        else "fp16: native fp16 arithmetic",
        f"bf16: {ready['bf16']}: bf16 runs as fp32" if ready["bf16"] else "bf16: native bf16",
    ]
    return "; ".join(parts)


def parse_nvidia_smi(text: str) -> list[dict[str, Any]]:
    """Rows of `nvidia-smi --query-gpu=name,memory.total,driver_version,compute_cap
    --format=csv,noheader,nounits`."""
    gpus = []
    for line in text.splitlines():
        cols = [c.strip() for c in line.split(",")]
        if len(cols) < 4 or not cols[0]:
            continue
        gpu: dict[str, Any] = {"name": cols[0], "vendor": "nvidia", "driver": cols[2]}
        with contextlib.suppress(ValueError):
            gpu["memory_gb"] = round(float(cols[1]) / 1024, 1)
        if re.fullmatch(r"\d+\.\d+", cols[3]):
            gpu["compute_capability"] = cols[3]
        gpus.append(gpu)
    return gpus


# --- readers of this host ----------------------------------------------------------------------


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return None


def cpu_frequency(sys_cpu: Path = Path("/sys/devices/system/cpu")) -> dict[str, Any]:
    """max/min/current MHz from cpufreq (the fastest core on big.LITTLE), with the source."""
    out: dict[str, Any] = {}
    maxes, mins, curs = [], [], []
    for folder in sorted(sys_cpu.glob("cpu[0-9]*/cpufreq")):
        for name, into in (
            ("cpuinfo_max_freq", maxes),
            ("cpuinfo_min_freq", mins),
            ("scaling_cur_freq", curs),
        ):
            text = _read(folder / name)
            if text and text.isdigit():
                into.append(int(text) / 1000)
    if maxes:
        out = {"max_mhz": max(maxes), "min_mhz": min(mins) if mins else None}
        if curs:
            out["current_mhz"] = round(sum(curs) / len(curs), 1)
        out["source"] = "cpufreq"
    return {k: v for k, v in out.items() if v is not None}


def detect_gpus() -> dict[str, Any]:
    """GPUs through NVML (pynvml), else nvidia-smi, else torch.cuda: {"gpus": [...], "via"}.

    torch is imported only when a GPU driver is present (/proc/driver/nvidia, /dev/nvidia0,
    /dev/kfd for ROCm), so a host without one is answered in milliseconds.
    """
    try:
        import pynvml  # type: ignore[import-not-found]
    except ImportError:
        pynvml = None
    nvml_error = "pynvml not installed"
    if pynvml is not None:
        try:
            pynvml.nvmlInit()
            gpus = []
            for i in range(pynvml.nvmlDeviceGetCount()):
                handle = pynvml.nvmlDeviceGetHandleByIndex(i)
                name = pynvml.nvmlDeviceGetName(handle)
                mem = pynvml.nvmlDeviceGetMemoryInfo(handle).total
                major, minor = pynvml.nvmlDeviceGetCudaComputeCapability(handle)
                gpus.append(
                    {
                        "name": name.decode() if isinstance(name, bytes) else str(name),
                        "vendor": "nvidia",
                        "memory_gb": round(mem / 2**30, 1),
                        "compute_capability": f"{major}.{minor}",
                    }
                )
            driver = pynvml.nvmlSystemGetDriverVersion()
            for gpu in gpus:
                gpu["driver"] = driver.decode() if isinstance(driver, bytes) else str(driver)
            pynvml.nvmlShutdown()
            return {"gpus": gpus, "via": "nvml"}
        except Exception as exc:  # NVML present but no driver/GPU: try the others
            nvml_error = f"nvml: {exc}"
    driver_files = ("/proc/driver/nvidia/version", "/dev/nvidia0", "/dev/kfd")
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            text = subprocess.run(
                [
                    smi,
                    "--query-gpu=name,memory.total,driver_version,compute_cap",
                    "--format=csv,noheader,nounits",
                ],
                capture_output=True,
                text=True,
                timeout=20,
                check=True,
            ).stdout
            gpus = parse_nvidia_smi(text)
            if gpus:
                return {"gpus": gpus, "via": "nvidia-smi"}
        except (OSError, subprocess.SubprocessError):
            pass
    if not any(Path(p).exists() for p in driver_files):
        return {"gpus": [], "via": f"none: no GPU driver ({nvml_error}; no /dev/nvidia0, /dev/kfd)"}
    try:
        import torch
    except ImportError:
        return {"gpus": [], "via": f"none: {nvml_error}; torch not installed"}
    if not torch.cuda.is_available():
        return {"gpus": [], "via": f"torch {torch.__version__}: cuda not available"}
    gpus = []
    for i in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(i)
        gpus.append(
            {
                "name": props.name,
                "vendor": "amd" if getattr(torch.version, "hip", None) else "nvidia",
                "memory_gb": round(props.total_memory / 2**30, 1),
                "compute_capability": f"{props.major}.{props.minor}",
            }
        )
    return {"gpus": gpus, "via": f"torch {torch.__version__}"}


def usb_ids(root: Path = Path("/sys/bus/usb/devices")) -> list[tuple[str, str]]:
    ids = []
    for dev in sorted(root.glob("*")):
        vendor, product = _read(dev / "idVendor"), _read(dev / "idProduct")
        if vendor and product:
            ids.append((vendor.lower(), product.lower()))
    return ids


def detect_edgetpu(
    usb_root: Path = Path("/sys/bus/usb/devices"), dev: Path = Path("/dev")
) -> dict[str, Any]:
    """Coral Edge TPUs on USB (by vendor:product id) and PCIe (/dev/apex_N), and whether the
    runtime library libedgetpu can be found (without loading it)."""
    usb = [
        f"{v}:{p} {EDGETPU_USB_IDS[(v, p)]}"
        for v, p in usb_ids(usb_root)
        if (v, p) in EDGETPU_USB_IDS
    ]
    pcie = [str(p) for p in sorted(dev.glob("apex_*"))]
    out: dict[str, Any] = {"usb": usb, "pcie": pcie}
    try:
        from qbench.backends.edgetpu import edgetpu_unavailable_reason, find_edgetpu_library

        out["library"] = find_edgetpu_library()
        out["library_missing"] = edgetpu_unavailable_reason()
    except Exception as exc:  # the backend module needs numpy etc.; report, do not fail
        out["library"] = None
        out["library_missing"] = f"cannot check: {exc}"
    out["present"] = bool(usb or pcie)
    return {k: v for k, v in out.items() if v is not None}


def power_sensors(
    powercap: Path = Path("/sys/class/powercap"), hwmon: Path = Path("/sys/class/hwmon")
) -> dict[str, Any]:
    """Energy/power counters the kernel exposes: RAPL zones (powercap) and hwmon chips with
    power or energy inputs (INA3221 on Jetson, amdgpu, ...). Facts only: no meter is run."""
    rapl = []
    for zone in sorted(powercap.glob("*")):
        name = _read(zone / "name")
        if name and (zone / "energy_uj").exists():
            readable = os.access(zone / "energy_uj", os.R_OK)
            rapl.append(f"{zone.name} ({name}{'' if readable else ', energy_uj not readable'})")
    chips = []
    for chip in sorted(hwmon.glob("hwmon*")):
        inputs = sorted(
            p.name for p in chip.glob("*_input") if p.name.startswith(("power", "energy"))
        )
        if inputs:
            chips.append(f"{chip.name} ({_read(chip / 'name') or '?'}: {', '.join(inputs)})")
    return {"rapl": rapl, "hwmon": chips}


def available_backends() -> dict[str, str]:
    """Backend name -> "ok" or why it cannot run here (loads the plugin registry: ~0.5 s)."""
    from qbench.plugins import load_all

    fam = load_all()
    out = {}
    for name in fam.backends.names():
        try:
            why = fam.backends.get(name)().unavailable()
        except Exception as exc:
            why = f"error: {exc}"
        out[name] = why or "ok"
    return out


def _physical_cores() -> int | None:
    try:
        import psutil

        return psutil.cpu_count(logical=False)
    except Exception:
        return None


def probe(name: str | None = None) -> dict[str, Any]:
    """This host as a Device-shaped dict (qbench.devices.Device accepts it)."""
    text = _read(Path("/proc/cpuinfo")) or ""
    cpu = parse_cpuinfo(text)
    freq = cpu_frequency()
    if "max_mhz" not in freq and cpu["mhz"]:
        freq = {"current_mhz": cpu["mhz"], "source": "/proc/cpuinfo (current, not max)"}
    gpus = detect_gpus()
    edgetpu = detect_edgetpu()
    host = socket.gethostname()
    model = cpu["model"] or platform.processor() or platform.machine()
    isa = list(cpu["quant_flags"])
    if gpus["gpus"]:
        isa.append("cuda" if any(g["vendor"] == "nvidia" for g in gpus["gpus"]) else "rocm")
    if edgetpu["present"]:
        isa.append("edgetpu")
    facts: dict[str, Any] = {
        "host": host,
        "probed_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "os": f"{platform.system()} {platform.release()}",
        "machine": platform.machine(),
        "cpu_model": model,
        "board": cpu["board"],
        "cores_logical": os.cpu_count(),
        "cores_physical": _physical_cores() or cpu["physical_cores"],
        "frequency": freq,
        "cpu_flags": cpu["quant_flags"],
        "readiness": {k: v or "ok" for k, v in kernel_readiness(cpu["quant_flags"]).items()},
        # what oneDNN (torch's conv/matmul kernels) really dispatches to: names AMX, which the
        # flags only promise (a hypervisor may hide the tile state; ONEDNN_MAX_CPU_ISA caps it)
        "onednn_isa": onednn_isa(),
        "gpus": gpus["gpus"],
        "gpu_probe": gpus["via"],
        "edgetpu": edgetpu,
        "power_sensors": power_sensors(),
        "backends": available_backends(),
    }
    desc = model + (f" ({cpu['board']})" if cpu["board"] else "")
    if gpus["gpus"]:
        desc += " + " + ", ".join(g["name"] for g in gpus["gpus"])
    return {
        "name": name or _device_name(host),
        "description": f"{desc}, probed on {host}",
        "kind": "cpu",
        "isa_features": isa,
        "transport": "subprocess",
        "probe": {k: v for k, v in facts.items() if v not in (None, "")},
    }


def _device_name(host: str) -> str:
    return re.sub(r"[^a-z0-9_-]+", "-", host.lower()).strip("-") or "probed"
