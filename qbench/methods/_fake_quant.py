"""Fake quantization for quantization-aware training (torch modules, used by `qat`).

Every quantizer here rounds in the forward pass and passes gradients straight through the
rounding (the straight-through estimator, STE): inside the clipping range d(out)/d(x) = 1, and
outside it 0, because the clamp after the rounding has no gradient there — the same gradient
as `torch.fake_quantize_per_channel_affine`.

Weights: per output channel, symmetric, codes in [−qmax, qmax] with qmax = 2^(bits−1) − 1 (the
grid of qbench.quant.uniform's symmetric mode). The scale is max|w| / qmax of the current
weight at each step, or (learned_scale) an nn.Parameter trained by LSQ (Esser et al. 2020) with
its gradient scaled by 1/sqrt(N·Qp).

Activations: the input of each Conv/Linear layer, per tensor, affine (unsigned codes in
[0, 2^bits − 1] and an integer zero point, so 0 is exact). Range from a moving average of the
batch min/max while training, or (learned_scale) a learned scale and zero point (LSQ+). After
training the range is frozen into buffers `scale` and `zero_point`; the forward pass is then
plain arithmetic (Mul, Round, Add, Clip, Sub, Mul), which ONNX export keeps as it is.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from qbench.methods.packing import weight_layers

INPUT_QUANT = "input_quant"  # submodule name of each layer's activation quantizer


def ste_round(x: torch.Tensor) -> torch.Tensor:
    """round(x) forward, identity backward."""
    return x + (torch.round(x) - x).detach()


def grad_scale(x: torch.Tensor, factor: float) -> torch.Tensor:
    """x forward, gradient multiplied by `factor` backward (LSQ's gradient scaling)."""
    return (x - x * factor).detach() + x * factor


def fake_quant(
    x: torch.Tensor,
    scale: torch.Tensor,
    zero_point: torch.Tensor | float,
    qmin: int,
    qmax: int,
    ste: bool = True,
) -> torch.Tensor:
    """(clamp(round(x / scale) + zero_point, qmin, qmax) − zero_point) · scale, with the STE
    (ste=False: plain rounding, for frozen quantizers and a lean exported graph).

    `x * (1 / scale)` as torch's fake-quantize kernels compute it, so ties round the same way;
    a zero scale (an all-zero channel) gives zeros.
    """
    safe = torch.where(scale > 0, scale, torch.ones_like(scale))
    scaled = x * (1.0 / safe)
    codes = torch.clamp(
        (ste_round(scaled) if ste else torch.round(scaled)) + zero_point, qmin, qmax
    )
    return (codes - zero_point) * scale


def _channel_view(t: torch.Tensor, ndim: int) -> torch.Tensor:
    """A per-output-channel vector shaped to broadcast against a weight of `ndim` dims."""
    return t.reshape(-1, *([1] * (ndim - 1)))


class WeightFakeQuant(nn.Module):
    """A `torch.nn.utils.parametrize` parametrization: the fake-quantized weight."""

    def __init__(self, weight: torch.Tensor, bits: int, learned_scale: bool) -> None:
        super().__init__()
        self.qmax = 2 ** (bits - 1) - 1
        self.learned = learned_scale
        if learned_scale:
            self.scale = nn.Parameter(initial_weight_scale(weight.detach(), bits))
            self.grad_factor = 1.0 / math.sqrt(weight[0].numel() * self.qmax)

    def current_scale(self, weight: torch.Tensor) -> torch.Tensor:
        if self.learned:
            return self.scale.abs()
        return weight.detach().abs().flatten(1).amax(1) / self.qmax

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        scale = self.current_scale(weight)
        if self.learned:
            scale = grad_scale(scale, self.grad_factor)
        return fake_quant(weight, _channel_view(scale, weight.ndim), 0.0, -self.qmax, self.qmax)


def initial_weight_scale(weight: torch.Tensor, bits: int) -> torch.Tensor:
    """LSQ's initial step 2·mean|w|/sqrt(Qp) per channel, but never more than max|w|/Qp (the
    no-clipping step, which is the smaller of the two from about 4 bits up)."""
    qmax = 2 ** (bits - 1) - 1
    flat = weight.abs().flatten(1)
    lsq = 2 * flat.mean(1) / math.sqrt(qmax)
    return torch.minimum(lsq, flat.amax(1) / qmax).clamp_min(1e-8)


class FrozenActivationQuant(nn.Module):
    """Per-tensor affine quantization of a layer's input with a fixed range: buffers `scale`
    and `zero_point` (an integer held as float). The form every artifact holds."""

    def __init__(self, bits: int) -> None:
        super().__init__()
        self.qmax = 2**bits - 1
        self.register_buffer("scale", torch.ones(()))
        self.register_buffer("zero_point", torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fake_quant(x, self.scale, self.zero_point, 0, self.qmax, ste=False)


class ActivationFakeQuant(FrozenActivationQuant):
    """The trainable form: while training, a moving average of the batch range (momentum
    0.01, the first batch sets it), or with `learned` an LSQ+ scale and zero point initialised
    from the first batch; in eval mode it computes as the frozen form."""

    def __init__(self, bits: int, learned: bool = False, momentum: float = 0.01) -> None:
        super().__init__(bits)
        self.learned = learned
        self.momentum = momentum
        self.register_buffer("low", torch.zeros(()))
        self.register_buffer("high", torch.zeros(()))
        self.register_buffer("initialised", torch.zeros((), dtype=torch.bool))
        if learned:
            self.learned_scale = nn.Parameter(torch.ones(()))
            self.learned_zero_point = nn.Parameter(torch.zeros(()))

    def _set_range(self, low: torch.Tensor, high: torch.Tensor) -> None:
        low, high = torch.clamp(low, max=0.0), torch.clamp(high, min=0.0)
        scale = torch.clamp((high - low) / self.qmax, min=1e-8)
        self.low.copy_(low)
        self.high.copy_(high)
        self.scale.copy_(scale)
        self.zero_point.copy_(torch.clamp(torch.round(-low / scale), 0, self.qmax))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return super().forward(x)
        batch_low, batch_high = x.detach().min(), x.detach().max()
        if not bool(self.initialised):
            self._set_range(batch_low, batch_high)
            self.initialised.fill_(True)
            if self.learned:
                with torch.no_grad():
                    self.learned_scale.copy_(self.scale)
                    self.learned_zero_point.copy_(self.zero_point)
        if not self.learned:
            m = self.momentum
            self._set_range(self.low * (1 - m) + batch_low * m,
                            self.high * (1 - m) + batch_high * m)  # fmt: skip
            return fake_quant(x, self.scale, self.zero_point, 0, self.qmax)
        factor = 1.0 / math.sqrt(x[0].numel() * self.qmax)
        scale = grad_scale(self.learned_scale.abs().clamp_min(1e-8), factor)
        zero_point = torch.clamp(ste_round(grad_scale(self.learned_zero_point, factor)), 0,
                                 self.qmax)  # fmt: skip
        with torch.no_grad():  # the frozen form follows the learned values
            self.scale.copy_(scale)
            self.zero_point.copy_(zero_point)
        return fake_quant(x, scale, zero_point, 0, self.qmax)


def _quantize_input(layer: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
    return (getattr(layer, INPUT_QUANT)(args[0]), *args[1:])


def add_activation_quant(
    module: nn.Module, bits: int, learned: bool = False, frozen: bool = False
) -> nn.Module:
    """Give every Conv/Linear layer of `module` (in place) an ActivationFakeQuant (frozen: a
    FrozenActivationQuant) of its input, run by a forward pre-hook; the state dict holds its
    `<layer>.input_quant.scale` and `<layer>.input_quant.zero_point`."""
    for _, layer in list(weight_layers(module)):
        quant = FrozenActivationQuant(bits) if frozen else ActivationFakeQuant(bits, learned)
        layer.add_module(INPUT_QUANT, quant)
        layer.register_forward_pre_hook(_quantize_input)
    return module


def freeze_activation_quant(module: nn.Module) -> None:
    """Replace each (trained) activation quantizer by a frozen one holding only its range."""
    for _, layer in weight_layers(module):
        trained = getattr(layer, INPUT_QUANT, None)
        if trained is None:
            continue
        frozen = FrozenActivationQuant(int(math.log2(trained.qmax + 1)))
        frozen.scale.copy_(trained.scale.detach())
        frozen.zero_point.copy_(trained.zero_point.detach())
        setattr(layer, INPUT_QUANT, frozen.eval())


def add_weight_quant(module: nn.Module, bits: int, learned: bool = False) -> nn.Module:
    """Fake-quantize every Conv/Linear weight of `module` (in place) through a parametrization."""
    from torch.nn.utils import parametrize

    for _, layer in list(weight_layers(module)):
        parametrize.register_parametrization(
            layer, "weight", WeightFakeQuant(layer.weight, bits, learned)
        )
    return module


def bake_weight_quant(module: nn.Module) -> None:
    """Remove the weight parametrizations, leaving each weight at its quantized value."""
    from torch.nn.utils import parametrize

    for _, layer in list(weight_layers(module)):
        if parametrize.is_parametrized(layer, "weight"):
            parametrize.remove_parametrizations(layer, "weight", leave_parametrized=True)


def input_ranges(module: nn.Module, calib: Any, batch: int = 32) -> dict[str, tuple[float, float]]:
    """(min, max) of every Conv/Linear layer's input over the calibration inputs `calib`
    (NCHW float32): the ranges a min-max observer of post-training quantization sees."""
    ranges: dict[str, tuple[float, float]] = {}

    def record(name: str) -> Any:
        def hook(_: nn.Module, args: tuple[Any, ...]) -> None:
            low, high = float(args[0].min()), float(args[0].max())
            old = ranges.get(name, (low, high))
            ranges[name] = (min(old[0], low), max(old[1], high))

        return hook

    handles = [layer.register_forward_pre_hook(record(name))
               for name, layer in weight_layers(module)]  # fmt: skip
    try:
        inputs = torch.as_tensor(calib, dtype=torch.float32)
        with torch.inference_mode():
            for start in range(0, len(inputs), batch):
                module(inputs[start : start + batch])
    finally:
        for handle in handles:
            handle.remove()
    return ranges


def add_calibrated_activation_quant(module: nn.Module, bits: int, calib: Any) -> list[str]:
    """Post-training activation quantization (in place): every Conv/Linear input gets a
    FrozenActivationQuant whose range is its min-max on `calib` (widened to hold 0, so the
    zero point is an exact integer code, as ActivationFakeQuant does). Returns the names of
    layers the calibration never reached (left float: none in a feed-forward CNN)."""
    ranges = input_ranges(module, calib)
    add_activation_quant(module, bits, frozen=True)
    unreached = []
    for name, layer in weight_layers(module):
        quant = getattr(layer, INPUT_QUANT)
        if name not in ranges:
            unreached.append(name)
            continue
        low, high = min(ranges[name][0], 0.0), max(ranges[name][1], 0.0)
        scale = max((high - low) / quant.qmax, 1e-8)
        with torch.no_grad():
            quant.scale.fill_(scale)
            quant.zero_point.fill_(min(max(round(-low / scale), 0), quant.qmax))
    return unreached
