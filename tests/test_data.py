"""Tests of deepens.data: every source kind, the splits and the error messages."""

from __future__ import annotations

import gzip
import io
import logging
import re
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from deepens import data
from deepens.data import ImageDataset, load_dataset, load_prediction_inputs
from deepens.errors import DataError

FASHION = Path("/usr/share/datasets/fashion-mnist")


def _save(
    path: Path, mode: str = "L", size: tuple[int, int] = (6, 6), color=0, **options
) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color).save(path, **options)
    return path


def _gray_class(folder: Path, count: int, size: tuple[int, int] = (6, 6)) -> None:
    for index in range(count):
        _save(folder / f"{index:02d}.png", "L", size, color=10 * index)


def _two_gray_classes(root: Path, count: int = 4) -> Path:
    _gray_class(root / "cat", count)
    _gray_class(root / "dog", count)
    return root


def _truncated_jpeg(path: Path) -> Path:
    noise = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noise).save(buffer, "JPEG")
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    return path


def _idx_bytes(array: np.ndarray, code: int = 0x08) -> bytes:
    header = bytes([0, 0, code, array.ndim]) + struct.pack(
        f">{array.ndim}I", *array.shape
    )
    return header + array.tobytes()


def _write_idx(path: Path, array: np.ndarray) -> Path:
    raw = _idx_bytes(array)
    path.write_bytes(gzip.compress(raw) if path.suffix == ".gz" else raw)
    return path


def _idx_arrays(count: int, classes: int = 3, seed: int = 0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (count, 5, 4), dtype=np.uint8)
    labels = (np.arange(count) % classes).astype(np.uint8)
    return images, labels


def _idx_folder(root: Path, *, test: bool = True, gz: bool = True) -> Path:
    suffix = ".gz" if gz else ""
    root.mkdir(exist_ok=True)
    images, labels = _idx_arrays(30)
    _write_idx(root / f"train-images-idx3-ubyte{suffix}", images)
    _write_idx(root / f"train-labels-idx1-ubyte{suffix}", labels)
    if test:
        test_images, test_labels = _idx_arrays(9, seed=1)
        _write_idx(root / "t10k-images-idx3-ubyte", test_images)
        _write_idx(root / "t10k-labels-idx1-ubyte", test_labels)
    return root


def _numbered_images(count: int) -> np.ndarray:
    """Images whose first two pixels spell their index, so splits can be traced."""
    images = np.zeros((count, 4, 4), dtype=np.uint8)
    images[:, 0, 0] = np.arange(count) % 256
    images[:, 0, 1] = np.arange(count) // 256
    return images


def _ids(images: torch.Tensor) -> set[int]:
    pixels = images[:, 0, 0, :2].to(torch.int64)
    return set((pixels[:, 0] + 256 * pixels[:, 1]).tolist())


def _assert_every_class_everywhere(dataset: ImageDataset) -> None:
    for labels in (
        dataset.train_labels,
        dataset.validation_labels,
        dataset.test_labels,
    ):
        assert set(labels.tolist()) == set(range(dataset.num_classes))


def _warned_about(caplog: pytest.LogCaptureFixture, path: Path) -> bool:
    return any(
        record.levelno == logging.WARNING and str(path) in record.getMessage()
        for record in caplog.records
    )


def test_digits_is_the_default_and_scaled_to_uint8():
    dataset = load_dataset()

    assert dataset.name == "digits"
    assert dataset.class_names == [str(digit) for digit in range(10)]
    assert dataset.channels == 1 and dataset.image_size == (8, 8)
    assert dataset.train_images.dtype == torch.uint8
    assert dataset.train_labels.dtype == torch.int64
    assert dataset.train_images.is_contiguous()
    sizes = (
        len(dataset.train_labels),
        len(dataset.validation_labels),
        len(dataset.test_labels),
    )
    assert sizes == (1168, 270, 359)
    assert int(dataset.train_images.max()) == 255
    _assert_every_class_everywhere(dataset)


def test_digits_shortcut_matches_default():
    assert torch.equal(load_dataset("digits").test_images, load_dataset().test_images)


def test_same_seed_gives_same_split_and_other_seed_differs():
    first = load_dataset(seed=3)
    again = load_dataset(seed=3)
    other = load_dataset(seed=4)

    assert torch.equal(first.train_images, again.train_images)
    assert torch.equal(first.test_labels, again.test_labels)
    assert not torch.equal(first.train_images, other.train_images)


def test_image_size_resizes_digits():
    dataset = load_dataset(image_size=16, max_train_samples=40)

    assert dataset.image_size == (16, 16)
    assert dataset.train_images.shape == (40, 1, 16, 16)
    assert dataset.train_images.is_contiguous()


def test_caps_subsample_each_split_keeping_every_class():
    dataset = load_dataset(
        max_train_samples=50, max_validation_samples=20, max_test_samples=30
    )

    assert len(dataset.train_labels) == 50
    assert len(dataset.validation_labels) == 20
    assert len(dataset.test_labels) == 30
    _assert_every_class_everywhere(dataset)
    assert torch.bincount(dataset.train_labels).tolist() == [5] * 10


def test_cap_above_split_size_changes_nothing():
    capped = load_dataset(max_test_samples=100_000)

    assert torch.equal(capped.test_images, load_dataset().test_images)


