"""Quantization-aware training: fine-tune the fp32 model with fake-quantized weights (and
activations) on its labelled training split, then bake the quantized weights in (simulated).

Weights: per output channel, symmetric, `bits_w` bits; activations: the input of every
Conv/Linear layer, per tensor, affine, `bits_a` bits (32: left float). Gradients pass the
rounding by the straight-through estimator (qbench.methods._fake_quant). After training every
weight holds its quantized-dequantized value, so a float runtime computes exactly the
quantized model; activation quantizers stay in the artifact as frozen (scale, zero point)
pairs: submodules the torch backend rebuilds (`rebuild_torch`), Round/Clip arithmetic in ONNX.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, field_validator

from qbench.methods.base import MakeContext, Method, save_torch_artifact
from qbench.methods.packing import int8_weight_bits, packed_bytes_torch
from qbench.models.base import format_name
from qbench.params import Params
from qbench.plugins import datasets, methods


class QatParams(Params):
    bits_w: int = Field(default=4, ge=2, le=8, description="weight bits (per channel, symmetric)")
    bits_a: int = Field(
        default=8, description="activation bits, 2-8 (per tensor, affine), or 32: float"
    )
    steps: int = Field(default=300, ge=0, description="optimiser steps of fine-tuning")
    lr: float = Field(default=1e-3, gt=0, description="learning rate (cosine decay to 0)")
    optimizer: Literal["adam", "sgd"] = Field(
        default="adam", description="Adam, or SGD with momentum 0.9"
    )
    batch_size: int = Field(default=64, ge=1, description="training samples per step")
    learned_scale: bool = Field(
        default=False,
        description="LSQ: learn weight scales (and activation scale + zero point) by gradient, "
        "scaled by 1/sqrt(N*Qp); otherwise scales follow max|w| per channel at every step and "
        "a moving average of the activation range",
    )
    seed: int = Field(default=0, description="seed of the sample order and initialisation")

    @field_validator("bits_a")
    @classmethod
    def _bits_a(cls, value: int) -> int:
        if not (2 <= value <= 8 or value == 32):
            raise ValueError("bits_a must be 2 to 8, or 32 for float activations")
        return value


# Below this many parameters training runs on one thread: intra-op threads only add overhead to
# tiny layers, and on a busy machine a second thread made the digits CNN's steps 20x slower.
SMALL_MODEL_PARAMS = 1_000_000


def _dataset(source: Any) -> Any:
    """The dataset of a model source: of its bound params where it has them, else of the
    default params where they build, else the source's class-level dataset (a name or
    {name, params})."""
    if getattr(source, "params", None) is not None:
        return source.dataset_for(source.params)
    try:
        return source.dataset_for(source.Params())
    except Exception:  # params with required fields
        return source.dataset


def train_qat(fp32: Any, x: np.ndarray, y: np.ndarray, params: QatParams) -> tuple[Any, float]:
    """A copy of `fp32` fine-tuned with fake quantization, weights baked to their quantized
    values and activation ranges frozen; also the mean loss of the last 10% of the steps."""
    import torch

    threads = torch.get_num_threads()
    if sum(p.numel() for p in fp32.parameters()) < SMALL_MODEL_PARAMS:
        torch.set_num_threads(1)
    try:
        return _train(fp32, x, y, params)
    finally:
        torch.set_num_threads(threads)


def _train(fp32: Any, x: np.ndarray, y: np.ndarray, params: QatParams) -> tuple[Any, float]:
    import torch

    from qbench.methods._fake_quant import (
        ActivationFakeQuant,
        add_activation_quant,
        add_weight_quant,
        bake_weight_quant,
        freeze_activation_quant,
    )

    torch.manual_seed(params.seed)
    model = copy.deepcopy(fp32).float().eval()
    add_weight_quant(model, params.bits_w, params.learned_scale)
    x_t, y_t = torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y, dtype=torch.long)
    if params.bits_a < 32:
        add_activation_quant(model, params.bits_a, params.learned_scale)
        # Initial activation ranges from a few hundred training inputs, BatchNorm untouched.
        for sub in model.modules():
            if isinstance(sub, ActivationFakeQuant):
                sub.train()
        with torch.no_grad():
            model(x_t[:256])
    model.train()
    if params.optimizer == "adam":
        optimiser: Any = torch.optim.Adam(model.parameters(), lr=params.lr)
    else:
        optimiser = torch.optim.SGD(model.parameters(), lr=params.lr, momentum=0.9)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda step: 0.5 * (1 + math.cos(math.pi * step / max(1, params.steps)))
    )
    rng = np.random.default_rng(params.seed)
    order, pos, losses = rng.permutation(len(x)), 0, []
    batch = min(params.batch_size, len(x))
    for _ in range(params.steps):
        if pos + batch > len(order):
            order, pos = rng.permutation(len(x)), 0
        idx = torch.as_tensor(order[pos : pos + batch])
        pos += batch
        optimiser.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x_t[idx]), y_t[idx])
        loss.backward()
        optimiser.step()
        schedule.step()
        losses.append(float(loss.detach()))
    model.eval()
    with torch.no_grad():
        bake_weight_quant(model)
    freeze_activation_quant(model)
    tail = losses[-max(1, len(losses) // 10) :]
    return model, float(np.mean(tail)) if tail else float("nan")


@methods.register
class Qat(Method):
    name = "qat"
    description = "quantization-aware training (STE fake quant, optional LSQ), simulated"
    Params = QatParams
    produces = ("torch", "onnx")

    def execution(self, fmt: str, params: Params) -> str:
        return "simulated"

    def describe(self, fmt: str, params: Params) -> dict[str, Any]:
        assert isinstance(params, QatParams)
        return {
            "bits_w": params.bits_w,
            "bits_a": params.bits_a,
            "act_dtype": "float32",
            "weight_dtype": "float32 (dequantized)",
            "weight_scheme": "uniform",
            "granularity": "per_channel",
            "symmetric_weights": True,
            "qat_steps": params.steps,
        }

    def unsupported(self, fmt: str, params: Params, source: Any) -> str | None:
        from qbench.datasets.base import dataset_ref, open_dataset

        if source.format != "torch":
            return f"qat trains torch layers; model {source.name} is {format_name(source)}"
        ref = _dataset(source)
        name = dataset_ref(ref)[0]
        if name not in datasets:
            return f"qat needs labelled training data; dataset {name} is not registered"
        try:
            labelled = open_dataset(ref).has_train_labels()
        except Exception as exc:  # the planner reports the dataset's own errors
            return f"qat needs labelled training data; dataset {name}: {exc}"
        if not labelled:
            return f"qat needs labelled training data; dataset {name} has none"
        return None

    def make(self, fmt: str, params: Params, ctx: MakeContext, out: Path) -> dict[str, Any]:
        assert isinstance(params, QatParams)
        module, note = self.trained(params, ctx)
        if fmt == "torch":
            save_torch_artifact(out, ctx, self.name, params, module.state_dict())
        else:
            from qbench.methods.export import export_onnx

            export_onnx(module, ctx.input_specs, out)
        return {
            "packed_bytes": packed_bytes_torch(module, int8_weight_bits(params.bits_w, True)),
            "artifact_notes": [note],
        }

    def trained(self, params: QatParams, ctx: MakeContext) -> tuple[Any, str]:
        """The fine-tuned module and a note on its training. Training runs once per model and
        parameters: its state dict is cached and shared by the torch and ONNX artifacts."""
        import torch

        from qbench.cache import cached_file, read_meta
        from qbench.datasets.base import dataset_ref, open_dataset
        from qbench.inputs import as_inputs, first

        ref = ctx.source.dataset_for(ctx.model_params)
        name = dataset_ref(ref)[0]

        def build(tmp: Path) -> dict[str, Any]:
            dataset = open_dataset(ref)
            x, y = dataset.load("train", None)
            x = first(as_inputs(x))  # qat trains models of one input
            if not dataset.has_train_labels() or y is None:
                raise ValueError(f"qat needs labelled training data; dataset {name} has none")
            module, loss = train_qat(ctx.model.module, x, y, params)
            torch.save(module.state_dict(), tmp)
            mode = "LSQ learned scales" if params.learned_scale else "max|w| scales"
            return {
                "note": f"qat: {params.steps} {params.optimizer} steps (lr {params.lr:g}, batch "
                f"{params.batch_size}, {mode}) on {len(x)} {name} training samples; "
                f"final training loss {loss:.3f}"
            }

        key = {
            "model": ctx.model_name,
            "model_params": ctx.model_params.model_dump(),
            "model_sha": ctx.model.sha256,
            "dataset": name if isinstance(ref, str) else dataset_ref(ref),
            "params": params.model_dump(),
            "version": self.version,
        }
        path, _ = cached_file("qat_trained", key, ".pt", build)
        module = self.rebuild_torch(copy.deepcopy(ctx.model.module).float(), None, params)
        module.load_state_dict(torch.load(path, weights_only=True))
        return module.eval(), read_meta(path)["note"]

    def rebuild_torch(self, module: Any, example: Any, params: Params) -> Any:
        from qbench.methods._fake_quant import add_activation_quant

        assert isinstance(params, QatParams)
        if params.bits_a < 32:
            add_activation_quant(module, params.bits_a, frozen=True)
        return module
