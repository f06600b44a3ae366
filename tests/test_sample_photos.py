"""The real-photo dataset's groups: which evaluation crops come from one photo, which is what
the accuracy intervals count as one draw (qbench.measure.fidelity)."""

from __future__ import annotations

import numpy as np

from qbench.datasets.sample_photos import CROPS_PER_PHOTO, PHOTO_COUNT, SamplePhotos


def test_eval_groups_are_the_photos_the_crops_come_from() -> None:
    dataset = SamplePhotos()
    groups = dataset.groups("eval", None)
    assert len(groups) == PHOTO_COUNT * CROPS_PER_PHOTO == 170
    assert np.bincount(groups).tolist() == [CROPS_PER_PHOTO] * PHOTO_COUNT
    # served interleaved: the first PHOTO_COUNT inputs are one crop of each photo, the next
    # PHOTO_COUNT their mirror images
    x, _ = dataset.load("eval", 2 * PHOTO_COUNT)
    first = dataset.groups("eval", 2 * PHOTO_COUNT)
    np.testing.assert_array_equal(first, groups[: 2 * PHOTO_COUNT])
    for p in range(PHOTO_COUNT):
        assert first[p] == first[PHOTO_COUNT + p] == p
        np.testing.assert_array_equal(x[PHOTO_COUNT + p], x[p][:, :, ::-1])
    # crops of different photos differ
    assert not np.allclose(x[0], x[1])


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

    dataset = ImagenetSamples()
    files = photo_files()
    assert len(files) == PHOTO_COUNT == 20
    # the label is the class index in foolbox's file name: imagenet_<i>_<label>.jpg
    assert all(path.name.endswith(f"_{label}.jpg") for path, label in files)
    assert all(0 <= label < 1000 for _, label in files)
    x, y = dataset.load("eval", None)
    groups = dataset.groups("eval", None)
    assert x.shape == (PHOTO_COUNT * CROPS_PER_PHOTO, 3, 224, 224) and x.dtype == np.float32
    assert y is not None and len(y) == len(x) == len(groups)
    assert np.bincount(groups).tolist() == [CROPS_PER_PHOTO] * PHOTO_COUNT
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