def test_cap_below_class_count_is_refused():
    with pytest.raises(
        DataError,
        match=r"max_validation_samples must be at least "
        r"the number of classes \(10\).*got 5",
    ):
        load_dataset(max_validation_samples=5)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"validation_fraction": 0},
            r"validation_fraction must be a number "
            r"strictly between 0 and 1, got 0",
        ),
        ({"test_fraction": 1.0}, r"test_fraction .* got 1\.0"),
        ({"test_fraction": -0.1}, r"test_fraction .* got -0\.1"),
        ({"test_fraction": "0.2"}, r"test_fraction .* got '0\.2'"),
        ({"validation_fraction": True}, r"validation_fraction .* got True"),
        ({"validation_fraction": float("nan")}, r"validation_fraction .* got nan"),
        (
            {"validation_fraction": 0.5, "test_fraction": 0.5},
            r"validation_fraction \+ test_fraction must be below 1",
        ),
        (
            {"max_train_samples": 0},
            r"max_train_samples must be a positive "
            r"integer or None, got 0",
        ),
        ({"max_test_samples": 2.5}, r"max_test_samples .* got 2\.5"),
        ({"max_validation_samples": True}, r"max_validation_samples .* got True"),
        (
            {"image_size": -4},
            r"image_size must be a positive integer or None, "
            r"got -4",
        ),
        ({"seed": -1}, r"seed must be a non-negative integer, got -1"),
        ({"seed": 1.5}, r"seed must be a non-negative integer, got 1\.5"),
    ],
)
def test_invalid_parameters_are_named(options, message):
    with pytest.raises(DataError, match=message):
        load_dataset(**options)


def test_missing_path_lists_accepted_kinds(tmp_path):
    missing = tmp_path / "nowhere"

    with pytest.raises(
        DataError,
        match=re.escape(f"{missing} does not exist")
        + ".*accepted: 'digits', 'fashion-mnist'",
    ):
        load_dataset(missing)


def test_unknown_file_kind_lists_accepted_kinds(tmp_path):
    table = tmp_path / "table.csv"
    table.write_text("x,y\n")

    with pytest.raises(
        DataError,
        match=re.escape(str(table))
        + " is not a data set .*an .npz file with arrays x and y",
    ):
        load_dataset(table)


def test_path_named_like_a_shortcut_is_a_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    with pytest.raises(DataError, match="digits does not exist"):
        load_dataset(Path("digits"))


def _npz(path: Path, **arrays) -> Path:
    np.savez(path, **arrays)
    return path


def test_npz_splits_are_disjoint_complete_and_stratified(tmp_path):
    labels = np.arange(300) % 3
    source = _npz(tmp_path / "set.npz", x=_numbered_images(300), y=labels)

    dataset = load_dataset(source, validation_fraction=0.2, test_fraction=0.3)

    train, validation, test = (
        _ids(dataset.train_images),
        _ids(dataset.validation_images),
        _ids(dataset.test_images),
    )
    assert not train & validation and not train & test and not validation & test
    assert train | validation | test == set(range(300))
    assert (len(train), len(validation), len(test)) == (150, 60, 90)
    assert torch.bincount(dataset.test_labels).tolist() == [30, 30, 30]
    assert dataset.name == "set" and dataset.class_names == ["0", "1", "2"]


def test_npz_labels_follow_their_images(tmp_path):
    labels = np.arange(60) % 4
    source = _npz(tmp_path / "set.npz", x=_numbered_images(60), y=labels)

    dataset = load_dataset(source)

    ids = dataset.train_images[:, 0, 0, 0].to(torch.int64)
    assert torch.equal(dataset.train_labels, ids % 4)


def test_npz_keeps_its_own_test_split_in_order(tmp_path):
    x_test = _numbered_images(12)[::-1].copy()
    source = _npz(
        tmp_path / "set.npz",
        x=_numbered_images(40),
        y=np.arange(40) % 2,
        x_test=x_test,
        y_test=np.arange(12) % 2,
        class_names=np.array(["even", "odd"]),
    )

    dataset = load_dataset(source, validation_fraction=0.25, test_fraction=0.5)

    assert torch.equal(dataset.test_images[:, 0], torch.from_numpy(x_test))
    assert dataset.test_labels.tolist() == [0, 1] * 6
    assert len(dataset.train_labels) == 30 and len(dataset.validation_labels) == 10
    assert dataset.class_names == ["even", "odd"]


def test_splits_are_not_grouped_by_class(tmp_path):
    labels = np.repeat(np.arange(3), 40)
    source = _npz(tmp_path / "set.npz", x=_numbered_images(120), y=labels)

    dataset = load_dataset(source)

    for split_labels in (dataset.train_labels, dataset.test_labels):
        assert not torch.equal(split_labels, split_labels.sort().values)


def test_own_test_split_missing_a_class_is_kept_with_a_warning(tmp_path, caplog):
    source = _npz(
        tmp_path / "set.npz",
        x=_numbered_images(30),
        y=np.arange(30) % 3,
        x_test=_numbered_images(4),
        y_test=np.array([0, 1, 0, 1]),
        class_names=np.array(["a", "b", "c"]),
    )

    with caplog.at_level(logging.WARNING, logger="deepens.data"):
        dataset = load_dataset(source)

    assert dataset.test_labels.tolist() == [0, 1, 0, 1]
    assert "no images of classes ['c']" in caplog.text


def test_own_test_split_is_capped_stratified_and_in_order(tmp_path):
    source = _npz(
        tmp_path / "set.npz",
        x=_numbered_images(40),
        y=np.arange(40) % 2,
        x_test=_numbered_images(20),
        y_test=np.arange(20) % 2,
    )

    dataset = load_dataset(source, max_test_samples=6)

    ids = dataset.test_images[:, 0, 0, 0].tolist()
    assert len(ids) == 6 and ids == sorted(ids)
    assert ids != list(range(6))
    assert torch.bincount(dataset.test_labels).tolist() == [3, 3]


