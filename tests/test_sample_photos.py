"""The real-photo dataset's groups: which evaluation crops come from one photo, which is what
the accuracy intervals count as one draw (qbench.measure.fidelity)."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from qbench.datasets.sample_photos import CROPS_PER_SIZE, PHOTO_COUNT, SamplePhotos

# scikit-image's and scikit-learn's photos, and foolbox's 20 ImageNet ones (installed by setup)
ALL_PHOTOS = PHOTO_COUNT + 20


def test_eval_groups_are_the_photos_the_crops_come_from() -> None:
    dataset = SamplePhotos()
    per = CROPS_PER_SIZE * 2  # two sizes by default: 256 and 320
    groups = dataset.groups("eval", None)
    assert len(groups) == ALL_PHOTOS * per == 740
    assert np.bincount(groups).tolist() == [per] * ALL_PHOTOS
    # served interleaved: the first ALL_PHOTOS inputs are one crop of each photo, the next
    # ALL_PHOTOS their mirror images
    x, _ = dataset.load("eval", 2 * ALL_PHOTOS)
    first = dataset.groups("eval", 2 * ALL_PHOTOS)
    np.testing.assert_array_equal(first, groups[: 2 * ALL_PHOTOS])
    for p in range(ALL_PHOTOS):
        assert first[p] == first[ALL_PHOTOS + p] == p
        np.testing.assert_array_equal(x[ALL_PHOTOS + p], x[p][:, :, ::-1])
    # crops of different photos differ
    assert not np.allclose(x[0], x[1])


def test_each_size_adds_ten_crops_per_photo() -> None:
    one = SamplePhotos(SamplePhotos.Params(sizes=[256]))
    x_one, _ = one.load("eval", None)
    assert len(x_one) == ALL_PHOTOS * CROPS_PER_SIZE
    x_two, _ = SamplePhotos().load("eval", None)
    groups = SamplePhotos().groups("eval", None)
    # the 256 centre crop of photo 0 is in both; the 320 ones are other pixels of the photo
    np.testing.assert_array_equal(x_two[0], x_one[0])
    photo0 = x_two[groups == 0]
    assert len(photo0) == 2 * CROPS_PER_SIZE
    assert not any(np.allclose(photo0[10], c) for c in photo0[:10])
    with pytest.raises(ValidationError):
        SamplePhotos.Params(sizes=[200])  # smaller than the 224 crop
    # calibration crops come from the 17 non-ImageNet photos only (imagenet_samples
    # calibrates on them and must never see a photo it evaluates)
    assert set(SamplePhotos().groups("calib", 64).tolist()) == set(range(PHOTO_COUNT))


def test_agent_inputs_carry_the_groups() -> None:
    from qbench.agent import _inputs
    from qbench.datasets.digits import Digits
    from qbench.inputs import load_npz

    path, _ = _inputs(SamplePhotos(), "eval", 20, 0)
    inputs, extra = load_npz(path)
    assert inputs["input"].shape[0] == 20 and "y" not in extra
    np.testing.assert_array_equal(extra["g"], SamplePhotos().groups("eval", 20))
    digits, _ = _inputs(Digits(), "eval", 30, 0)
    assert "g" not in load_npz(digits)[1]  # independent draws: no groups stored


# --- imagenet_samples: labelled ImageNet validation photos (foolbox's wheel) -------------------


def test_imagenet_samples_are_labelled_crops_of_twenty_photos() -> None:
    from qbench.datasets.imagenet_samples import PHOTO_COUNT, ImagenetSamples, photo_files

    per_photo = 2 * CROPS_PER_SIZE
    dataset = ImagenetSamples()
    files = photo_files()
    assert len(files) == PHOTO_COUNT == 20
    # the label is the class index in foolbox's file name: imagenet_<i>_<label>.jpg
    assert all(path.name.endswith(f"_{label}.jpg") for path, label in files)
    assert all(0 <= label < 1000 for _, label in files)
    x, y = dataset.load("eval", None)
    groups = dataset.groups("eval", None)
    assert x.shape == (PHOTO_COUNT * per_photo, 3, 224, 224) and x.dtype == np.float32
    assert y is not None and len(y) == len(x) == len(groups)
    assert np.bincount(groups).tolist() == [per_photo] * PHOTO_COUNT
    labels = [label for _, label in files]
    np.testing.assert_array_equal(y, [labels[g] for g in groups])  # a crop has its photo's class
    # served interleaved: the first 20 are one crop of each photo, the next 20 their mirrors
    np.testing.assert_array_equal(groups[:PHOTO_COUNT], np.arange(PHOTO_COUNT))
    np.testing.assert_array_equal(x[PHOTO_COUNT], x[0][:, :, ::-1])
    small_x, small_y = dataset.load("eval", 7)
    np.testing.assert_array_equal(small_x, x[:7])
    np.testing.assert_array_equal(small_y, y[:7])


def test_imagenet_samples_calibrate_on_other_photos() -> None:
    from qbench.datasets.imagenet_samples import ImagenetSamples

    dataset = ImagenetSamples()
    calib, labels = dataset.load("calib", 12, seed=3)
    same, _ = SamplePhotos().load("calib", 12, seed=3)
    np.testing.assert_array_equal(calib, same)  # sample_photos' crops: no evaluated pixel
    assert labels is None and not dataset.has_train_labels()
    np.testing.assert_array_equal(
        dataset.groups("calib", 12, 3), SamplePhotos().groups("calib", 12, 3)
    )


def test_imagenet_weights_choose_the_labelled_photos() -> None:
    from qbench.plugins import load_all

    fam = load_all()
    mobilenet, resnet = fam.models.get("mobilenet_v2")(), fam.models.get("resnet18")()
    expected = "imagenet_samples" if mobilenet._pretrained_path() else "sample_photos"
    assert mobilenet.dataset_for(mobilenet.Params()) == expected
    # random-init ResNet-18's classes are not ImageNet's: compared with fp32 on unlabelled photos
    assert resnet.dataset_for(resnet.Params()) == "sample_photos"


def test_imagenet_samples_missing_package_says_how_to_install(monkeypatch) -> None:
    import importlib.util

    import pytest

    from qbench.datasets import imagenet_samples

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "foolbox" else real(name, *a))  # fmt: skip
    with pytest.raises(RuntimeError, match="pip install --no-deps foolbox"):
        imagenet_samples.photo_files()
