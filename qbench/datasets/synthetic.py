"""Random inputs shaped as the model declares them: latency only.

Nothing a model computes on noise says how well it works, so rows measured on these inputs
leave accuracy and fidelity empty with the reason. Calibration inputs (for methods that need
them to run at all) are drawn from another stream than the evaluation inputs.
"""

from __future__ import annotations

import numpy as np
from pydantic import Field, model_validator

from qbench.datasets.base import Dataset, Split
from qbench.inputs import Inputs, InputSpec
from qbench.params import CheckError, Params
from qbench.plugins import datasets

_SPLITS = {"eval": 0, "calib": 1, "train": 2}


class SyntheticParams(Params):
    seed: int = Field(default=0, description="seed of the random inputs")
    low: float = Field(default=0.0, description="float inputs: uniform from low ...")
    high: float = Field(default=1.0, description="... to high")
    int_low: int = Field(default=0, description="integer inputs: uniform from int_low ...")
    int_high: int = Field(default=2, description="... to int_high (exclusive), e.g. a vocabulary")
    dynamic_size: int = Field(
        default=16, ge=1, le=65536, description="size of each dynamic (non-batch) axis"
    )

    @model_validator(mode="after")
    def _ranges(self) -> SyntheticParams:
        if not self.low < self.high:
            raise ValueError("low must be below high")
        if not self.int_low < self.int_high:
            raise ValueError("int_low must be below int_high")
        return self


@datasets.register
class Synthetic(Dataset):
    name = "synthetic"
    description = "random inputs of the model's declared shapes: latency only, no accuracy"
    Params = SyntheticParams
    labelled = False
    measures_fidelity = False

    def fields(self) -> list[InputSpec]:
        if not self.model_inputs:
            raise CheckError(
                "dataset",
                "synthetic inputs take the model's declared input shapes, and this "
                "model declares none (give torch_module its `inputs`, or another dataset)",
            )
        assert isinstance(self.params, SyntheticParams)
        size = self.params.dynamic_size
        # an input given a constant (onnx_file's `constants`) takes nothing from the data
        return [InputSpec(s.name, tuple(size if d is None else d for d in s.shape), s.dtype)
                for s in self.model_inputs if s.value is None]  # fmt: skip

    @property
    def label_note(self) -> str:
        return "synthetic random inputs: latency only, top-1 not measured"

    def load(self, split: Split, n: int | None, seed: int = 0) -> tuple[Inputs, None]:
        p = self.params
        assert isinstance(p, SyntheticParams)
        rng = np.random.default_rng([p.seed, _SPLITS[split], seed])
        count = 64 if n is None else n
        out = {}
        for spec in self.fields():
            shape = (count, *spec.shape)
            if np.dtype(spec.dtype).kind == "f":
                x = rng.uniform(p.low, p.high, shape)
            elif spec.dtype == "bool":
                x = rng.random(shape) < 0.5
            else:
                x = rng.integers(p.int_low, p.int_high, shape)
            out[spec.name] = x.astype(spec.dtype)
        return out, None
