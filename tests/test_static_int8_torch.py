"""static_int8 on torch (FX, x86 engine): a ReLU6's input is quantized on [0, 6].

torch.ao fuses no conv with ReLU6, so without help the conv's output is observed before the
clamp; a conv whose pre-activations span [-40, 40] then spends its grid on values the ReLU6
throws away."""

from __future__ import annotations

import copy

import numpy as np
import pytest

torch = pytest.importorskip("torch")


class WideReLU6(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.act = torch.nn.ReLU6()
        self.head = torch.nn.Conv2d(8, 4, 1)
        with torch.no_grad():
            self.conv.weight.copy_(torch.randn(self.conv.weight.shape, generator=g) * 5)
            self.head.weight.copy_(torch.randn(self.head.weight.shape, generator=g))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.head(self.act(self.conv(x)))
        return torch.nn.functional.relu6(y).mean((2, 3))  # the functional form too


def _quantize(model: torch.nn.Module, x: torch.Tensor, clamp: bool) -> torch.nn.Module:
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    from qbench.methods.static_int8 import _relu6_ranges, _torch_qconfig_mapping

    torch.backends.quantized.engine = "x86"
    prepared = prepare_fx(copy.deepcopy(model).eval(), _torch_qconfig_mapping(), (x[:1],))
    if clamp:
        assert _relu6_ranges(prepared) == 2  # one observer each: module and functional ReLU6
    with torch.no_grad():
        prepared(x)
    return convert_fx(prepared)


def test_relu6_inputs_are_quantized_on_0_to_6() -> None:
    from qbench.measure.fidelity import sqnr_db

    x = torch.randn(32, 3, 12, 12, generator=torch.Generator().manual_seed(1))
    model = WideReLU6().eval()
    with torch.no_grad():
        pre = model.conv(x)
        ref = model(x).numpy()
    assert pre.min() < -20 and pre.max() > 20  # the range the clamp avoids
    plain, clamped = _quantize(model, x, False), _quantize(model, x, True)
    with torch.no_grad():
        errors = {name: sqnr_db(ref, q(x).numpy()) for name, q in
                  (("plain", plain), ("clamped", clamped))}  # fmt: skip
    assert errors["clamped"] > errors["plain"] + 6, errors
    # the quantized conv's output grid is [0, 6] (7-bit: reduce_range)
    scales = [float(m.scale) for m in clamped.modules() if m.__class__.__name__ == "Conv2d"
              and hasattr(m, "scale")]  # fmt: skip
    assert scales and scales[0] == pytest.approx(6.0 / 127, rel=0.02)


def test_rebuild_gives_the_same_module_as_make() -> None:
    """The torch backend rebuilds the quantized module from the stored state dict: the clamp
    must not change the structure it loads into."""
    from qbench.plugins import load_all

    static = load_all().methods.get("static_int8")()
    x = torch.randn(8, 3, 12, 12, generator=torch.Generator().manual_seed(2))
    model = WideReLU6().eval()
    made = _quantize(model, x, True)
    rebuilt = static.rebuild_torch(copy.deepcopy(model), x[:1], static.Params(torch_flow="fx"))
    rebuilt.load_state_dict(made.state_dict())
    with torch.no_grad():
        np.testing.assert_array_equal(rebuilt(x).numpy(), made(x).numpy())
