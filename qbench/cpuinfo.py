"""What a CPU can do for quantized kernels, from /proc/cpuinfo text and ISA flags alone.

Pure functions of text and flags, with no qbench import: the host facts (qbench.hostinfo) and
the device probe (qbench.probe) both build on them, and neither imports the other for them.
"""

from __future__ import annotations

from typing import Any

# ISA flags that decide which quantized kernels are fast, as Linux spells them in
# /proc/cpuinfo. x86: VNNI/AMX run int8 dot products; AVX512-FP16/AMX-FP16 run fp16
# arithmetic. ARM: asimddp (SDOT/UDOT) and i8mm (SMMLA) run int8 dot products; asimdhp/fphp
# run fp16 arithmetic; bf16 runs BFDOT/BFMMLA.
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
    "amx_fp16",
    "avx_vnni_int8",
    "asimd",
    "asimddp",
    "asimdhp",
    "asimdfhm",
    "i8mm",
    "bf16",
    "sve",
    "sve2",
    "svei8mm",
    "sme",
    "fphp",
)

# x86 flags: Linux arch/x86/include/asm/cpufeatures.h names; ARM: arch/arm64 hwcap names.
X86_INT8_FAST = ("avx512_vnni", "avx_vnni", "amx_int8", "avx_vnni_int8")
X86_FP16_FAST = ("avx512_fp16", "amx_fp16")
X86_BF16_FAST = ("avx512_bf16", "amx_bf16")
ARM_INT8_FAST = ("asimddp", "i8mm", "svei8mm")
ARM_FP16_FAST = ("asimdhp",)
ARM_BF16_FAST = ("bf16",)
X86_MARKERS = ("sse2", "avx", "avx2", "fma", "f16c", "avx512f")
ARM_MARKERS = ("asimd", "fp", "neon", "evtstrm", "cpuid")

# MIDR "CPU part" of Arm Ltd cores (implementer 0x41), as in Linux
# arch/arm64/include/asm/cputype.h.
ARM_PARTS = {
    0xD03: "Cortex-A53",
    0xD04: "Cortex-A35",
    0xD05: "Cortex-A55",
    0xD06: "Cortex-A65",
    0xD07: "Cortex-A57",
    0xD08: "Cortex-A72",
    0xD09: "Cortex-A73",
    0xD0A: "Cortex-A75",
    0xD0B: "Cortex-A76",
    0xD0C: "Neoverse-N1",
    0xD0D: "Cortex-A77",
    0xD0E: "Cortex-A76AE",
    0xD40: "Neoverse-V1",
    0xD41: "Cortex-A78",
    0xD42: "Cortex-A78AE",
    0xD43: "Cortex-A65AE",
    0xD44: "Cortex-X1",
    0xD46: "Cortex-A510",
    0xD47: "Cortex-A710",
    0xD48: "Cortex-X2",
    0xD49: "Neoverse-N2",
    0xD4A: "Neoverse-E1",
    0xD4B: "Cortex-A78C",
    0xD4C: "Cortex-X1C",
    0xD4D: "Cortex-A715",
    0xD4E: "Cortex-X3",
    0xD4F: "Neoverse-V2",
    0xD80: "Cortex-A520",
    0xD81: "Cortex-A720",
    0xD82: "Cortex-X4",
}


def _blocks(text: str) -> tuple[list[dict[str, str]], dict[str, str]]:
    """(per-processor key/value blocks, trailing board lines such as ARM's Model/Revision)."""
    procs: list[dict[str, str]] = []
    tail: dict[str, str] = {}
    current: dict[str, str] | None = None
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            current = None if not line.strip() else current
            continue
        key, value = key.strip().lower(), value.strip()
        if key == "processor" and value.isdigit():
            current = {}
            procs.append(current)
        elif current is None:
            tail[key] = value
            continue
        current[key] = value
    return procs, tail


def arm_core_name(implementer: str | None, part: str | None) -> str | None:
    try:
        impl, num = int(implementer or "", 16), int(part or "", 16)
    except ValueError:
        return None
    if impl == 0x41:
        return ARM_PARTS.get(num, f"Arm part {num:#x}")
    return f"implementer {impl:#x} part {num:#x}"


