"""A small CNN trained on scikit-learn's digits at first use; the weights are cached."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field

from qbench.cache import cached_file
from qbench.models.base import LoadedModel, ModelSource, state_dict_file_model
from qbench.params import Params
from qbench.plugins import datasets, models


class DigitsCNNParams(Params):
    epochs: int = Field(default=15, ge=1, description="training epochs over the train split")
    seed: int = Field(default=0, description="initialisation and shuffling seed")


def train_digits_cnn(params: DigitsCNNParams) -> Any:
    import numpy as np
    import torch

    from qbench.models._architectures import DigitsCNN

    torch.manual_seed(params.seed)
    x, y = datasets.get("digits")().load("train", None)
    x_t, y_t = torch.as_tensor(x), torch.as_tensor(y)
    model = DigitsCNN()
    optimiser = torch.optim.Adam(model.parameters(), lr=2e-3)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, params.epochs)
    rng = np.random.default_rng(params.seed)
    model.train()
    for _ in range(params.epochs):
        for idx in np.array_split(rng.permutation(len(x)), max(1, len(x) // 64)):
            optimiser.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x_t[idx]), y_t[idx])
            loss.backward()
            optimiser.step()
        schedule.step()
    return model.eval()


@models.register
class DigitsCNNModel(ModelSource):
    name = "digits_cnn"
    description = "small CNN trained on sklearn digits (8x8) at first use; weights cached"
    Params = DigitsCNNParams
    dataset = "digits"

    def architecture(self, params: Params) -> Any:
        from qbench.models._architectures import DigitsCNN

        return DigitsCNN().eval()

    def load(self, params: Params) -> LoadedModel:
        assert isinstance(params, DigitsCNNParams)

        def build(tmp: Path) -> None:
            import torch

            torch.save(train_digits_cnn(params).state_dict(), tmp)

        key = {"model": self.name, **params.model_dump(), "version": 1}
        path, _ = cached_file("weights", key, ".pt", build)
        return state_dict_file_model(
            f"trained on digits train split ({params.epochs} epochs, seed {params.seed})",
            path, lambda: self.architecture(params),
        )  # fmt: skip