@pytest.mark.parametrize(
    ("x", "channels", "expected_max"),
    [
        (np.full((9, 5, 4, 3), 1.0), 3, 255),
        (np.full((9, 3, 5, 4), 128, dtype=np.uint8), 3, 128),
        (np.full((9, 5, 4), 200, dtype=np.int64), 1, 200),
        (np.full((9, 5, 4, 1), 254.6, dtype=np.float32), 1, 255),
    ],
    ids=["nhwc-float01", "nchw-uint8", "nhw-int64", "nhwc-float255"],
)
def test_npz_layouts_and_dtypes(tmp_path, x, channels, expected_max):
    source = _npz(tmp_path / "set.npz", x=x, y=np.arange(9) % 3)

    dataset = load_dataset(source)

    assert dataset.channels == channels and dataset.image_size == (5, 4)
    assert dataset.train_images.dtype == torch.uint8
    assert int(dataset.train_images.max()) == expected_max


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"x": np.zeros((6, 4, 4))}, r"has no array 'y' \(found: x\)"),
        (
            {"x": np.zeros((6, 4, 4)), "y": np.zeros(5, int)},
            r"array 'y' in .* holds 5 labels but 'x' holds 6 images",
        ),
        (
            {"x": np.zeros((6, 4, 4)), "y": np.zeros((6, 1), int)},
            r"array 'y' .* has shape \(6, 1\); expected one label per image",
        ),
        (
            {"x": np.zeros((6, 4, 4)), "y": np.zeros(6)},
            r"array 'y' .* has dtype float64; expected integer class labels .*"
            r"\.astype\(int\)",
        ),
        (
            {"x": np.zeros((6, 4, 4)), "y": np.array([0, 1, 2, 0, 1, -1])},
            r"array 'y' .* holds the negative label -1",
        ),
        (
            {"x": np.zeros((6, 4)), "y": np.zeros(6, int)},
            r"array 'x' .* has shape \(6, 4\); expected images as \(N, H, W\)",
        ),
        (
            {"x": np.zeros((6, 4, 4, 4)), "y": np.zeros(6, int)},
            r"array 'x' .* with C 1 or 3",
        ),
        (
            {"x": np.full((6, 4, 4), 300.0), "y": np.zeros(6, int)},
            r"array 'x' .* holds floats from 300 to 300; expected pixel values",
        ),
        (
            {"x": np.full((6, 4, 4), np.nan), "y": np.zeros(6, int)},
            r"array 'x' .* holds NaN",
        ),
        (
            {"x": np.full((6, 4, 4), -1), "y": np.zeros(6, int)},
            r"array 'x' .* holds integers from -1 to -1; expected pixel values",
        ),
        (
            {"x": np.zeros((0, 4, 4)), "y": np.zeros(0, int)},
            r"array 'x' .* holds no images",
        ),
        (
            {
                "x": np.zeros((6, 4, 4)),
                "y": np.arange(6) % 3,
                "class_names": np.array(["a", "b"]),
            },
            r"the labels go up to 2 but array 'class_names' .* names only 2 classes",
        ),
        (
            {
                "x": np.zeros((6, 4, 4)),
                "y": np.arange(6) % 2,
                "class_names": np.array(["a", "a"]),
            },
            r"repeats class names \['a'\]",
        ),
        (
            {
                "x": np.zeros((6, 4, 4)),
                "y": np.arange(6) % 2,
                "x_test": np.zeros((2, 4, 4)),
            },
            r"has no array 'y_test' .*; a test split needs both x_test and y_test",
        ),
        (
            {
                "x": np.zeros((6, 4, 4)),
                "y": np.arange(6) % 2,
                "x_test": np.zeros((2, 5, 5)),
                "y_test": np.arange(2),
            },
            r"array 'x_test' .* has images of shape \(1, 5, 5\) .* but array 'x' "
            r"has \(1, 4, 4\)",
        ),
    ],
)
def test_npz_problems_name_the_array(tmp_path, arrays, message):
    source = _npz(tmp_path / "bad.npz", **arrays)

    with pytest.raises(DataError, match=message):
        load_dataset(source)


@pytest.mark.parametrize(
    "content", [b"not numpy", b"", b"\x80\x04K\x01."], ids=["text", "empty", "pickle"]
)
def test_npz_that_is_not_an_archive_is_named_without_pickle_advice(tmp_path, content):
    source = tmp_path / "fake.npz"
    source.write_bytes(content)

    with pytest.raises(DataError) as raised:
        load_dataset(source)

    message = str(raised.value)
    assert re.search(r"fake\.npz is not a valid \.npz archive", message)
    assert "expected a zip archive of arrays x (images) and y (labels)" in message
    assert "pickle" not in message


def test_prediction_npz_that_is_not_an_archive_expects_x(tmp_path):
    source = tmp_path / "x.npz"
    source.write_text("a,b\n1,2\n")

    with pytest.raises(
        DataError,
        match=r"x\.npz is not a valid \.npz archive.*expected a zip archive with "
        r"an array x",
    ):
        load_prediction_inputs(source, channels=1, image_size=(4, 4))


def test_npz_holding_one_npy_array_says_it_is_not_an_archive(tmp_path):
    source = tmp_path / "one.npz"
    with source.open("wb") as stream:
        np.save(stream, np.zeros((3, 4, 4)))

    with pytest.raises(DataError, match="holds a single array, not an .npz archive"):
        load_dataset(source)


def test_npz_object_array_is_refused_without_pickle_advice(tmp_path):
    source = _npz(
        tmp_path / "set.npz",
        x=np.zeros((6, 4, 4)),
        y=np.array([0, "a", 1, 0, 1, 0], dtype=object),
    )

    with pytest.raises(DataError) as raised:
        load_dataset(source)

    message = str(raised.value)
    assert re.search(r"array 'y' in .*set\.npz holds Python objects", message)
    assert "allow_pickle" not in message


def test_too_few_images_in_a_class_names_class_count_and_minimum(tmp_path):
    labels = np.array([0] * 10 + [1] * 10 + [2] * 2)
    source = _npz(
        tmp_path / "set.npz",
        x=_numbered_images(22),
        y=labels,
        class_names=np.array(["a", "b", "rare"]),
    )

    with pytest.raises(
        DataError,
        match=r"class 'rare' has 2 images; each class "
        r"needs at least 3 images",
    ):
        load_dataset(source)


def test_npz_labels_that_skip_values_say_to_renumber_them(tmp_path):
    labels = np.array([0, 5, 9] * 4)
    source = _npz(tmp_path / "set.npz", x=_numbered_images(12), y=labels)

    with pytest.raises(
        DataError,
        match=r"array 'y' in .*set\.npz skips the labels 1, 2, 3, 4, 6, 7, 8 "
        r"\(no image has them\).*renumber the labels 0\.\.K-1.*class_names",
    ):
        load_dataset(source)