def parse_cpuinfo(text: str) -> dict[str, Any]:
    """What /proc/cpuinfo says, for x86 and ARM kernels.

    arch: "x86", "arm" or None; model: the CPU model (x86 "model name"; on ARM the core names
    from implementer/part, e.g. "4x Cortex-A76"); board: ARM's trailing "Model" line (e.g.
    "Raspberry Pi 5 Model B Rev 1.0") or "Hardware"; processors: logical CPUs listed;
    physical_cores: from (physical id, core id) pairs on x86, the processor count on ARM (no
    SMT); mhz: x86 "cpu MHz" of the first processor (current, not max); flags: the flags every
    processor has (sorted); quant_flags: those of `QUANT_FLAGS`, in that order.
    """
    procs, tail = _blocks(text)
    flag_sets = [set((p.get("flags") or p.get("features") or "").split()) for p in procs]
    flag_sets = [f for f in flag_sets if f] or [
        set((tail.get("flags") or tail.get("features") or "").split())
    ]
    flags = set.intersection(*flag_sets) if flag_sets else set()
    first = procs[0] if procs else tail
    arch = None
    if "vendor_id" in first or any(f in flags for f in X86_MARKERS[1:]):
        arch = "x86"
    elif "cpu implementer" in first or any(f in flags for f in ("asimd", "neon")):
        arch = "arm"
    model = first.get("model name") or None
    if arch == "arm":
        names: dict[str, int] = {}
        for p in procs:
            name = arm_core_name(p.get("cpu implementer"), p.get("cpu part"))
            if name:
                names[name] = names.get(name, 0) + 1
        if names:
            model = " + ".join(f"{n}x {name}" for name, n in names.items())
    board = tail.get("model") or tail.get("hardware") or first.get("hardware")
    physical = None
    pairs = {(p.get("physical id"), p.get("core id")) for p in procs if "core id" in p}
    if pairs:
        physical = len(pairs)
    elif arch == "arm" and procs:
        physical = len(procs)
    mhz = None
    try:
        mhz = float(first["cpu mhz"]) if "cpu mhz" in first else None
    except ValueError:
        mhz = None
    return {
        "arch": arch,
        "model": model,
        "board": board,
        "processors": len(procs),
        "physical_cores": physical,
        "mhz": mhz,
        "flags": sorted(flags),
        "quant_flags": [f for f in QUANT_FLAGS if f in flags],
    }


def cpu_arch(flags: list[str] | set[str] | tuple[str, ...]) -> str | None:
    """ "x86" or "arm" from ISA flags alone (what a run row stores), None if they do not say."""
    have = set(flags)
    if have & {*X86_MARKERS, *X86_INT8_FAST, *X86_FP16_FAST, *X86_BF16_FAST, "amx_tile"}:
        return "x86"
    if have & {*ARM_MARKERS, *ARM_INT8_FAST, *ARM_FP16_FAST, "sve", "sve2", "fphp"}:
        return "arm"
    return None


def kernel_readiness(flags: list[str] | set[str] | tuple[str, ...]) -> dict[str, str | None]:
    """For int8, fp16 and bf16: None when the CPU has fast kernels for it, else why not.

    x86 int8 needs VNNI (avx512_vnni, avx_vnni, avx_vnni_int8) or AMX (amx_int8): without
    them int8 GEMMs go through vpmaddubsw/vpmaddwd sequences that are barely faster than
    fp32 FMA. ARM int8 needs the dot product (asimddp) or i8mm. fp16 arithmetic needs
    AVX512-FP16/AMX-FP16 (x86) or asimdhp (ARM); otherwise fp16 kernels convert to fp32.
    """
    have, arch = set(flags), cpu_arch(flags)
    if arch == "x86":
        int8 = None if have & set(X86_INT8_FAST) else "no VNNI/AMX"
        fp16 = None if have & set(X86_FP16_FAST) else "no AVX512-FP16/AMX-FP16"
        bf16 = None if have & set(X86_BF16_FAST) else "no AVX512-BF16/AMX-BF16"
    elif arch == "arm":
        int8 = None if have & set(ARM_INT8_FAST) else "no dot product (asimddp) or i8mm"
        fp16 = None if have & set(ARM_FP16_FAST) else "no fp16 arithmetic (asimdhp)"
        bf16 = None if have & set(ARM_BF16_FAST) else "no bf16 instructions"
    else:
        unknown = "ISA flags unknown"
        int8 = fp16 = bf16 = unknown
    return {"int8": int8, "fp16": fp16, "bf16": bf16}
