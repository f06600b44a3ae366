"""Weight quantizers that no runtime executes natively: run as simulations.

Each layer weight is quantized by a hand-written quantizer (qbench.quant) and dequantized back
to float32, so float kernels compute exactly what integer/codebook kernels would, but at float
speed: rows say `execution=simulated`, and their size is the theoretical `packed_bytes`.
A method whose params ask for activation bits also fake-quantizes each Conv/Linear layer's
input (per tensor, affine, min-max range on the calibration inputs): the module then holds a
frozen quantizer per layer, which `rebuild_torch` recreates and ONNX export keeps as arithmetic.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from qbench.methods.base import MakeContext, Method, save_torch_artifact
from qbench.methods.packing import packed_bytes_torch, weight_layers
from qbench.models.base import format_name
from qbench.params import Params


class SimulatedWeightMethod(Method):
    produces = ("torch", "onnx")
    weight_scheme: ClassVar[str]

    def execution(self, fmt: str, params: Params) -> str:
        return "simulated"

    def weight_bits(self, params: Params) -> int | None:
        """Nominal bits per weight for the row (None where it varies per layer)."""
        return getattr(params, "bits", None)

    def activation_bits(self, params: Params) -> int | None:
        """Bits of each layer's (fake-quantized) input; None keeps activations float."""
        return None

    def needs_calibration(self, params: Params) -> bool:
        return self.uses_calibration or self.activation_bits(params) is not None

    def quantize(self, name: str, weight: np.ndarray, params: Params) -> Any:
        """A qbench.quant.QuantizedTensor for one layer's weight (None: keep it float)."""
        raise NotImplementedError

    def describe(self, fmt: str, params: Params) -> dict[str, Any]:
        bits_a = self.activation_bits(params)
        return {
            "bits_w": self.weight_bits(params),
            "bits_a": bits_a or 32,
            "act_dtype": "float32" if bits_a is None else f"float32 (fake-quantized uint{bits_a})",
            "weight_dtype": "float32 (dequantized)",
            "weight_scheme": self.weight_scheme,
            **self.row_params(params),
        }

    def row_params(self, params: Params) -> dict[str, Any]:
        """This method's parameters as typed row columns (granularity, clusters, ...)."""
        return {}

    def unsupported(self, fmt: str, params: Params, source: Any) -> str | None:
        if source.format != "torch":
            return (f"{self.name} quantizes torch layers; model {source.name} is "
                    f"{format_name(source)}")  # fmt: skip
        return None

    def quantize_module(self, module: Any, params: Params) -> tuple[Any, dict[str, int]]:
        """A copy of `module` with every Conv/Linear weight replaced by its dequantized
        quantization, and the packed bits of each quantized weight."""
        import torch

        module = copy.deepcopy(module)
        packed: dict[str, int] = {}
        for name, layer in weight_layers(module):
            q = self.quantize(name, layer.weight.detach().cpu().numpy(), params)
            if q is None:
                continue
            with torch.no_grad():
                layer.weight.copy_(torch.from_numpy(np.ascontiguousarray(q.dequantized)))
            packed[name] = int(q.packed_bits)
        return module, packed

    def make(self, fmt: str, params: Params, ctx: MakeContext, out: Path) -> dict[str, Any]:
        module, packed = self.quantize_module(ctx.model.module, params)
        notes: list[str] = []
        bits_a = self.activation_bits(params)
        if bits_a is not None:
            from qbench.methods._fake_quant import add_calibrated_activation_quant

            if ctx.calib is None or len(ctx.calib) == 0:
                raise ValueError(f"{self.name}: activation_bits needs calibration inputs")
            unreached = add_calibrated_activation_quant(module, bits_a, ctx.calib)
            note = (f"activations: each Conv/Linear input fake-quantized to uint{bits_a}, "
                    f"min-max range on {len(ctx.calib)} calibration inputs")  # fmt: skip
            if unreached:
                note += f"; never reached (left unquantized): {', '.join(unreached)}"
            notes.append(note)
        if fmt == "torch":
            save_torch_artifact(out, ctx, self.name, params, module.state_dict())
        else:
            from qbench.methods.export import export_onnx

            export_onnx(module, ctx.input_specs, out)
        meta: dict[str, Any] = {
            "packed_bytes": packed_bytes_torch(module, lambda name, _: packed.get(name))
        }
        if self.weight_bits(params) is None:
            meta["layer_bits_json"] = json.dumps(self.layer_bits(module, packed), sort_keys=True)
        if notes:
            meta["artifact_notes"] = notes
        return meta

    def rebuild_torch(self, module: Any, example: Any, params: Params) -> Any:
        bits_a = self.activation_bits(params)
        if bits_a is not None:
            from qbench.methods._fake_quant import add_activation_quant

            add_activation_quant(module, bits_a, frozen=True)
        return module

    def layer_bits(self, module: Any, packed: dict[str, int]) -> dict[str, float]:
        """Effective bits per weight of each layer (float layers: 32)."""
        return {name: round(packed[name] / layer.weight.numel(), 3) if name in packed else 32
                for name, layer in weight_layers(module)}  # fmt: skip
