"""Activation calibration for ONNX Runtime's static quantizer.

ONNX Runtime collects the statistics (its MinMax and Histogram calibrators) and chooses the
ranges for `minmax`, `percentile` and `entropy`; only the `mse` search is written here. The
ranges then reach `quantize_static` through a calibration cache (`write_cache`), so every
calibrator is configured here rather than through quantize_static's extra options, which cannot
set the histogram's bins (ORT 1.32's entropy defaults, num_bins == num_quantized_bins == 128,
leave one candidate threshold: the full range, i.e. min-max).

The MSE search: for each activation tensor, ORT's histogram (2048 bins over [-T, T], T the
largest magnitude seen) and, for each candidate clipping range, the expected squared error of
ORT's own quantizer (`compute_scale_zp`, the scale and zero point quantize_static will write)
with values spread uniformly inside each bin: rounding error in range, clipping error outside.
Coarse-to-fine grids over the upper and lower bound, alternated until the range stops moving.
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from onnx import TensorProto
from onnxruntime.quantization import CalibrationMethod, QuantType
from onnxruntime.quantization.calibrate import (
    TensorData,
    TensorsData,
    create_calibrator,
    save_tensors_data,
)
from onnxruntime.quantization.quant_utils import compute_scale_zp, get_qmin_qmax_for_qType
from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

Calibrator = Literal["minmax", "percentile", "entropy", "mse"]
ActivationType = Literal["uint8", "int8", "uint16", "int16"]

CALIBRATORS: tuple[str, ...] = ("minmax", "percentile", "entropy", "mse")
QUANT_TYPES: dict[str, QuantType] = {
    "uint8": QuantType.QUInt8,
    "int8": QuantType.QInt8,
    "uint16": QuantType.QUInt16,
    "int16": QuantType.QInt16,
}
_TENSOR_TYPES = {
    "uint8": TensorProto.UINT8,
    "int8": TensorProto.INT8,
    "uint16": TensorProto.UINT16,
    "int16": TensorProto.INT16,
}


def activation_bits(activations: str) -> int:
    return 16 if activations.endswith("16") else 8


@dataclass(frozen=True)
class CalibrationSettings:
    """How activation ranges are chosen (the subset of static_int8's parameters it needs)."""

    calibrator: Calibrator = "minmax"
    percentile: float = 99.999
    histogram_bins: int = 2048
    entropy_quantized_bins: int = 128
    activations: ActivationType = "uint8"
    symmetric: bool = False  # ORT's ActivationSymmetric: ranges made symmetric around zero

    @property
    def ort_method(self) -> CalibrationMethod:
        """ORT's calibration method whose statistics this calibrator starts from."""
        return {
            "minmax": CalibrationMethod.MinMax,
            "percentile": CalibrationMethod.Percentile,
            "entropy": CalibrationMethod.Entropy,
            "mse": CalibrationMethod.Entropy,  # its collector keeps the signed histogram
        }[self.calibrator]

    @property
    def cache_method(self) -> CalibrationMethod:
        """The method a cache of these ranges is labelled with (quantize_static checks it)."""
        return CalibrationMethod.MinMax if self.calibrator == "mse" else self.ort_method


class ArrayReader:
    """Feeds inputs to ORT one sample at a time (the CalibrationDataReader protocol): one
    array for the input `input_name`, or named arrays (every input of the graph)."""

    def __init__(self, inputs: np.ndarray | dict[str, np.ndarray], input_name: str = "") -> None:
        from qbench.inputs import count

        self._inputs = inputs if isinstance(inputs, dict) else {input_name: inputs}
        # the samples of the batched inputs: a fixed input (a state [2, 1, 128], a scalar) is
        # fed whole with each sample, and its first axis is no sample count
        self._count = count(self._inputs)
        self._next = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._next >= self._count:
            return None
        self._next += 1
        return {k: v[self._next - 1 : self._next] for k, v in self._inputs.items()}

    def rewind(self) -> None:
        self._next = 0


def _op_types_to_calibrate() -> list[str]:
    # What quantize_static calibrates when it is given no op types.
    return sorted(set(QLinearOpsRegistry) | set(QDQRegistry))


@dataclass
class Calibration:
    ranges: TensorsData  # the range each activation tensor is quantized over
    observed: dict[str, tuple[float, float]]  # the smallest and largest value it took

    def clipped(self) -> dict[str, float]:
        """Tensor -> share of its observed range (widened to include zero) that is kept."""
        kept = {}
        for name, (rmin, rmax) in self.observed.items():
            lo, hi = _floats(self.ranges[name].range_value)
            full = max(rmax, 0.0) - min(rmin, 0.0)
            kept[name] = (max(hi, 0.0) - min(lo, 0.0)) / full if full > 0 else 1.0
        return kept

    def summary(self) -> str:
        kept = sorted(self.clipped().values())
        if not kept:
            return "no activation tensors"
        narrowed = sum(k < 0.999 for k in kept)
        return (
            f"{narrowed} of {len(kept)} activation ranges narrower than min-max "
            f"(median kept {np.median(kept):.0%}, least {kept[0]:.0%})"
        )


def calibrate(
    model: Path,
    inputs: np.ndarray | dict[str, np.ndarray],
    input_name: str,
    settings: CalibrationSettings,
) -> Calibration:
    """Run the fp32 model on `inputs` and choose each activation tensor's range.

    percentile: ORT's histogram of magnitudes, range [-t, t] clipped to the observed min/max.
    entropy: ORT's KL search over [-t, t] (about 1 s per tensor with 2048 bins: ORT's loop is
    pure Python). mse: ORT's signed histogram, then `mse_range`."""
    options: dict[str, object] = {}
    if settings.calibrator == "percentile":
        options = {"percentile": settings.percentile, "num_bins": settings.histogram_bins}
    elif settings.calibrator in ("entropy", "mse"):
        options = {
            "num_bins": settings.histogram_bins,
            "num_quantized_bins": settings.entropy_quantized_bins,
        }
    logging.getLogger("root").setLevel(logging.ERROR)
    with (
        tempfile.TemporaryDirectory(prefix="qbench-calib-") as tmp,
        contextlib.redirect_stdout(io.StringIO()),
    ):
        calibrator = create_calibrator(
            Path(model),
            _op_types_to_calibrate(),
            augmented_model_path=str(Path(tmp) / "augmented.onnx"),
            calibrate_method=settings.ort_method,
            extra_options=options,
        )
        calibrator.collect_data(ArrayReader(inputs, input_name))
        if settings.calibrator == "mse":  # ORT's histograms, the search below
            histograms = calibrator.collector.get_histogram_dict()
            computed = None
        else:
            computed = calibrator.compute_data()
            collector = getattr(calibrator, "collector", None)
            histograms = collector.get_histogram_dict() if collector else {}
    if computed is not None:
        if settings.calibrator == "minmax":
            observed = {k: _floats(v.range_value) for k, v in computed.items()}
        else:
            observed = {k: _floats(h[2:4]) for k, h in histograms.items()}
        return Calibration(computed, observed)
    qtype = _TENSOR_TYPES[settings.activations]
    ranges, observed = {}, {}
    for name, (counts, edges, rmin, rmax, *_) in histograms.items():
        lo, hi = mse_range(counts, edges, rmin, rmax, qtype, settings.symmetric)
        ranges[name] = TensorData(lowest=np.array(lo, np.float32), highest=np.array(hi, np.float32))
        observed[name] = _floats((rmin, rmax))
    return Calibration(TensorsData(settings.cache_method, ranges), observed)


def _scalar(value: object) -> float:
    return float(np.asarray(value).reshape(-1)[0])  # MinMax ranges are arrays of one value


def _floats(pair: tuple) -> tuple[float, float]:
    return _scalar(pair[0]), _scalar(pair[1])


def onnx_output_names(model: Path) -> list[str]:
    import onnx

    return [o.name for o in onnx.load(str(model), load_external_data=False).graph.output]


def widen_outputs(result: Calibration, outputs: list[str], scale: float) -> Calibration:
    """`result` with each model output's chosen range multiplied by `scale` (around zero): a
    range ends where the calibration inputs' values did, and an input the model is surer of
    than of any of them reaches past it; clipped, its highest scores merge into ties
    (StaticInt8Params.output_range_scale). Robust calibrators keep their say on the outputs
    too: min-max over calibration data with outliers would spread the logits' grid thin."""
    if scale == 1:
        return result
    ranges = dict(result.ranges.items())
    for name in outputs:
        if name in ranges:
            lo, hi = _floats(ranges[name].range_value)
            ranges[name] = TensorData(lowest=np.array(lo * scale, np.float32),
                                      highest=np.array(hi * scale, np.float32))  # fmt: skip
    return Calibration(TensorsData(result.ranges.calibration_method, ranges), result.observed)


def write_cache(ranges: TensorsData, path: Path) -> None:
    """A calibration cache for quantize_static: only each tensor's range (what it reads)."""
    slim = {name: TensorData(lowest=td.range_value[0], highest=td.range_value[1])
            for name, td in ranges.items()}  # fmt: skip
    save_tensors_data(TensorsData(ranges.calibration_method, slim), path)


# --- MSE search -------------------------------------------------------------------------------


def quantization_params(
    lo: float, hi: float, qtype: int, symmetric: bool
) -> tuple[float, float, int, int]:
    """(scale, zero_point, qmin, qmax) that ORT's quantizer writes for the range [lo, hi]."""
    qmin, qmax = get_qmin_qmax_for_qType(qtype, symmetric=symmetric)
    zero, scale = compute_scale_zp(np.float32(lo), np.float32(hi), qmin, qmax, symmetric)
    return float(scale), int(zero), int(qmin), int(qmax)


def _cumulative_error(x: np.ndarray, low: np.ndarray, step: np.ndarray, levels: int) -> np.ndarray:
    """∫ from `low` to x of (t - Q(t))² dt, Q rounding to the grid low + k·step (k < levels)
    and clamping outside it; rows are candidate grids, columns points x."""
    high = low + (levels - 1) * step
    inside = np.clip(x, low, high) - low + step / 2
    periods = np.floor(inside / step)
    rest = inside - periods * step
    # A full period of the sawtooth error contributes step³/12; a partial one its cubic.
    error = periods * step**3 / 12 + ((rest - step / 2) ** 3 + (step / 2) ** 3) / 3
    error -= step**3 / 24  # the integral starts at `low`, half a period in
    error += np.minimum(x - low, 0) ** 3 / 3 + np.maximum(x - high, 0) ** 3 / 3
    return error


def histogram_mse(
    counts: np.ndarray,
    edges: np.ndarray,
    ranges: list[tuple[float, float]],
    qtype: int,
    symmetric: bool,
) -> np.ndarray:
    """Mean squared quantization error of the histogram's values for each candidate range,
    values spread uniformly within their bin."""
    counts = np.asarray(counts, np.float64)
    edges = np.asarray(edges, np.float64)
    used = np.flatnonzero(counts)
    if used.size == 0:
        return np.zeros(len(ranges))
    left, right, weight = edges[used], edges[used + 1], counts[used]
    params = [quantization_params(lo, hi, qtype, symmetric) for lo, hi in ranges]
    step = np.array([p[0] for p in params], np.float64)[:, None]
    low = np.array([(p[2] - p[1]) * p[0] for p in params], np.float64)[:, None]
    levels = params[0][3] - params[0][2] + 1
    width = right - left
    total = _cumulative_error(right, low, step, levels) - _cumulative_error(left, low, step, levels)
    per_bin = np.where(width > 0, total / np.where(width > 0, width, 1), 0.0)
    # A zero-width bin holds one value: its own error, exactly.
    if (width <= 0).any():
        value = np.broadcast_to(left, per_bin.shape)
        q = np.clip(np.round((value - low) / step), 0, levels - 1)
        per_bin = np.where(width > 0, per_bin, (value - (low + q * step)) ** 2)
    return (per_bin * weight).sum(axis=1) / weight.sum()


def _best_bound(
    objective: Callable[[np.ndarray], np.ndarray],
    limit: float,
    points: int = 64,
    refinements: int = 3,
) -> tuple[float, float]:
    """The bound in (0, limit] (a magnitude) that minimises `objective`, coarse then fine."""
    low, high = 0.0, limit
    best, best_error = limit, np.inf
    for _ in range(refinements + 1):
        grid = np.linspace(low, high, points + 1)[1:]
        errors = objective(grid)
        i = int(np.argmin(errors))
        if errors[i] < best_error:
            best, best_error = float(grid[i]), float(errors[i])
        spacing = (high - low) / points
        low, high = max(best - spacing, 0.0), min(best + spacing, limit)
    return best, best_error


def mse_range(
    counts: np.ndarray,
    edges: np.ndarray,
    rmin: float,
    rmax: float,
    qtype: int,
    symmetric: bool = False,
    rounds: int = 4,
) -> tuple[float, float]:
    """The clipping range [lo, hi] within [rmin, rmax] whose quantization (ORT's scale and zero
    point for `qtype`) has the least mean squared error over the histogram."""
    rmin, rmax = _floats((rmin, rmax))
    if not np.isfinite([rmin, rmax]).all() or rmin == rmax:
        return rmin, rmax

    def mse(ranges: list[tuple[float, float]]) -> np.ndarray:
        return histogram_mse(counts, edges, ranges, qtype, symmetric)

    if symmetric:  # ORT quantizes [-t, t]: one bound to find
        t, _ = _best_bound(lambda g: mse([(-b, b) for b in g]), max(-rmin, rmax))
        return max(rmin, -t), min(rmax, t)
    # ORT always includes zero in the range: only a negative minimum or a positive maximum moves.
    lo, hi = min(rmin, 0.0), max(rmax, 0.0)
    for _ in range(rounds):
        previous = (lo, hi)
        if rmax > 0:
            hi, _ = _best_bound(lambda g, lo=lo: mse([(lo, b) for b in g]), rmax)
        if rmin < 0:
            t, _ = _best_bound(lambda g, hi=hi: mse([(-b, hi) for b in g]), -rmin)
            lo = -t
        if (lo, hi) == previous:
            break
    return max(lo, rmin), min(hi, rmax)
