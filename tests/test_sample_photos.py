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

    path, _ = _inputs("sample_photos", "eval", 20, 0)
    data = np.load(path)
    assert data["x"].shape[0] == 20 and "y" not in data
    np.testing.assert_array_equal(data["g"], SamplePhotos().groups("eval", 20))
    digits, _ = _inputs("digits", "eval", 30, 0)
    assert "g" not in np.load(digits)  # independent draws: no groups stored
