"""Mixed precision: uniform per-channel symmetric round-to-nearest weights with a bit width per
layer, given by name patterns or chosen by a sensitivity search (simulated).

Explicit: `layers` maps fnmatch patterns over Conv/Linear layer names (as `named_modules()`
spells them: "features.0", "classifier.*") to bits (2-8, or 32 to keep the layer float); a
layer's exact name wins over patterns, then the longest matching pattern (ties: the
alphabetically first); unmatched layers take `default_bits`. A pattern that matches no layer is
an error.

Auto: every layer not pinned by `layers` is searched. Each one's sensitivity is the SQNR of
the model's outputs against fp32 on the calibration inputs when only that layer is quantized
to `low_bits`. Starting from all of them at `low_bits`, the fewest of the most sensitive
(lowest SQNR first) are raised to `high_bits` that bring the whole model's output SQNR on the
calibration inputs to `sqnr_budget_db` (found by binary search over that count). The budget
is on output SQNR, not accuracy: it needs no labels, so it works for every model. The
assignment used is in the row's layer_bits_json.
"""

from __future__ import annotations

import fnmatch
import json
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, field_validator

from qbench.methods.base import MakeContext
from qbench.methods.packing import weight_layers
from qbench.methods.simulated import SimulatedWeightMethod
from qbench.params import Params
from qbench.plugins import methods

FLOAT = 32


def _check_bits(value: int) -> int:
    if isinstance(value, bool) or not (2 <= value <= 8 or value == FLOAT):
        raise ValueError(f"bits must be 2 to 8, or 32 to keep a layer float; got {value!r}")
    return value


class MixedParams(Params):
    layers: dict[str, int] = Field(
        default_factory=dict,
        description="fnmatch pattern over Conv/Linear layer names -> bits (2-8, 32: float); "
        "exact names win, then the longest pattern; with auto, matched layers are pinned",
    )
    default_bits: int = Field(default=4, description="bits of layers no pattern matches")
    granularity: Literal["per_channel"] = Field(
        default="per_channel", description="one symmetric scale per output channel"
    )
    auto: bool = Field(
        default=False,
        description="choose bits per layer: start at low_bits and raise the most sensitive "
        "layers to high_bits until the output SQNR on calibration inputs meets the budget",
    )
    low_bits: int = Field(default=4, description="auto: bits every searched layer starts at")
    high_bits: int = Field(default=8, description="auto: bits a sensitive layer is raised to")
    sqnr_budget_db: float = Field(
        default=30.0,
        description="auto: least output SQNR against fp32 on the calibration inputs, dB",
    )

    @field_validator("default_bits", "low_bits", "high_bits")
    @classmethod
    def _bits(cls, value: int) -> int:
        return _check_bits(value)

    @field_validator("layers")
    @classmethod
    def _layer_bits(cls, value: dict[str, int]) -> dict[str, int]:
        for pattern, bits in value.items():
            try:
                _check_bits(bits)
            except ValueError as exc:
                raise ValueError(f"layers[{pattern!r}]: {exc}") from None
        return value


def bits_for(name: str, patterns: dict[str, int], default: int) -> int:
    """Bits of layer `name`: its exact name, else the longest matching pattern, else default."""
    if name in patterns:
        return patterns[name]
    hits = sorted((p for p in patterns if fnmatch.fnmatchcase(name, p)),
                  key=lambda p: (-len(p), p))  # fmt: skip
    return patterns[hits[0]] if hits else default


def match_bits(names: list[str], patterns: dict[str, int]) -> dict[str, int]:
    """Bits of each layer name that some pattern matches; an unused pattern is an error."""
    unused = [p for p in patterns if not any(fnmatch.fnmatchcase(n, p) for n in names)]
    if unused:
        raise ValueError(
            f"mixed: pattern(s) {', '.join(map(repr, unused))} match no Conv/Linear layer "
            f"(layers: {', '.join(names)})"
        )
    return {n: bits_for(n, patterns, 0) for n in names
            if any(fnmatch.fnmatchcase(n, p) for p in patterns)}  # fmt: skip