def test_skipped_labels_are_listed_with_their_class_names(tmp_path):
    source = _npz(
        tmp_path / "set.npz",
        x=_numbered_images(12),
        y=np.array([0, 2] * 6),
        class_names=np.array(["a", "b", "c", "d"]),
    )

    with pytest.raises(DataError, match=r"skips the labels 1 \('b'\), 3 \('d'\)"):
        load_dataset(source)


def test_idx_labels_that_skip_values_name_the_labels_file(tmp_path):
    root = tmp_path / "idx"
    root.mkdir()
    images, _ = _idx_arrays(12)
    _write_idx(root / "train-images-idx3-ubyte", images)
    _write_idx(root / "train-labels-idx1-ubyte", np.array([0, 2] * 6, np.uint8))

    with pytest.raises(
        DataError, match=r"train-labels-idx1-ubyte skips the labels 1 .*renumber"
    ):
        load_dataset(root)


def test_npz_string_labels_name_the_classes_in_sorted_order(tmp_path):
    names = np.array(["dog", "cat", "emu"])
    source = _npz(
        tmp_path / "set.npz",
        x=_numbered_images(30),
        y=names[np.arange(30) % 3],
        x_test=_numbered_images(4),
        y_test=np.array(["emu", "cat", "dog", "cat"]),
    )

    dataset = load_dataset(source)

    assert dataset.class_names == ["cat", "dog", "emu"]
    assert dataset.test_labels.tolist() == [2, 0, 1, 0]
    ids = dataset.train_images[:, 0, 0, 0].to(torch.int64)
    assert torch.equal(dataset.train_labels, torch.tensor([1, 0, 2])[ids % 3])


def test_npz_bytes_and_bool_labels_name_the_classes(tmp_path):
    as_bytes = _npz(
        tmp_path / "bytes.npz",
        x=_numbered_images(9),
        y=np.array([b"b", b"a", b"c"] * 3),
    )
    as_bool = _npz(
        tmp_path / "bool.npz", x=_numbered_images(8), y=np.arange(8) % 2 == 1
    )

    assert load_dataset(as_bytes).class_names == ["a", "b", "c"]
    assert load_dataset(as_bool).class_names == ["False", "True"]


def test_npz_bool_labels_index_class_names(tmp_path):
    source = _npz(
        tmp_path / "set.npz",
        x=_numbered_images(8),
        y=np.arange(8) % 2 == 1,
        class_names=np.array(["healthy", "sick"]),
    )

    dataset = load_dataset(source)

    assert dataset.class_names == ["healthy", "sick"]
    ids = dataset.train_images[:, 0, 0, 0].to(torch.int64)
    assert torch.equal(dataset.train_labels, ids % 2)


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        (
            {"y": np.array(["a", "b"] * 3), "class_names": np.array(["a", "b"])},
            r"array 'y' in .* holds strings, which name the classes, and array "
            r"'class_names' names them too; remove class_names",
        ),
        (
            {
                "y": np.array(["a", "b"] * 3),
                "x_test": np.zeros((2, 4, 4)),
                "y_test": np.array(["a", "z"]),
            },
            r"array 'y_test' in .* holds labels that array 'y' does not: \['z'\]",
        ),
        (
            {
                "y": np.array(["a", "b"] * 3),
                "x_test": np.zeros((2, 4, 4)),
                "y_test": np.array([0, 1]),
            },
            r"array 'y_test' in .* has dtype int64 but array 'y' holds strings",
        ),
        (
            {"y": np.array([["a"], ["b"]] * 3)},
            r"array 'y' .* has shape \(6, 1\); expected one label per image",
        ),
        (
            {"y": np.arange(6) % 2 + 0j},
            r"array 'y' .* has dtype complex128; expected integer class labels, "
            r"strings or booleans$",
        ),
    ],
    ids=["with-class-names", "unknown-test-label", "mixed-kinds", "2d", "complex"],
)
def test_npz_named_label_problems(tmp_path, arrays, message):
    source = _npz(tmp_path / "set.npz", x=np.zeros((6, 4, 4)), **arrays)

    with pytest.raises(DataError, match=message):
        load_dataset(source)


def test_one_class_is_not_a_classification_problem(tmp_path):
    source = _npz(tmp_path / "set.npz", x=_numbered_images(9), y=np.zeros(9, int))

    with pytest.raises(DataError, match="has only one class .*at least two"):
        load_dataset(source)


def test_smallest_classes_get_one_image_in_every_split(tmp_path):
    labels = np.array([0] * 50 + [1] * 3 + [2] * 3)
    source = _npz(tmp_path / "set.npz", x=_numbered_images(56), y=labels)

    dataset = load_dataset(source)

    _assert_every_class_everywhere(dataset)
    assert torch.bincount(dataset.train_labels).tolist()[1:] == [1, 1]


@pytest.mark.parametrize("gz", [True, False], ids=["gzip", "plain"])
def test_idx_folder_keeps_its_test_split(tmp_path, gz):
    folder = _idx_folder(tmp_path / "mnistlike", gz=gz)
    test_images, test_labels = _idx_arrays(9, seed=1)

    dataset = load_dataset(folder, validation_fraction=0.2)

    assert dataset.name == "mnistlike"
    assert dataset.class_names == ["0", "1", "2"]
    assert dataset.image_size == (5, 4) and dataset.channels == 1
    assert torch.equal(dataset.test_images[:, 0], torch.from_numpy(test_images))
    assert dataset.test_labels.tolist() == test_labels.tolist()
    assert (len(dataset.train_labels), len(dataset.validation_labels)) == (24, 6)
    _assert_every_class_everywhere(dataset)


def test_idx_folder_without_test_files_is_split_three_ways(tmp_path):
    folder = _idx_folder(tmp_path, test=False)

    dataset = load_dataset(folder, validation_fraction=0.2, test_fraction=0.2)

    sizes = [
        len(dataset.train_labels),
        len(dataset.validation_labels),
        len(dataset.test_labels),
    ]
    assert sizes == [18, 6, 6]
    _assert_every_class_everywhere(dataset)


