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

import numpy as np

from qbench.datasets._foolbox_photos import PHOTO_COUNT, photo_files, read_photo
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
