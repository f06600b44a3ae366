"""Models: where an fp32 network and its weights come from."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from qbench.params import NoParams, Params


@dataclass
class LoadedModel:
    """An fp32 model ready to quantize: a torch module (eval mode) or an ONNX file."""

    weights: str  # provenance of the weights, stored in every row
    sha256: str  # hash of the fp32 weights (or of the ONNX file)
    module: Any = None  # torch.nn.Module for torch-format models
    onnx_path: Path | None = None


class ModelSource:
    name: ClassVar[str]
    description: ClassVar[str]
    Params: ClassVar[type[Params]] = NoParams
    dataset: ClassVar[str]  # the dataset whose inputs this model takes
    format: ClassVar[str] = "torch"  # native format: "torch" or "onnx"

    def dataset_for(self, params: Params) -> str:
        return self.dataset

    def architecture(self, params: Params) -> Any:
        """A freshly built torch module with this model's structure (torch-format models)."""
        raise NotImplementedError(f"{self.name} has no torch architecture")

    def load(self, params: Params) -> LoadedModel:
        raise NotImplementedError


def reestimate_batchnorm(module: Any, inputs: Any, batch: int = 16) -> None:
    """Recompute BatchNorm running statistics from real inputs (cumulative average).

    A randomly initialised network's BN statistics do not match its activations; its outputs
    collapse towards zero and quantized outputs round to nothing (shared/facts.md).
    """
    import torch

    bns = [m for m in module.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative moving average over all batches
    module.train()
    with torch.no_grad():
        for start in range(0, len(inputs), batch):
            module(torch.as_tensor(inputs[start : start + batch]))
    module.eval()


def state_dict_sha256(state_dict: dict[str, Any]) -> str:
    import hashlib

    digest = hashlib.sha256()
    for key in sorted(state_dict):
        digest.update(key.encode())
        digest.update(state_dict[key].detach().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]