def test_classes_txt_names_idx_classes(tmp_path):
    folder = _idx_folder(tmp_path)
    (folder / "classes.txt").write_text("circle\nsquare\n\ntriangle\n")

    assert load_dataset(folder).class_names == ["circle", "square", "triangle"]


def test_classes_txt_with_too_few_names(tmp_path):
    folder = _idx_folder(tmp_path)
    (folder / "classes.txt").write_text("circle\nsquare\n")

    with pytest.raises(
        DataError,
        match=r"labels go up to 2 but .*classes.txt "
        r"names only 2 classes",
    ):
        load_dataset(folder)


def test_truncated_idx_file_is_named(tmp_path):
    folder = _idx_folder(tmp_path, gz=False)
    images = folder / "train-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:-7])

    with pytest.raises(
        DataError,
        match=re.escape(str(images))
        + r" is truncated: its header describes shape \(30, 5, 4\)",
    ):
        load_dataset(folder)


def test_truncated_gzip_idx_file_is_named(tmp_path):
    folder = _idx_folder(tmp_path)
    labels = folder / "train-labels-idx1-ubyte.gz"
    labels.write_bytes(labels.read_bytes()[:-10])

    with pytest.raises(
        DataError,
        match="cannot read " + re.escape(str(labels)) + ".*damaged or truncated",
    ):
        load_dataset(folder)


def test_idx_with_trailing_bytes_is_corrupt(tmp_path):
    folder = _idx_folder(tmp_path, gz=False)
    labels = folder / "train-labels-idx1-ubyte"
    labels.write_bytes(labels.read_bytes() + b"\0")

    with pytest.raises(DataError, match=re.escape(str(labels)) + " is corrupt"):
        load_dataset(folder)


def test_idx_bad_magic_number(tmp_path):
    folder = _idx_folder(tmp_path, gz=False)
    images = folder / "train-images-idx3-ubyte"
    images.write_bytes(b"\x12\x34" + images.read_bytes()[2:])

    with pytest.raises(
        DataError,
        match=re.escape(str(images))
        + " is not an IDX file: its magic number '12340803'",
    ):
        load_dataset(folder)


def test_idx_label_count_must_match_image_count(tmp_path):
    folder = _idx_folder(tmp_path)
    _write_idx(folder / "train-labels-idx1-ubyte.gz", np.zeros(29, np.uint8))

    with pytest.raises(
        DataError, match="holds 29 labels but .*train-images.* holds 30 images"
    ):
        load_dataset(folder)


def test_idx_missing_labels_file(tmp_path):
    folder = _idx_folder(tmp_path)
    (folder / "train-labels-idx1-ubyte.gz").unlink()

    with pytest.raises(DataError, match="has no train-labels-idx1-ubyte"):
        load_dataset(folder)


def test_idx_test_images_without_test_labels(tmp_path):
    folder = _idx_folder(tmp_path)
    (folder / "t10k-labels-idx1-ubyte").unlink()

    with pytest.raises(DataError, match="has no t10k-labels-idx1-ubyte"):
        load_dataset(folder)


def test_idx_float_images_are_read_big_endian(tmp_path):
    pixels = np.linspace(0, 1, 6 * 2 * 2).reshape(6, 2, 2)
    (tmp_path / "train-images-idx3-ubyte").write_bytes(
        _idx_bytes(pixels.astype(">f4"), code=0x0D)
    )
    _write_idx(tmp_path / "train-labels-idx1-ubyte", np.arange(6, dtype=np.uint8) % 2)

    dataset = load_dataset(tmp_path, validation_fraction=0.3, test_fraction=0.3)

    everything = torch.cat(
        [dataset.train_images, dataset.validation_images, dataset.test_images]
    )
    assert sorted(everything.flatten().tolist()) == sorted(
        np.rint(pixels * 255).astype(int).flatten().tolist()
    )


def test_fashion_shortcut_explains_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "FASHION_MNIST_DIR", tmp_path / "absent")

    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist"):
        load_dataset("fashion-mnist")


@pytest.mark.skipif(
    not (FASHION / "train-images-idx3-ubyte.gz").is_file(),
    reason=f"Fashion-MNIST is not installed in {FASHION} "
    "(apt-get install dataset-fashion-mnist)",
)
def test_real_fashion_mnist():
    dataset = load_dataset("fashion-mnist")

    assert dataset.class_names[0] == "T-shirt/top"
    assert dataset.class_names[-1] == "Ankle boot"
    assert dataset.train_images.shape[1:] == (1, 28, 28)
    assert dataset.train_images.dtype == torch.uint8
    assert len(dataset.train_labels) + len(dataset.validation_labels) == 60_000
    assert len(dataset.test_labels) == 10_000
    assert len(dataset.validation_labels) == 9_000
    _assert_every_class_everywhere(dataset)


def _messy_folder(root: Path) -> dict[str, Path]:
    _save(root / "bird" / "gray.png", "L", (6, 6), 100)
    _save(root / "bird" / "rgb.jpg", "RGB", (6, 6), (200, 30, 30), quality=95)
    _save(root / "bird" / "nested" / "deeper.png", "L", (6, 6), 50)
    _save(root / "ant" / "rgba.png", "RGBA", (6, 6), (0, 255, 0, 255))
    _save(root / "ant" / "transparent.png", "RGBA", (6, 6), (255, 255, 255, 0))
    _save(root / "ant" / "other-size.png", "RGB", (9, 3), (1, 2, 3))
    palette = Image.new("P", (6, 6), 1)
    palette.putpalette([0, 0, 0, 0, 0, 255])
    palette.save(root / "ant" / "palette.png")
    _save(root / "cow" / "a.png", "1", (6, 6), 1)
    _save(root / "cow" / "b.gif", "L", (6, 6), 30)
    _save(root / "cow" / "c.tif", "CMYK", (6, 6), (0, 0, 0, 0), format="TIFF")
    (root / ".ipynb_checkpoints").mkdir()
    _save(root / ".ipynb_checkpoints" / "x.png")
    (root / ".DS_Store").write_bytes(b"\0\1\2")
    (root / "bird" / ".DS_Store").write_bytes(b"\0\1\2")
    _save(root / "bird" / ".hidden" / "x.png")
    bad = {
        "text": root / "bird" / "notes.jpg",
        "truncated": _truncated_jpeg(root / "cow" / "cut.jpg"),
        "loose": _save(root / "loose.png"),
    }
    bad["text"].write_text("not an image")
    return bad


