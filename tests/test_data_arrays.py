"""dataset_from_arrays: in-memory images split into train and validation only."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from deepens.data import dataset_from_arrays
from deepens.errors import DataError


def _numbered(count: int, classes: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Images whose first pixel is their index, and labels cycling over classes."""
    images = np.zeros((count, 4, 5), dtype=np.uint8)
    images[:, 0, 0] = np.arange(count)
    return images, np.arange(count) % classes


def _ids(images: torch.Tensor) -> list[int]:
    return images[:, 0, 0, 0].tolist()


def test_every_image_goes_to_train_or_validation_and_none_to_test():
    images, labels = _numbered(60)

    dataset = dataset_from_arrays(images, labels, validation_fraction=0.2, seed=1)

    train, validation = _ids(dataset.train_images), _ids(dataset.validation_images)
    assert sorted(train + validation) == list(range(60))
    assert len(validation) == 12
    assert dataset.test_images.shape == (0, 1, 4, 5)
    assert dataset.test_labels.shape == (0,)
    assert dataset.test_labels.dtype == torch.int64


def test_labels_follow_their_images_and_every_class_is_in_both_splits():
    images, labels = _numbered(30)

    dataset = dataset_from_arrays(images, labels, seed=0)

    for split in ("train", "validation"):
        ids = _ids(getattr(dataset, f"{split}_images"))
        split_labels = getattr(dataset, f"{split}_labels").tolist()
        assert split_labels == [labels[i] for i in ids]
        assert set(split_labels) == {0, 1, 2}


def test_the_split_depends_only_on_the_seed():
    images, labels = _numbered(40)

    first = dataset_from_arrays(images, labels, seed=3)
    again = dataset_from_arrays(images, labels, seed=3)
    other = dataset_from_arrays(images, labels, seed=4)

    assert _ids(first.validation_images) == _ids(again.validation_images)
    assert _ids(first.validation_images) != _ids(other.validation_images)


def test_layouts_and_pixel_ranges_are_read_like_npz_files():
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(9, 6, 7, 3), dtype=np.uint8)
    labels = np.arange(9) % 3

    variants = [
        pixels,
        pixels.transpose(0, 3, 1, 2),
        pixels / 255,
        pixels.astype(np.float32),
    ]
    datasets = [dataset_from_arrays(v, labels, seed=0) for v in variants]

    for dataset in datasets:
        assert dataset.channels == 3 and dataset.image_size == (6, 7)
        assert torch.equal(dataset.train_images, datasets[0].train_images)


def test_class_names_are_kept_in_label_order():
    images, labels = _numbered(12)

    dataset = dataset_from_arrays(images, labels, class_names=["a", "b", "c"])

    assert dataset.class_names == ["a", "b", "c"]
    assert dataset.name == "arrays"


def test_string_labels_name_the_classes_in_sorted_order():
    images, labels = _numbered(12)
    names = np.array(["b", "c", "a"])[labels]

    dataset = dataset_from_arrays(images, names)

    assert dataset.class_names == ["a", "b", "c"]
    ids = np.array(_ids(dataset.train_images))
    assert dataset.train_labels.tolist() == [[1, 2, 0][i % 3] for i in ids]


def test_labels_that_skip_values_say_to_renumber_them():
    images, _ = _numbered(12)

    with pytest.raises(DataError, match=r"^y skips the labels 1 .*renumber"):
        dataset_from_arrays(images, np.array([0, 2] * 6))


def test_two_images_per_class_suffice_and_no_test_warning_is_logged(caplog):
    images, labels = _numbered(6)

    with caplog.at_level(logging.WARNING, logger="deepens.data"):
        dataset = dataset_from_arrays(images, labels, validation_fraction=0.5)

    assert len(dataset.train_labels) == len(dataset.validation_labels) == 3
    assert not caplog.records


@pytest.mark.parametrize(
    ("x", "y", "options", "message"),
    [
        (np.zeros(6), np.arange(6) % 2, {}, r"x has shape \(6,\)"),
        (np.zeros((6, 4, 4)), np.arange(5) % 2, {}, "5 labels but x holds 6 images"),
        (np.zeros((6, 4, 4)), np.zeros(6, dtype=int), {}, "only one class"),
        (np.zeros((5, 4, 4)), np.array([0, 0, 1, 1, 2]), {}, "class '2' has 1 image"),
        (np.zeros((6, 4, 4)), np.arange(6) % 2 * 0.5, {}, "integer class labels"),
        (
            np.zeros((6, 4, 4)),
            np.array(["a", "b"] * 3),
            {"class_names": ["a", "b"]},
            "y holds strings, which name the classes, and class_names names them",
        ),
        (np.full((6, 4, 4), 300.0), np.arange(6) % 2, {}, "floats from 300 to 300"),
        (
            np.zeros((6, 4, 4)),
            np.arange(6) % 2,
            {"validation_fraction": 0},
            "validation_fraction must be a number strictly between 0 and 1",
        ),
        (np.zeros((6, 4, 4)), np.arange(6) % 2, {"seed": -1}, "seed must be"),
        (
            np.zeros((6, 4, 4)),
            np.arange(6) % 3,
            {"class_names": ["a", "a", "b"]},
            "repeats class names",
        ),
    ],
)
def test_bad_arrays_and_parameters_are_named(x, y, options, message):
    with pytest.raises(DataError, match=message):
        dataset_from_arrays(x, y, **options)
