"""Real photos that ship inside scikit-image and scikit-learn, preprocessed for ImageNet models.

There are no ImageNet labels for them, so they measure fidelity to the fp32 model (top-1
agreement, cosine, SQNR), not top-1. Evaluation inputs are five crops of each photo and their
mirror images; calibration inputs are random resized crops of the same photos (other pixels,
scales and positions than the evaluation crops).
"""

from __future__ import annotations

import numpy as np

from qbench.datasets.base import Dataset, Split
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
CROPS_PER_PHOTO = 10  # five crops and their mirror images


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


def _five_crops(img: np.ndarray) -> list[np.ndarray]:
    # Resize the short side to 256 as ImageNet evaluation does, then take 5 crops of 224.
    h, w = img.shape[:2]
    scale = 256 / min(h, w)
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


def ten_crops(img: np.ndarray) -> list[np.ndarray]:
    """ImageNet-preprocessed five crops of a photo and their mirror images, CROPS_PER_PHOTO."""
    crops = []
    for crop in _five_crops(img):
        crops += [_normalise(crop), _normalise(crop[:, ::-1])]
    return crops


def _random_crop(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    h, w = img.shape[:2]
    side = int(min(h, w) * rng.uniform(0.35, 0.9))
    y, x = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
    crop = _resize(img[y : y + side, x : x + side], SIZE, SIZE)
    return crop[:, ::-1] if rng.random() < 0.5 else crop


@datasets.register
class SamplePhotos(Dataset):
    name = "sample_photos"
    description = "17 real photos from scikit-image and scikit-learn, ImageNet preprocessing"
    labelled = False
    num_classes = None
    input_shape = (3, SIZE, SIZE)

    def load(
        self, split: Split, n: int | None, seed: int = 0
    ) -> tuple[np.ndarray, np.ndarray | None]:
        photos = _photos()
        assert len(photos) == PHOTO_COUNT
        if split == "eval":
            crops = [crop for img in photos for crop in ten_crops(img)]
            crops = [crops[i] for i in interleaved(PHOTO_COUNT)]
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
            photo = np.array(interleaved(PHOTO_COUNT)) // CROPS_PER_PHOTO
        else:
            photo = np.arange(n if n is not None else 64) % PHOTO_COUNT
        return photo[:n] if n is not None else photo


def interleaved(photo_count: int) -> list[int]:
    """Evaluation crops are built photo by photo (CROPS_PER_PHOTO each) and served interleaved,
    so that a small n still covers many photos: position i holds this index of the built list."""
    return [p * CROPS_PER_PHOTO + k for k in range(CROPS_PER_PHOTO) for p in range(photo_count)]