def test_image_folder_converts_everything_to_one_mode_and_size(tmp_path, caplog):
    bad = _messy_folder(tmp_path / "animals")

    with caplog.at_level(logging.WARNING, logger="deepens.data"):
        dataset = load_dataset(
            tmp_path / "animals", validation_fraction=0.25, test_fraction=0.25
        )

    assert dataset.name == "animals"
    assert dataset.class_names == ["ant", "bird", "cow"]
    assert dataset.channels == 3 and dataset.image_size == (6, 6)
    assert sorted(dataset.skipped_files) == sorted(str(p) for p in bad.values())
    assert all(_warned_about(caplog, path) for path in bad.values())
    _assert_every_class_everywhere(dataset)
    total = sum(
        len(labels)
        for labels in (
            dataset.train_labels,
            dataset.validation_labels,
            dataset.test_labels,
        )
    )
    assert total == 10


def test_grayscale_folder_stays_one_channel(tmp_path):
    root = _two_gray_classes(tmp_path, count=3)
    gray_palette = Image.new("P", (6, 6), 7)
    gray_palette.putpalette([value for gray in range(256) for value in (gray,) * 3])
    gray_palette.save(root / "cat" / "palette.png")
    _save(root / "dog" / "bilevel.png", "1", (6, 6), 1)

    dataset = load_dataset(root)

    assert dataset.channels == 1
    assert dataset.train_images.shape[1:] == (1, 6, 6)
    assert dataset.skipped_files == []


def test_sixteen_bit_images_are_scaled_to_eight_bits(tmp_path):
    for name, value in [("dark", 257 * 20), ("bright", 65535)]:
        for index in range(3):
            pixels = np.full((4, 4), value, dtype=np.uint16)
            _save_array(tmp_path / name / f"{index}.png", pixels)

    dataset = load_dataset(tmp_path)

    assert dataset.channels == 1
    values = {
        int(dataset.train_images[i].max()): int(dataset.train_labels[i])
        for i in range(len(dataset.train_labels))
    }
    assert values == {255: 0, 20: 1}