@methods.register
class Mixed(SimulatedWeightMethod):
    name = "mixed"
    description = "per-layer weight bits (uniform per-channel RTN) by pattern or SQNR search"
    Params = MixedParams
    weight_scheme = "uniform"

    def needs_calibration(self, params: Params) -> bool:
        assert isinstance(params, MixedParams)
        return params.auto  # the search runs on the calibration inputs; patterns need none

    def weight_bits(self, params: Params) -> int | None:
        return None  # varies per layer: layer_bits_json

    def row_params(self, params: Params) -> dict[str, Any]:
        return {"granularity": "per_channel", "symmetric_weights": True}

    def quantize(self, name: str, weight: np.ndarray, params: Params) -> Any:
        from qbench.quant.uniform import quantize_uniform

        assert isinstance(params, MixedParams)
        bits = bits_for(name, params.layers, params.default_bits)
        if bits == FLOAT:
            return None
        return quantize_uniform(weight, bits, "per_channel", symmetric=True)

    def assign(
        self, module: Any, params: MixedParams, calib: np.ndarray | None
    ) -> tuple[dict[str, int], list[str]]:
        """Bits of every Conv/Linear layer, and notes on how they were chosen."""
        names = [name for name, _ in weight_layers(module)]
        pinned = match_bits(names, params.layers)
        if not params.auto:
            return {n: pinned.get(n, params.default_bits) for n in names}, []
        if calib is None or len(calib) == 0:
            raise ValueError("mixed: auto needs calibration inputs")
        return self._search(module, params, pinned, calib)

    def _search(
        self, module: Any, params: MixedParams, pinned: dict[str, int], calib: np.ndarray
    ) -> tuple[dict[str, int], list[str]]:
        from qbench.measure.fidelity import sqnr_db

        probe = _Probe(module, calib)
        searched = [n for n in probe.names if n not in pinned]
        low = {**pinned, **dict.fromkeys(searched, params.low_bits)}
        alone = {n: probe.sqnr({**pinned, n: params.low_bits}, sqnr_db) for n in searched}
        order = sorted(searched, key=lambda n: (alone[n], n))  # most sensitive first
        # Raising layers in this order only adds precision, so output SQNR grows with the
        # number raised: binary search for the fewest that meet the budget (about log2(n)
        # model runs instead of n; MobileNetV2 has 53 layers).
        start = probe.sqnr(low, sqnr_db)
        measured: dict[int, float] = {0: start}

        def sqnr_with(k: int) -> float:
            if k not in measured:
                raised_k = dict.fromkeys(order[:k], params.high_bits)
                measured[k] = probe.sqnr({**low, **raised_k}, sqnr_db)
            return measured[k]

        lo, hi = 0, len(order)
        if sqnr_with(hi) >= params.sqnr_budget_db:
            while lo < hi:
                mid = (lo + hi) // 2
                if sqnr_with(mid) >= params.sqnr_budget_db:
                    hi = mid
                else:
                    lo = mid + 1
        raised, current = hi, sqnr_with(hi)
        assignment = {**low, **dict.fromkeys(order[:raised], params.high_bits)}
        met = "reached" if current >= params.sqnr_budget_db else "did NOT reach"
        notes = [
            f"auto: {raised} of {len(searched)} searched layers raised from {params.low_bits} "
            f"to {params.high_bits} bits; output SQNR {current:.1f} dB on {len(calib)} "
            f"calibration inputs {met} the {params.sqnr_budget_db:g} dB budget "
            f"(all at {params.low_bits} bits: {start:.1f} dB)",
            "auto sensitivity (output SQNR dB with only that layer at "
            f"{params.low_bits} bits): " + ", ".join(f"{n} {alone[n]:.1f}" for n in order),
        ]
        return assignment, notes

    def make(self, fmt: str, params: Params, ctx: MakeContext, out: Path) -> dict[str, Any]:
        assert isinstance(params, MixedParams)
        assignment, notes = self.assign(ctx.model.module, params, ctx.one_input("mixed"))
        resolved = params.model_copy(update={"layers": assignment, "auto": False})
        meta = super().make(fmt, resolved, ctx, out)
        meta["layer_bits_json"] = json.dumps(assignment, sort_keys=True)
        meta["artifact_notes"] = notes
        return meta


class _Probe:
    """Output SQNR of `module` against fp32 on `calib` with given bits per layer (layers not
    named stay float); each layer's quantized weight at each width is computed once."""

    def __init__(self, module: Any, calib: np.ndarray) -> None:
        import copy

        import torch

        self.module = copy.deepcopy(module).float().eval()
        self.layers = dict(weight_layers(self.module))
        self.names = list(self.layers)
        self.fp32 = {n: layer.weight.detach().clone() for n, layer in self.layers.items()}
        self.inputs = torch.as_tensor(np.ascontiguousarray(calib), dtype=torch.float32)
        self.reference = self._run()
        self.cache: dict[tuple[str, int], Any] = {}

    def _run(self) -> np.ndarray:
        import torch

        with torch.inference_mode():
            return torch.cat(
                [self.module(self.inputs[i : i + 32]) for i in range(0, len(self.inputs), 32)]
            ).numpy()

    def _weight(self, name: str, bits: int) -> Any:
        import torch

        from qbench.quant.uniform import quantize_uniform

        if bits == FLOAT:
            return self.fp32[name]
        if (name, bits) not in self.cache:
            q = quantize_uniform(self.fp32[name].numpy(), bits, "per_channel", symmetric=True)
            self.cache[name, bits] = torch.from_numpy(np.ascontiguousarray(q.dequantized))
        return self.cache[name, bits]

    def sqnr(self, bits: dict[str, int], sqnr_db: Any) -> float:
        import torch

        with torch.no_grad():
            for name, layer in self.layers.items():
                layer.weight.copy_(self._weight(name, bits.get(name, FLOAT)))
        return sqnr_db(self.reference, self._run())
