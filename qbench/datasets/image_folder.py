"""Your own images: a folder with one sub-folder per class, or a flat folder (and a labels CSV).

Preprocessing is what the model expects, as typed parameters: resize of the short side,
centre crop, pixel scale, mean/std, channel order and layout. Labels: sub-folder names that are
all integers are the class indices themselves (ImageNet-style `281/`); otherwise classes are
numbered in sorted name order (as torchvision's ImageFolder does). A flat folder is unlabelled
(fidelity to fp32 only) unless `labels_csv` gives `file,label` rows. Each class's images are
split in a fixed order: the first `eval_fraction` are evaluated, the rest calibrate and train,
so the two splits never share an image.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
from pydantic import Field, field_validator, model_validator

from qbench.datasets.base import Dataset, Split
from qbench.inputs import DEFAULT_FIELD, InputSpec
from qbench.params import CheckError, Params
from qbench.plugins import datasets

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm")


class ImageFolderParams(Params):
    path: str = Field(description="the image folder (relative paths: from the suite's folder)")
    labels_csv: str | None = Field(
        default=None,
        description="CSV of `file,label` rows (file relative to the folder, label an integer "
        "class index; a header row is skipped); none: sub-folders are the classes",
    )
    resize: int | None = Field(
        default=256, ge=1, description="resize the short side to this many pixels; none: keep"
    )
    crop: int = Field(default=224, ge=1, description="centre crop of crop x crop pixels")
    scale: float = Field(
        default=1 / 255, gt=0, description="pixel values (0..255) are multiplied by this first"
    )
    mean: list[float] = Field(
        default=[0.485, 0.456, 0.406], description="per-channel mean subtracted after scale"
    )
    std: list[float] = Field(
        default=[0.229, 0.224, 0.225], description="per-channel std divided by after the mean"
    )
    channel_order: Literal["RGB", "BGR", "L"] = Field(
        default="RGB", description="channel order; L: one grey channel"
    )
    layout: Literal["NCHW", "NHWC"] = Field(
        default="NCHW", description="NCHW (PyTorch, ONNX) or NHWC (TFLite, Keras)"
    )
    eval_fraction: float = Field(
        default=0.5, gt=0, lt=1, description="share of each class's images evaluated"
    )

    path_fields: ClassVar[tuple[str, ...]] = ("path", "labels_csv")

    @field_validator("std")
    @classmethod
    def _nonzero(cls, value: list[float]) -> list[float]:
        if any(v == 0 for v in value):
            raise ValueError("std values must not be zero")
        return value

    @field_validator("scale", "mean", "std")
    @classmethod
    def _finite(cls, value: float | list[float]) -> float | list[float]:
        # NaN or Inf here makes every input NaN, and every metric of it a meaningless number
        if not np.isfinite(value).all():
            raise ValueError("expected finite numbers (no NaN or Inf)")
        return value

    @model_validator(mode="after")
    def _per_channel(self) -> ImageFolderParams:
        for name in ("mean", "std"):
            given = len(getattr(self, name))
            if given in (1, self.channels):
                continue
            if self.channels == 1:  # the defaults are ImageNet's three RGB values
                raise ValueError(f"channel_order L has one (grey) channel, so {name} takes one "
                                 f"value, not {given}: give mean: [M] and std: [S]")  # fmt: skip
            raise ValueError(f"{name} needs 1 or 3 values (one per {self.channel_order} "
                             f"channel), not {given}")  # fmt: skip
        return self

    @property
    def channels(self) -> int:
        return 1 if self.channel_order == "L" else 3


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _unreadable(path: Path) -> str | None:
    """Why PIL cannot read the image (empty, not an image, a damaged header), None where it
    can. Reads the header (and, for PNG and a few others, checks the file), not the pixels:
    a plan checks every image of a folder."""
    from PIL import Image, UnidentifiedImageError

    if path.stat().st_size == 0:
        return "an empty file, not an image: remove it or replace it"
    try:
        with Image.open(path) as img:
            img.verify()
    except UnidentifiedImageError:
        return f"not an image PIL can read (a {path.suffix} name on other data?): remove it"
    except (OSError, SyntaxError, ValueError) as exc:  # PIL's kinds for a damaged file
        return f"a damaged image ({exc}): remove it or replace it"
    return None


@datasets.register
class ImageFolder(Dataset):
    name = "image_folder"
    description = "your images: one sub-folder per class (or a labels CSV), typed preprocessing"
    Params = ImageFolderParams
    labelled = True  # per folder: set in __init__

    def __init__(self, params: Params | None = None, model_inputs: object = None) -> None:
        super().__init__(params, model_inputs)  # type: ignore[arg-type]
        p = self.params
        assert isinstance(p, ImageFolderParams)
        self._folder = Path(p.path).expanduser()
        self._found: list[tuple[Path, int | None]] | None = None
        self.labelled = p.labels_csv is not None or (
            self._folder.is_dir() and any(c.is_dir() for c in self._folder.iterdir())
        )

    @property
    def label(self) -> str:
        return f"image_folder:{self._folder.name}"

    @property
    def input_shape(self) -> tuple[int, ...]:  # type: ignore[override]
        p = self.params
        assert isinstance(p, ImageFolderParams)
        if p.layout == "NHWC":
            return (p.crop, p.crop, p.channels)
        return (p.channels, p.crop, p.crop)

    def fields(self) -> list[InputSpec]:
        return [InputSpec(DEFAULT_FIELD, self.input_shape, "float32")]

    # ---- what the folder holds ------------------------------------------------------------
    def _listing(self) -> list[tuple[Path, int | None]]:
        """(image, label or None) of every image, in a fixed order."""
        if self._found is not None:
            return self._found
        p = self.params
        assert isinstance(p, ImageFolderParams)
        folder = self._folder
        if not folder.exists():
            raise CheckError("path", f"{p.path}: no such folder")
        if not folder.is_dir():
            raise CheckError("path", f"{p.path}: is a file, expected a folder of images")
        found: list[tuple[Path, int | None]] = []
        if p.labels_csv is not None:
            found = self._from_csv(Path(p.labels_csv).expanduser())
        else:
            classes = sorted(c for c in folder.iterdir() if c.is_dir())
            if classes:
                numeric = all(c.name.isdigit() for c in classes)
                for index, cls in enumerate(classes):
                    label = int(cls.name) if numeric else index
                    found += [(img, label) for img in _images(cls)]
            else:
                found = [(img, None) for img in _images(folder)]
        if len(found) < 2:
            raise CheckError(
                "path",
                f"{p.path}: found {len(found)} image(s) ({', '.join(IMAGE_SUFFIXES)}); "
                "at least 2 are needed: some to evaluate, others to calibrate",
            )
        self._found = found
        return found

    def _from_csv(self, path: Path) -> list[tuple[Path, int | None]]:
        p = self.params
        assert isinstance(p, ImageFolderParams)
        if not path.is_file():
            raise CheckError("labels_csv", f"{p.labels_csv}: no such file")
        found: list[tuple[Path, int | None]] = []
        with open(path, newline="", encoding="utf-8") as fh:
            for number, row in enumerate(csv.reader(fh), 1):
                if not row or not "".join(row).strip():
                    continue
                if len(row) < 2:
                    raise CheckError("labels_csv", f"{p.labels_csv}:{number}: expected file,label")
                name, label = row[0].strip(), row[1].strip()
                if not label.isdigit():  # a negative label is no class (and counts as wrong)
                    if number == 1 and not label.lstrip("-").isdigit():
                        continue  # a header row
                    raise CheckError(
                        "labels_csv",
                        f"{p.labels_csv}:{number}: label {label!r} is not a class index (0, 1, "
                        "...)",
                    )
                image = self._folder / name
                if not image.is_file():
                    raise CheckError(
                        "labels_csv", f"{p.labels_csv}:{number}: {name}: no such image in {p.path}"
                    )
                found.append((image, int(label)))
        return found

    def check(self) -> None:
        for path, _ in self._listing():
            why = _unreadable(path)
            if why:
                raise CheckError("path", f"{path}: {why}")

    def fingerprint(self) -> object:
        import hashlib

        digest = hashlib.sha256()
        p = self.params
        assert isinstance(p, ImageFolderParams)
        files = [path for path, _ in self._listing()]
        if p.labels_csv is not None:
            files.append(Path(p.labels_csv).expanduser())
        for path in files:
            info = path.stat()
            digest.update(f"{path}|{info.st_size}|{info.st_mtime_ns}|".encode())
        return [str(self._folder.resolve()), digest.hexdigest()[:16]]

    def _split(self, split: Split) -> list[tuple[Path, int | None]]:
        p = self.params
        assert isinstance(p, ImageFolderParams)
        by_class: dict[int | None, list[tuple[Path, int | None]]] = {}
        for item in self._listing():
            by_class.setdefault(item[1], []).append(item)
        chosen = []
        for items in by_class.values():
            # a class of one image is evaluated only where there is another class to calibrate
            cut = min(max(1, round(len(items) * p.eval_fraction)), len(items))
            if len(items) > 1:
                cut = min(cut, len(items) - 1)
            chosen += items[:cut] if split == "eval" else items[cut:]
        if not chosen:
            raise ValueError(f"image_folder {p.path}: no images left for the {split} split")
        return chosen

    # ---- pixels ---------------------------------------------------------------------------
    def _read_pixels(self, path: Path) -> np.ndarray:
        """The image's preprocessed pixels; ValueError naming the file where it cannot be
        decoded (cut short after the plan checked its header)."""
        try:
            return self._pixels(path)
        except (OSError, SyntaxError, ValueError) as exc:  # PIL's kinds for a damaged file
            raise ValueError(f"{path}: cannot be decoded as an image ({exc})") from None

    def _pixels(self, path: Path) -> np.ndarray:
        from PIL import Image

        p = self.params
        assert isinstance(p, ImageFolderParams)
        with Image.open(path) as img:
            img = img.convert("L" if p.channel_order == "L" else "RGB")
            if p.resize is not None:
                w, h = img.size
                factor = p.resize / min(w, h)
                img = img.resize((max(1, round(w * factor)), max(1, round(h * factor))),
                                 Image.Resampling.BILINEAR)  # fmt: skip
            w, h = img.size
            if min(w, h) < p.crop:  # smaller than the crop: scale up to it
                factor = p.crop / min(w, h)
                img = img.resize((max(p.crop, round(w * factor)), max(p.crop, round(h * factor))),
                                 Image.Resampling.BILINEAR)  # fmt: skip
                w, h = img.size
            left, top = (w - p.crop) // 2, (h - p.crop) // 2
            img = img.crop((left, top, left + p.crop, top + p.crop))
            x = np.asarray(img, dtype=np.float32)
        if x.ndim == 2:
            x = x[:, :, None]
        if p.channel_order == "BGR":
            x = x[:, :, ::-1]
        mean = np.asarray(p.mean, np.float32)
        std = np.asarray(p.std, np.float32)
        if p.channels == 1:  # a grey image takes the first mean/std given
            mean, std = mean[:1], std[:1]
        x = (x * np.float32(p.scale) - mean) / std
        return np.ascontiguousarray(x.transpose(2, 0, 1) if p.layout == "NCHW" else x)

    def load(
        self, split: Split, n: int | None, seed: int = 0
    ) -> tuple[np.ndarray, np.ndarray | None]:
        items = self._split(split)
        if split != "eval":
            items = [items[i] for i in np.random.default_rng(seed).permutation(len(items))]
        if n is not None:
            items = items[:n]
        x = np.stack([self._read_pixels(path) for path, _ in items]).astype(np.float32)
        labels = [label for _, label in items]
        y = None if any(v is None for v in labels) else np.asarray(labels, np.int64)
        return x, y