def _save_array(path: Path, pixels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def test_most_common_size_wins_and_image_size_overrides(tmp_path):
    root = _two_gray_classes(tmp_path, count=3)
    _save(root / "dog" / "wide.png", "L", (12, 4), 255)

    assert load_dataset(root).image_size == (6, 6)
    resized = load_dataset(root, image_size=10)
    assert resized.image_size == (10, 10)
    assert resized.train_images.shape[1:] == (1, 10, 10)


def test_exif_orientation_is_applied(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # shown rotated 90 degrees clockwise
    pixels = np.zeros((4, 6), dtype=np.uint8)
    pixels[:, :3] = 255
    for name in ("a", "b"):
        for index in range(3):
            path = tmp_path / name / f"{index}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(path, exif=exif, quality=100)

    dataset = load_dataset(tmp_path)

    assert dataset.image_size == (6, 4)
    image = dataset.train_images[0, 0].to(torch.int64)
    assert image[0].min() > 200 and image[-1].max() < 50


def test_empty_class_folder_is_named(tmp_path):
    root = _two_gray_classes(tmp_path)
    (root / "eel").mkdir()
    (root / "eel" / ".DS_Store").write_bytes(b"x")

    with pytest.raises(
        DataError, match=re.escape(f"class folder {root / 'eel'} is empty")
    ):
        load_dataset(root)


def test_class_with_only_unreadable_files_is_named(tmp_path):
    root = _two_gray_classes(tmp_path)
    (root / "eel").mkdir()
    (root / "eel" / "a.png").write_text("text")
    _truncated_jpeg(root / "eel" / "b.jpg")

    with pytest.raises(
        DataError,
        match=re.escape(
            f"class folder {root / 'eel'} has no readable images (every file"
        ),
    ):
        load_dataset(root)


def test_class_with_one_image_is_named_with_the_minimum(tmp_path):
    root = _two_gray_classes(tmp_path)
    _gray_class(root / "eel", 1)

    with pytest.raises(
        DataError,
        match=r"class 'eel' has 1 image; each class "
        r"needs at least 3 images, one for each of train, "
        r"validation and test",
    ):
        load_dataset(root)


def test_folder_with_one_class(tmp_path):
    _gray_class(tmp_path / "only", 5)

    with pytest.raises(
        DataError,
        match=r"needs at least two class subfolders "
        r"\(found only 'only'\)",
    ):
        load_dataset(tmp_path)


def test_folder_of_loose_images_has_no_classes(tmp_path):
    _gray_class(tmp_path, 5)

    with pytest.raises(
        DataError,
        match=r"at least two class subfolders "
        r"\(found none\)",
    ):
        load_dataset(tmp_path)


def test_prediction_single_file_composites_alpha_on_black(tmp_path):
    path = tmp_path / "half.png"
    pixels = np.zeros((4, 6, 4), dtype=np.uint8)
    pixels[..., 0] = 255
    pixels[:, :3, 3] = 255
    _save_array(path, pixels)

    images, names = load_prediction_inputs(path, channels=3, image_size=(4, 6))

    assert names == ["half.png"] and images.dtype == torch.uint8
    assert images.shape == (1, 3, 4, 6)
    assert images[0, 0, :, :3].eq(255).all() and images[0, 0, :, 3:].eq(0).all()
    assert images[0, 1:].eq(0).all()


def test_prediction_palette_transparency_is_composited_on_black(tmp_path):
    path = tmp_path / "keyed.png"
    palette = Image.new("P", (4, 4), 0)
    palette.putpalette([255, 255, 255, 0, 0, 255])
    palette.save(path, transparency=0)

    images, _ = load_prediction_inputs(path, channels=3, image_size=(4, 4))

    assert images.eq(0).all()


def test_prediction_converts_channels_and_size(tmp_path):
    path = _save(tmp_path / "red.png", "RGB", (8, 8), (255, 0, 0))

    images, _ = load_prediction_inputs(path, channels=1, image_size=(5, 3))

    # Pillow's luma weights give red 299/1000 of full brightness.
    assert images.shape == (1, 1, 5, 3) and images.eq(76).all()


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def test_prediction_warns_when_it_resizes_and_drops_colour(tmp_path, caplog):
    path = _save(tmp_path / "red.png", "RGB", (8, 6), (255, 0, 0))

    with caplog.at_level(logging.WARNING, logger="deepens.data"):
        load_prediction_inputs(path, channels=1, image_size=(5, 3))

    assert _warnings(caplog) == [
        f"Resizing {path} from 6x8 to 5x3 (height x width), the size the model "
        "was trained on; predictions can be less accurate than on images of that "
        "size",
        f"Converting {path} from colour to grayscale: the model was trained on "
        "grayscale images",
    ]


def test_prediction_folder_warnings_count_the_images_and_list_their_sizes(
    tmp_path, caplog
):
    _save(tmp_path / "a.png", "L", (4, 4))
    _save(tmp_path / "b.png", "L", (6, 6))
    _save(tmp_path / "c" / "d.png", "L", (6, 6))
    _save(tmp_path / "c" / "e.png", "L", (8, 2))

    with caplog.at_level(logging.WARNING, logger="deepens.data"):
        load_prediction_inputs(tmp_path, channels=3, image_size=(4, 4))

    resizing, converting = _warnings(caplog)
    assert resizing.startswith(
        f"Resizing 3 of 4 images in {tmp_path} from 6x6, 2x8 to 4x4 (height x width)"
    )
    assert converting.startswith(
        f"Converting all 4 images in {tmp_path} from grayscale to colour (RGB): "
        "the model was trained on colour images"
    )


def test_prediction_npz_warns_about_size_and_channels(tmp_path, caplog):
    red = np.zeros((3, 5, 5, 3), np.uint8)
    red[..., 0] = 255
    source = _npz(tmp_path / "batch.npz", x=red)

    with caplog.at_level(logging.WARNING, logger="deepens.data"):
        load_prediction_inputs(source, channels=1, image_size=(4, 4))

    assert [message.split(" to ")[0] for message in _warnings(caplog)] == [
        f"Resizing all 3 images in {source} from 5x5",
        f"Converting all 3 images in {source} from colour",
    ]


def test_prediction_inputs_that_match_the_model_are_not_warned_about(tmp_path, caplog):
    folder = tmp_path / "images"
    _save(folder / "a.png", "RGB", (5, 4), (1, 2, 3))
    _save(folder / "b.png", "RGBA", (5, 4), (1, 2, 3, 4))
    source = _npz(tmp_path / "batch.npz", x=np.zeros((2, 4, 5, 3), np.uint8))
    gray_in_rgb = _save(tmp_path / "gray.jpg", "RGB", (5, 4), (7, 7, 7))
    gray_rows = _npz(tmp_path / "gray.npz", x=np.full((2, 4, 5, 3), 7, np.uint8))

    with caplog.at_level(logging.WARNING, logger="deepens.data"):
        load_prediction_inputs(folder / "a.png", channels=3, image_size=(4, 5))
        load_prediction_inputs(folder, channels=3, image_size=(4, 5))
        load_prediction_inputs(source, channels=3, image_size=(4, 5))
        load_prediction_inputs(gray_in_rgb, channels=1, image_size=(4, 5))
        load_prediction_inputs(gray_rows, channels=1, image_size=(4, 5))

    assert _warnings(caplog) == []


def test_prediction_npz_of_small_floats_warns_what_scale_it_assumed(tmp_path, caplog):
    source = _npz(tmp_path / "batch.npz", x=np.full((2, 4, 4), 16.0))

    with caplog.at_level(logging.WARNING, logger="deepens.data"):
        images, _ = load_prediction_inputs(source, channels=1, image_size=(4, 4))

    assert images.eq(16).all()
    (message,) = _warnings(caplog)
    assert message.startswith(
        f"array 'x' in {source} holds floats from 16 to 16; read them as pixel "
        "values 0..255"
    )
    assert "pass uint8" in message and "0..16" in message


@pytest.mark.parametrize(
    ("x", "warned"),
    [
        (np.full((9, 4, 4), 16.0), True),
        (np.full((9, 4, 4), 1.5, np.float32), True),
        (np.full((9, 4, 4), 17.0), False),
        (np.full((9, 4, 4), 1.0), False),
        (np.full((9, 4, 4), 16, np.uint8), False),
    ],
    ids=["float16", "float1.5", "float17", "float01", "uint8"],
)
def test_training_npz_floats_are_read_and_warned_about_like_predictions(
    tmp_path, caplog, x, warned
):
    source = _npz(tmp_path / "set.npz", x=x, y=np.arange(9) % 3)

    with caplog.at_level(logging.WARNING, logger="deepens.data"):
        load_dataset(source)

    assert any("read them as pixel values 0..255" in m for m in _warnings(caplog)) == (
        warned
    )


def test_floats_above_255_suggest_uint8(tmp_path):
    source = _npz(tmp_path / "batch.npz", x=np.full((2, 4, 4), 1000.0))

    with pytest.raises(DataError, match=r"from 1000 to 1000; .*pass uint8 0\.\.255"):
        load_prediction_inputs(source, channels=1, image_size=(4, 4))


def test_prediction_folder_is_sorted_and_skips_bad_files(tmp_path, caplog):
    _save(tmp_path / "b.png", "L", (4, 4), 9)
    _save(tmp_path / "a.jpg", "RGB", (4, 4), (1, 2, 3))
    (tmp_path / ".DS_Store").write_bytes(b"x")
    (tmp_path / "c.jpg").write_text("nope")

    with caplog.at_level(logging.WARNING, logger="deepens.data"):
        images, names = load_prediction_inputs(tmp_path, channels=3, image_size=(4, 4))

    assert names == ["a.jpg", "b.png"]
    assert images.shape == (2, 3, 4, 4)
    assert images[1].eq(9).all()
    assert _warned_about(caplog, tmp_path / "c.jpg")
    assert not _warned_about(caplog, tmp_path / ".DS_Store")


def test_prediction_folder_laid_out_like_training_data_is_searched(tmp_path, caplog):
    _save(tmp_path / "loose.png", color=1)
    _save(tmp_path / "cat" / "002.png", color=3)
    _save(tmp_path / "cat" / "001.png", color=2)
    _save(tmp_path / "cat" / "old" / "000.png", color=4)
    _save(tmp_path / "dog" / "001.png", color=5)
    _save(tmp_path / "dog" / ".hidden.png")
    _save(tmp_path / ".thumbnails" / "001.png")
    (tmp_path / "dog" / "notes.txt").write_text("not an image")

    with caplog.at_level(logging.DEBUG, logger="deepens.data"):
        images, names = load_prediction_inputs(tmp_path, channels=1, image_size=(6, 6))

    assert names == [
        "cat/001.png",
        "cat/002.png",
        "cat/old/000.png",
        "dog/001.png",
        "loose.png",
    ]
    assert images[:, 0, 0, 0].tolist() == [2, 3, 4, 5, 1]
    debug = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG]
    assert "Found 3 images in subfolder cat" in debug
    assert "Found 1 image in subfolder dog" in debug
    assert _warned_about(caplog, tmp_path / "dog" / "notes.txt")


def test_prediction_folder_without_readable_images(tmp_path):
    (tmp_path / "c.jpg").write_text("nope")

    with pytest.raises(
        DataError,
        match=r"holds no readable images \(1 file skipped\)",
    ):
        load_prediction_inputs(tmp_path, channels=1, image_size=(4, 4))


def test_prediction_npz_rows(tmp_path):
    source = _npz(tmp_path / "batch.npz", x=np.full((3, 2, 2), 0.5))

    images, names = load_prediction_inputs(source, channels=3, image_size=(4, 4))

    assert names == ["row-0", "row-1", "row-2"]
    assert images.shape == (3, 3, 4, 4) and images.eq(128).all()


def test_prediction_npz_without_x(tmp_path):
    source = _npz(tmp_path / "batch.npz", images=np.zeros((3, 2, 2)))

    with pytest.raises(DataError, match=r"has no array 'x' \(found: images\)"):
        load_prediction_inputs(source, channels=1, image_size=(2, 2))


def test_prediction_unreadable_single_file(tmp_path):
    path = _truncated_jpeg(tmp_path / "cut.jpg")

    with pytest.raises(
        DataError, match=re.escape(str(path)) + " is not a readable image"
    ):
        load_prediction_inputs(path, channels=3, image_size=(4, 4))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"channels": 2, "image_size": (4, 4)}, "channels must be 1 or 3, got 2"),
        (
            {"channels": 1, "image_size": (4,)},
            r"image_size must be a \(height, "
            r"width\) pair of positive integers, got \(4,\)",
        ),
        ({"channels": 1, "image_size": (4, 0)}, r"image_size .* got \(4, 0\)"),
    ],
)
def test_prediction_parameters_are_checked(tmp_path, options, message):
    path = _save(tmp_path / "x.png")

    with pytest.raises(DataError, match=message):
        load_prediction_inputs(path, **options)


