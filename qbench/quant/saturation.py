"""Whether a CPU's int8 dot products saturate, which decides 7-bit weights (`auto` settings).

x86 CPUs without VNNI or AMX multiply uint8 activations by int8 weights with VPMADDUBSW, which
adds each pair of u8×s8 products into a signed 16-bit lane with saturation: two products of
255 × 127 already overflow it. ONNX Runtime's quantization docs (reduce_range), OpenVINO's
"saturation issue" page and NNCF (overflow_fix) all give the same workaround: weights on a
7-bit grid, so a pair's sum fits. VNNI (VPDPBUSD) and AMX accumulate in 32 bits and ARM's dot
product instructions widen too: there the full 8-bit grid is exact. Measured on an AVX2-only
EPYC, MobileNetV2's ONNX Runtime QDQ U8S8 model loses 5 dB of output SQNR to the saturation
(8.7 dB against 14.0 dB for the same model with float kernels); 7-bit weights bring the native
kernels back to the float kernels' answer (12.8 dB both).
"""

from __future__ import annotations

from collections.abc import Iterable


def u8s8_saturates(cpu_flags: Iterable[str] | None) -> str | None:
    """Why u8×s8 int8 dot products saturate on the CPU with these ISA flags, or None where
    they do not (VNNI, AMX, ARM) or the flags are unknown (nothing is assumed then)."""
    from qbench.probe import cpu_arch, kernel_readiness

    flags = list(cpu_flags or [])
    if cpu_arch(flags) != "x86" or kernel_readiness(flags)["int8"] is None:
        return None
    return (
        "this x86 CPU has no VNNI or AMX: its u8×s8 kernels (VPMADDUBSW) add pairs of products "
        "into saturating 16-bit lanes, which full 8-bit operands overflow"
    )


def resolve_auto(value: bool | str, cpu_flags: Iterable[str] | None) -> tuple[bool, str | None]:
    """An `auto` 7-bit-weights setting resolved for a CPU: (value, why it is True) — True
    where u8s8_saturates; a setting given as True or False is kept (why None)."""
    if value != "auto":
        return bool(value), None
    why = u8s8_saturates(cpu_flags)
    return why is not None, why
