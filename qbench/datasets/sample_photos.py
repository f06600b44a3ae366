"""Real photos that ship inside scikit-image, scikit-learn and foolbox, preprocessed for ImageNet
models.

They are used without labels, so they measure fidelity to the fp32 model (top-1 agreement,
cosine, SQNR), not top-1. Evaluation inputs are, for each photo and each of `sizes`, the photo
resized to that short side, its five 224 crops and their mirror images: 17 scikit-image and
scikit-learn photos, and foolbox's 20 ImageNet validation photos where foolbox is installed
(scripts/setup.sh installs it), so 37 × 20 = 740 inputs by default, served interleaved so that
a small n still covers every photo. Crops of one photo are not independent draws: groups()
names the photo, and accuracy intervals count each photo once. Calibration inputs are random
resized crops of the 17 non-ImageNet photos only (other pixels, scales and positions than the
evaluation crops), so that imagenet_samples, which calibrates on them, never calibrates on a
photo it evaluates.
"""

from __future__ import annotations

from typing import Annotated

import numpy as np
from pydantic import Field

from qbench.datasets.base import Dataset, Split
from qbench.params import Params
from qbench.plugins import datasets

# scikit-image photos that load offline (shared/facts.md); grey ones are stacked to RGB.
SKIMAGE_PHOTOS = (
    "astronaut",
    "chelsea",
    "coffee",
    "rocket",
    "camera",
    "moon",
    "clock",
    "coins",
    "grass",
    "gravel",
    "brick",
    "hubble_deep_field",
    "colorwheel",
    "immunohistochemistry",
    "retina",
)
MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)[:, None, None]
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)[:, None, None]
SIZE = 224
PHOTO_COUNT = len(SKIMAGE_PHOTOS) + 2  # and scikit-learn's china.jpg and flower.jpg
CROPS_PER_SIZE = 10  # five crops and their mirror images
# Short sides a photo is resized to before its crops: 256 is ImageNet's evaluation resize; 320
# shows the same scene closer up (other pixels under every crop).
DEFAULT_SIZES = (256, 320)


def _photos() -> list[np.ndarray]:
    import skimage.data
    from skimage.color import gray2rgb
    from sklearn.datasets import load_sample_images

    images = []
    for name in SKIMAGE_PHOTOS:
        img = getattr(skimage.data, name)()
        if img.ndim == 2:
            img = gray2rgb(img)
        images.append(img[..., :3])
    images.extend(load_sample_images().images)  # china.jpg, flower.jpg
    return images


def _resize(img: np.ndarray, h: int, w: int) -> np.ndarray:
    from skimage.transform import resize

    return resize(img, (h, w), anti_aliasing=True, preserve_range=True).astype(np.float32)


def _normalise(crop: np.ndarray) -> np.ndarray:
    chw = np.transpose(crop / 255.0, (2, 0, 1)).astype(np.float32)
    return (chw - MEAN) / STD


def _five_crops(img: np.ndarray, short_side: int = 256) -> list[np.ndarray]:
    # Resize the short side (256 as ImageNet evaluation does), then take 5 crops of 224.
    h, w = img.shape[:2]
    scale = short_side / min(h, w)
    img = _resize(img, max(SIZE, round(h * scale)), max(SIZE, round(w * scale)))
    h, w = img.shape[:2]
    corners = [
        ((h - SIZE) // 2, (w - SIZE) // 2),
        (0, 0),
        (0, w - SIZE),
        (h - SIZE, 0),
        (h - SIZE, w - SIZE),
    ]
    return [img[y : y + SIZE, x : x + SIZE] for y, x in corners]


def ten_crops(img: np.ndarray, short_side: int = 256) -> list[np.ndarray]:
    """ImageNet-preprocessed five crops of a photo resized to `short_side` and their mirror
    images, CROPS_PER_SIZE."""
    crops = []
    for crop in _five_crops(img, short_side):
        crops += [_normalise(crop), _normalise(crop[:, ::-1])]
    return crops


def photo_crops(img: np.ndarray, sizes: tuple[int, ...] | list[int]) -> list[np.ndarray]:
    """ten_crops of a photo at each short side in `sizes`."""
    return [crop for size in sizes for crop in ten_crops(img, size)]


class PhotoCropParams(Params):
    sizes: list[Annotated[int, Field(ge=SIZE, le=1024)]] = Field(
        default=list(DEFAULT_SIZES),
        min_length=1,
        max_length=8,
        description="short sides (pixels, 224 to 1024) each photo is resized to before its five "
        "224×224 crops and their mirror images: 10 evaluation inputs per photo per size",
    )


def _random_crop(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    h, w = img.shape[:2]
    side = int(min(h, w) * rng.uniform(0.35, 0.9))
    y, x = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
    crop = _resize(img[y : y + side, x : x + side], SIZE, SIZE)
    return crop[:, ::-1] if rng.random() < 0.5 else crop


def _imagenet_photos() -> list[np.ndarray]:
    """foolbox's 20 ImageNet validation photos where foolbox is installed, else none."""
    from qbench.datasets._foolbox_photos import photo_files, read_photo

    try:
        files = photo_files()
    except RuntimeError:
        return []
    return [read_photo(path) for path, _ in files]


@datasets.register
class SamplePhotos(Dataset):
    name = "sample_photos"
    description = (
        "37 real photos (scikit-image, scikit-learn, foolbox), ImageNet preprocessing, "
        "20 crops each; unlabelled"
    )
    Params = PhotoCropParams
    labelled = False
    num_classes = None
    input_shape = (3, SIZE, SIZE)

    def _sizes(self) -> list[int]:
        return list(getattr(self.params, "sizes", DEFAULT_SIZES))

    def fingerprint(self) -> object:
        # foolbox's photos join the evaluation pool where installed: the input cache tells apart
        return {"imagenet_photos": len(_imagenet_photos())}

    def load(
        self, split: Split, n: int | None, seed: int = 0
    ) -> tuple[np.ndarray, np.ndarray | None]:
        photos = _photos()
        assert len(photos) == PHOTO_COUNT
        if split == "eval":
            photos += _imagenet_photos()
            per = CROPS_PER_SIZE * len(self._sizes())
            crops = [crop for img in photos for crop in photo_crops(img, self._sizes())]
            crops = [crops[i] for i in interleaved(len(photos), per)]
        else:
            rng = np.random.default_rng(seed)
            count = n if n is not None else 64
            crops = [_normalise(_random_crop(photos[i % len(photos)], rng)) for i in range(count)]
        if n is not None:
            crops = crops[:n]
        return np.stack(crops), None

    def groups(self, split: Split, n: int | None, seed: int = 0) -> np.ndarray | None:
        """The photo each input was cropped from."""
        if split == "eval":
            per = CROPS_PER_SIZE * len(self._sizes())
            count = PHOTO_COUNT + len(_imagenet_photos())
            photo = np.array(interleaved(count, per)) // per
        else:
            photo = np.arange(n if n is not None else 64) % PHOTO_COUNT
        return photo[:n] if n is not None else photo


def interleaved(photo_count: int, per_photo: int = CROPS_PER_SIZE) -> list[int]:
    """Evaluation crops are built photo by photo (`per_photo` each) and served interleaved,
    so that a small n still covers many photos: position i holds this index of the built list."""
    return [p * per_photo + k for k in range(per_photo) for p in range(photo_count)]