def test_prediction_missing_path(tmp_path):
    with pytest.raises(DataError, match="nothing.png does not exist"):
        load_prediction_inputs(tmp_path / "nothing.png", channels=1, image_size=(4, 4))


def test_prediction_prepares_images_like_training(tmp_path):
    root = tmp_path / "set"
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        for index in range(3):
            pixels = rng.integers(0, 256, (7, 5, 4), dtype=np.uint8)
            _save_array(root / name / f"{index}.png", pixels)

    dataset = load_dataset(root, image_size=9)
    images, _ = load_prediction_inputs(
        root / "a" / "0.png", channels=3, image_size=(9, 9)
    )

    everything = torch.cat(
        [dataset.train_images, dataset.validation_images, dataset.test_images]
    )
    assert any(torch.equal(images[0], image) for image in everything)


def _tiny_dataset(**changes) -> ImageDataset:
    fields = {
        "name": "tiny",
        "class_names": ["a", "b"],
        "train_images": torch.zeros((4, 1, 3, 2), dtype=torch.uint8),
        "train_labels": torch.tensor([0, 1, 0, 1]),
        "validation_images": torch.zeros((2, 1, 3, 2), dtype=torch.uint8),
        "validation_labels": torch.tensor([0, 1]),
        "test_images": torch.zeros((2, 1, 3, 2), dtype=torch.uint8),
        "test_labels": torch.tensor([1, 0]),
    }
    return ImageDataset(**(fields | changes))


def test_describe_is_one_line_with_shape_and_sizes():
    dataset = _tiny_dataset(skipped_files=["x.jpg"])

    assert dataset.describe() == (
        "tiny: 2 classes, 1x3x2 images, 4 train / 2 validation / 2 test "
        "(1 file skipped)"
    )
    assert dataset.num_classes == 2 and dataset.image_size == (3, 2)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"train_images": torch.zeros((4, 1, 3, 2))},
            r"train_images must be a uint8 tensor",
        ),
        (
            {"test_images": torch.zeros((2, 1, 3, 3), dtype=torch.uint8)},
            r"test_images has images of shape \(1, 3, 3\), but train_images has",
        ),
        (
            {"validation_labels": torch.tensor([0, 1, 1])},
            r"validation_labels must be an int64 tensor of shape \(2,\)",
        ),
        ({"test_labels": torch.tensor([0, 2])}, r"test_labels must lie in 0\.\.1"),
    ],
)
def test_dataset_rejects_inconsistent_tensors(changes, message):
    with pytest.raises(DataError, match=message):
        _tiny_dataset(**changes)
