"""Load image classification data sets into memory as uint8 tensors.

:func:`load_dataset` reads one of these sources and splits it, stratified and
seeded, into train, validation and test sets:

* ``None`` or ``"digits"``: scikit-learn's bundled 8x8 digits (nothing to install).
* ``"fashion-mnist"``: the IDX files of Debian's ``dataset-fashion-mnist``.
* a folder of MNIST-style IDX files (``train-images-idx3-ubyte[.gz]`` ...).
* a folder with one subfolder per class, holding image files (files in nested
  folders count for their class; hidden files and folders are ignored).
* an ``.npz`` file with arrays ``x`` and ``y`` (optionally ``x_test``, ``y_test``
  and ``class_names``).

Labels read from arrays (``.npz``, IDX, :func:`dataset_from_arrays`) are class
indices 0..K-1 that skip no value, or, in ``.npz`` files and
:func:`dataset_from_arrays`, strings or booleans that name the classes: their
sorted distinct values become the classes (``class_names`` must then be
absent, except that booleans index two given names as 0 and 1 would).

The plain strings ``"digits"`` and ``"fashion-mnist"`` are shortcuts; pass a
:class:`pathlib.Path` (or ``"./digits"``) to read a local folder of that name.

Image folders are converted to one mode and one size. The mode is grayscale
("L") when every image is grayscale (including palette images whose palette is
all gray) and RGB otherwise. Transparent images are composited onto black, so a
transparent pixel reads as 0 whatever colour it hides; black is the value that
zero padding and the MNIST-style data sets use for background. 16-bit images
are scaled to 8 bits (65535 -> 255), EXIF orientation is applied, and images
are resized (stretched, not cropped) with a bicubic filter, which Pillow
antialiases when shrinking. :func:`load_prediction_inputs` applies the same
conversion so that predictions see images prepared the way training did, and
logs a warning when it has to resize inputs or change them between colour and
grayscale, since the model may predict such inputs poorly.

Arrays of pixels (``.npz``, IDX, :func:`dataset_from_arrays`, and ``.npz``
inputs to predict) may be uint8, integers 0..255, or floats. Training and
prediction read floats alike: an array whose values all lie in [0, 1] is read
as normalised (1.0 is white), any other as 0..255. Floats outside [0, 255] are
refused. Floats whose maximum lies in (1, 16] are read as 0..255 but with a
warning, as they are more likely on another scale (scikit-learn's digits use
0..16) than nearly black; pass uint8 to state the scale.
"""

from __future__ import annotations

import gzip
import logging
import math
import numbers
import os
import struct
import zipfile
import zlib
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeGuard, cast

import numpy as np
import torch
from PIL import Image, ImageOps

from deepens.errors import DataError

_logger = logging.getLogger(__name__)

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
"""Where Debian's ``dataset-fashion-mnist`` package installs its IDX files."""

FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)

_ACCEPTED = (
    "accepted: 'digits', 'fashion-mnist', a folder with one subfolder per class, "
    "a folder of MNIST-style IDX files, or an .npz file with arrays x and y"
)

_TRAIN_IMAGES = "train-images-idx3-ubyte"
_TRAIN_LABELS = "train-labels-idx1-ubyte"
_TEST_IMAGES = "t10k-images-idx3-ubyte"
_TEST_LABELS = "t10k-labels-idx1-ubyte"

# IDX type codes from the format's definition; multi-byte values are big-endian.
_IDX_DTYPES: dict[int, np.dtype[Any]] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

# The signatures numpy.load recognises: zip archives (.npz, also when empty)
# and single .npy arrays.
_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")
_NPY_MAGIC = b"\x93NUMPY"
_NPZ_DATASET = (
    "a zip archive of arrays x (images) and y (labels), as "
    "numpy.savez(path, x=images, y=labels) writes"
)
_NPZ_PREDICTION = (
    "a zip archive with an array x of images, as numpy.savez(path, x=images) writes"
)

# Float images whose maximum lies in (1, _DIM_FLOAT_MAX] are read as 0..255 like
# any float above 1, but would be nearly black: more likely another scale
# (digits use 0..16, 4-bit data 0..15), so they are read with a warning.
_DIM_FLOAT_MAX = 16.0

_RESAMPLE = Image.Resampling.BICUBIC
_GRAY_MODES = frozenset(
    {"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"}
)
_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})
_PREMULTIPLIED = {"La": "LA", "RGBa": "RGBA"}  # and their straight-alpha modes
_EXIF_ORIENTATION = 0x0112
_ROTATING_ORIENTATIONS = frozenset({5, 6, 7, 8})

# What Pillow raises for files it cannot identify or decode (truncated, corrupt,
# oversized); anything else is a bug and should propagate.
_DECODE_ERRORS = (
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    IndexError,
    struct.error,
    Image.DecompressionBombError,
)


@dataclass
class ImageDataset:
    """An image classification data set split into train, validation and test.

    Images are contiguous ``uint8`` tensors of shape ``(N, C, H, W)`` with ``C``
    1 or 3; labels are ``int64`` tensors of shape ``(N,)`` indexing
    ``class_names``.

    Attributes
    ----------
    name : str
        Short name, e.g. ``"digits"`` or the folder's name.
    class_names : list of str
        One name per class, in label order.
    train_images, train_labels : torch.Tensor
        The training split.
    validation_images, validation_labels : torch.Tensor
        The validation split, used for early stopping and ensemble selection.
    test_images, test_labels : torch.Tensor
        The held-out test split.
    skipped_files : list of str
        Paths of files that were skipped (not images, unreadable, truncated or
        outside a class folder).
    """

    name: str
    class_names: list[str]
    train_images: torch.Tensor
    train_labels: torch.Tensor
    validation_images: torch.Tensor
    validation_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    skipped_files: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        shape = tuple(self.train_images.shape[1:])
        for split in ("train", "validation", "test"):
            _check_split(self, split, shape)

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.class_names)

    @property
    def channels(self) -> int:
        """Channels per image: 1 (grayscale) or 3 (RGB)."""
        return int(self.train_images.shape[1])

    @property
    def image_size(self) -> tuple[int, int]:
        """Image ``(height, width)`` in pixels."""
        return int(self.train_images.shape[2]), int(self.train_images.shape[3])

    def describe(self) -> str:
        """Summarise the data set in one line.

        Returns
        -------
        str
            Name, class count, image shape and split sizes.
        """
        height, width = self.image_size
        line = (
            f"{self.name}: {self.num_classes} classes, "
            f"{self.channels}x{height}x{width} images, "
            f"{len(self.train_labels)} train / {len(self.validation_labels)} "
            f"validation / {len(self.test_labels)} test"
        )
        if self.skipped_files:
            line += f" ({_plural(len(self.skipped_files), 'file')} skipped)"
        return line


def _check_split(dataset: ImageDataset, split: str, shape: tuple[int, ...]) -> None:
    images = getattr(dataset, f"{split}_images")
    labels = getattr(dataset, f"{split}_labels")
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] not in (1, 3):
        raise DataError(
            f"ImageDataset.{split}_images must be a uint8 tensor of shape "
            f"(N, C, H, W) with C 1 or 3, got {images.dtype} {tuple(images.shape)}"
        )
    if tuple(images.shape[1:]) != shape:
        raise DataError(
            f"ImageDataset.{split}_images has images of shape "
            f"{tuple(images.shape[1:])}, but train_images has {shape}"
        )
    if labels.dtype != torch.int64 or labels.shape != (images.shape[0],):
        raise DataError(
            f"ImageDataset.{split}_labels must be an int64 tensor of shape "
            f"({images.shape[0]},), got {labels.dtype} {tuple(labels.shape)}"
        )
    if labels.numel() and not 0 <= int(labels.min()) <= int(labels.max()) < len(
        dataset.class_names
    ):
        raise DataError(
            f"ImageDataset.{split}_labels must lie in 0..{len(dataset.class_names) - 1}"
        )


@dataclass
class _Source:
    """A data set as read, before splitting: numpy arrays, (N, C, H, W) uint8."""

    name: str
    class_names: list[str]
    images: np.ndarray
    labels: np.ndarray
    test_images: np.ndarray | None = None
    test_labels: np.ndarray | None = None
    skipped: list[str] = field(default_factory=list)
    labels_from: str = "the labels"
    """Where the labels came from, for messages: a file or an array."""


def load_dataset(
    source: str | os.PathLike[str] | None = None,
    *,
    validation_fraction: float = 0.15,
    test_fraction: float = 0.2,
    seed: int = 0,
    max_train_samples: int | None = None,
    max_validation_samples: int | None = None,
    max_test_samples: int | None = None,
    image_size: int | None = None,
) -> ImageDataset:
    """Read a data set and split it into train, validation and test.

    Splits are stratified (every class appears in every split) and depend only
    on the data and ``seed``. A data set that brings its own test split (IDX
    ``t10k`` files, ``x_test``/``y_test`` in an ``.npz``) keeps it; then only
    validation is split off the training data and ``test_fraction`` is unused.

    Parameters
    ----------
    source : str, os.PathLike or None
        ``None`` or ``"digits"``, ``"fashion-mnist"``, a folder (class
        subfolders or IDX files) or an ``.npz`` file; see the module docstring.
    validation_fraction : float
        Share of the data (of the training data when the data set has its own
        test split) held out for validation, in (0, 1).
    test_fraction : float
        Share of the data held out for testing, in (0, 1).
    seed : int
        Seed of the split and of the subsampling; a non-negative integer.
    max_train_samples, max_validation_samples, max_test_samples : int or None
        Cap each split by stratified subsampling after splitting; ``None``
        keeps the whole split. Each must be at least the number of classes.
    image_size : int or None
        Resize images to ``image_size`` x ``image_size``. ``None`` keeps the
        data set's size (for image folders: the most common size).

    Returns
    -------
    ImageDataset
        The three splits as uint8 image tensors and int64 label tensors.

    Raises
    ------
    DataError
        If the source cannot be read, a class has too few images, or a
        parameter is out of range; the message says which and what to do.
    """
    caps = {
        "train": ("max_train_samples", max_train_samples),
        "validation": ("max_validation_samples", max_validation_samples),
        "test": ("max_test_samples", max_test_samples),
    }
    _check_split_parameters(validation_fraction, test_fraction, seed, caps.values())
    _check_optional_positive_int("image_size", image_size)

    data = _read_source(source, image_size)
    _check_class_counts(data)

    split_seed, *cap_seeds = np.random.SeedSequence(seed).spawn(4)
    indices = _split_indices(
        data, validation_fraction, test_fraction, np.random.default_rng(split_seed)
    )
    for (split, (parameter, cap)), cap_seed in zip(
        caps.items(), cap_seeds, strict=True
    ):
        pool_labels = data.labels if split != "test" else _test_labels(data)
        indices[split] = _cap_indices(
            indices[split], pool_labels, cap, parameter, np.random.default_rng(cap_seed)
        )
    return _build_dataset(data, indices, image_size)


def dataset_from_arrays(
    x: np.ndarray,
    y: np.ndarray,
    *,
    validation_fraction: float = 0.15,
    seed: int = 0,
    class_names: Sequence[str] | None = None,
    name: str = "arrays",
) -> ImageDataset:
    """Split in-memory images into train and validation, with no test split.

    For callers that keep their own test data, such as the scikit-learn style
    :class:`~deepens.estimator.EnsembleClassifier`: every image goes to train
    or validation, stratified and seeded like :func:`load_dataset`, and the
    test split is empty.

    Parameters
    ----------
    x : numpy.ndarray
        Images as ``(N, H, W)``, ``(N, H, W, C)`` or ``(N, C, H, W)`` with ``C``
        1 or 3: uint8, integers 0..255, or floats in [0, 1] or [0, 255] (an
        array whose floats all lie in [0, 1] is read as normalised; one whose
        maximum lies in (1, 16] is read as 0..255 with a warning).
    y : numpy.ndarray
        ``(N,)`` integer class indices 0, 1, ..., or strings or booleans naming
        the classes, which are then their sorted distinct values.
    validation_fraction : float
        Share of the images held out for validation, in (0, 1).
    seed : int
        Seed of the split; a non-negative integer.
    class_names : sequence of str, optional
        One name per class, in label order; by default "0", "1", ... Not
        allowed with string labels, which name the classes themselves.
    name : str
        Name of the data set, recorded in libraries built from it.

    Returns
    -------
    ImageDataset
        Train and validation splits that each hold every class, and a test
        split of no images.

    Raises
    ------
    DataError
        If the arrays are not images and labels of matching length, a class
        has fewer than two images, or a parameter is out of range.
    """
    _check_fraction("validation_fraction", validation_fraction)
    if not _is_int(seed) or seed < 0:
        raise DataError(f"seed must be a non-negative integer, got {seed!r}")

    images = _images_from_array(np.asarray(x), "x")
    names = None if class_names is None else [str(n) for n in class_names]
    labels, names = _array_labels(np.asarray(y), names)
    if len(labels) != len(images):
        raise DataError(
            f"y holds {len(labels)} labels but x holds {len(images)} images; "
            "they must match"
        )

    data = _Source(name, [], images, labels, labels_from="y")
    data.class_names = _resolve_class_names(data, names, "class_names")
    # An empty test split of the data set's own makes the splitter hold out
    # no test images and ask each class for only two (train and validation).
    data.test_images, data.test_labels = images[:0], labels[:0]
    _check_class_counts(data)

    indices = _split_indices(
        data, validation_fraction, 0.0, np.random.default_rng(seed)
    )
    return _build_dataset(data, indices, None)


def _array_labels(
    y: np.ndarray, class_names: list[str] | None
) -> tuple[np.ndarray, list[str] | None]:
    """Class indices of ``y``, and the class names (from ``y`` if it names them)."""
    if not _holds_class_names(y, class_names):
        return _labels_from_array(y, "y"), class_names
    given = None if class_names is None else "class_names"
    labels, _, names = _encode_named_labels(y, "y", given)
    return labels, names


def load_prediction_inputs(
    source: str | os.PathLike[str], *, channels: int, image_size: tuple[int, int]
) -> tuple[torch.Tensor, list[str]]:
    """Read images to predict, prepared like the training images.

    Parameters
    ----------
    source : str or os.PathLike
        One image file, a folder of image files (searched recursively, so a
        folder laid out for training works; hidden files and folders are
        ignored and unreadable files skipped with a warning), or an ``.npz``
        file with an array ``x``.
    channels : int
        Channels the model expects: 1 (grayscale) or 3 (RGB).
    image_size : tuple of int
        ``(height, width)`` the model expects.

    Returns
    -------
    images : torch.Tensor
        uint8 tensor of shape ``(N, channels, height, width)``.
    names : list of str
        One name per image: the file's path relative to the folder, with
        ``/`` separators (e.g. ``"cat/001.png"``), the file name for a single
        file, or ``"row-<i>"`` for an ``.npz``. Folder images are sorted by
        that path.

    Raises
    ------
    DataError
        If the source is missing, holds no readable image, or a parameter is
        invalid.
    """
    mode = _mode_for_channels(channels)
    size = _check_size_pair(image_size)
    path = Path(source)
    if not path.exists():
        raise DataError(
            f"{path} does not exist; pass an image file, a folder of images "
            "or an .npz file with an array x"
        )
    conversions = _Conversions(mode, size)
    if path.is_dir():
        images, names = _decode_prediction_folder(path, mode, size, conversions)
    elif path.suffix.lower() == ".npz":
        images, names = _read_prediction_npz(path, mode, size, conversions)
    else:
        images = _decode_prediction_file(path, mode, size, conversions)
        names = [path.name]
    conversions.warn(path)
    return _to_tensor(images), names


def _is_int(value: object) -> TypeGuard[int]:
    # bool is an Integral too, but True is no sensible count or seed.
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _check_fraction(name: str, value: object) -> None:
    in_range = (
        isinstance(value, numbers.Real)
        and not isinstance(value, bool)
        and 0 < float(value) < 1
    )
    if not in_range:
        raise DataError(
            f"{name} must be a number strictly between 0 and 1, got {value!r}"
        )


def _check_optional_positive_int(name: str, value: object) -> None:
    if value is not None and (not _is_int(value) or value < 1):
        raise DataError(f"{name} must be a positive integer or None, got {value!r}")


def _check_split_parameters(
    validation_fraction: float,
    test_fraction: float,
    seed: int,
    caps: Iterable[tuple[str, int | None]],
) -> None:
    _check_fraction("validation_fraction", validation_fraction)
    _check_fraction("test_fraction", test_fraction)
    if validation_fraction + test_fraction >= 1:
        raise DataError(
            "validation_fraction + test_fraction must be below 1 so that "
            f"training data remains, got {validation_fraction} + {test_fraction}"
        )
    if not _is_int(seed) or seed < 0:
        raise DataError(f"seed must be a non-negative integer, got {seed!r}")
    for name, cap in caps:
        _check_optional_positive_int(name, cap)


def _mode_for_channels(channels: object) -> str:
    if not _is_int(channels) or channels not in (1, 3):
        raise DataError(f"channels must be 1 or 3, got {channels!r}")
    return "L" if channels == 1 else "RGB"


def _check_size_pair(image_size: object) -> tuple[int, int]:
    valid = (
        isinstance(image_size, Sequence)
        and len(image_size) == 2
        and all(_is_int(side) and side > 0 for side in image_size)
    )
    if not valid:
        raise DataError(
            "image_size must be a (height, width) pair of positive integers, "
            f"got {image_size!r}"
        )
    height, width = cast(Sequence[int], image_size)
    return int(height), int(width)


def _read_source(
    source: str | os.PathLike[str] | None, image_size: int | None
) -> _Source:
    # Only plain strings are shortcuts, so Path("digits") still means a folder.
    if source is None or (isinstance(source, str) and source == "digits"):
        return _read_digits()
    if isinstance(source, str) and source == "fashion-mnist":
        return _read_fashion_mnist()

    path = Path(source)
    if not path.exists():
        raise DataError(f"{path} does not exist; {_ACCEPTED}")
    if path.is_dir():
        if _find_idx(path, _TRAIN_IMAGES) is not None:
            return _read_idx_folder(path, _folder_name(path))
        return _read_image_folder(path, image_size)
    if path.suffix.lower() == ".npz":
        return _read_npz_dataset(path)
    raise DataError(f"{path} is not a data set deepens can read; {_ACCEPTED}")


def _folder_name(path: Path) -> str:
    return path.resolve().name or str(path)


def _read_digits() -> _Source:
    # Imported here so that importing deepens.data stays fast.
    from sklearn.datasets import load_digits

    bunch = load_digits()
    # Digits hold pixel intensities 0..16; stretch them to the uint8 range.
    images = np.rint(bunch.images * (255 / 16)).astype(np.uint8)[:, None]
    labels = bunch.target.astype(np.int64)
    return _Source("digits", [str(digit) for digit in range(10)], images, labels)


def _read_fashion_mnist() -> _Source:
    folder = FASHION_MNIST_DIR
    if _find_idx(folder, _TRAIN_IMAGES) is None:
        raise DataError(
            f"Fashion-MNIST is not installed in {folder}; install the Debian "
            "package with `apt-get install dataset-fashion-mnist`, or pass the "
            "folder that holds its IDX files"
        )
    return _read_idx_folder(folder, "fashion-mnist", list(FASHION_MNIST_CLASSES))


def _find_idx(folder: Path, stem: str) -> Path | None:
    for name in (stem, f"{stem}.gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def _require_idx(folder: Path, stem: str) -> Path:
    path = _find_idx(folder, stem)
    if path is None:
        raise DataError(
            f"{folder} has no {stem} (or {stem}.gz); an IDX data set needs "
            f"{_TRAIN_IMAGES} and {_TRAIN_LABELS}"
        )
    return path


def _read_bytes(path: Path) -> bytes:
    try:
        if path.suffix == ".gz":
            with gzip.open(path) as stream:
                return stream.read()
        return path.read_bytes()
    except (OSError, EOFError, zlib.error) as error:
        raise DataError(
            f"cannot read {path} ({error}); the file is damaged or truncated, "
            "download it again"
        ) from error


def _read_idx(path: Path) -> np.ndarray:
    raw = _read_bytes(path)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise DataError(
            f"{path} is not an IDX file: its magic number {raw[:4].hex()!r} should "
            "be 0000 followed by a type code and a dimension count"
        )
    ndim = raw[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header:
        raise DataError(f"{path} is truncated inside its header; download it again")

    shape = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = _IDX_DTYPES[raw[2]]
    expected = header + math.prod(shape) * dtype.itemsize
    if len(raw) != expected:
        problem = "truncated" if len(raw) < expected else "corrupt"
        raise DataError(
            f"{path} is {problem}: its header describes shape {shape}, which "
            f"takes {expected} bytes, but it holds {len(raw)}; download it again"
        )
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)


def _read_idx_pair(
    folder: Path, images_stem: str, labels_stem: str
) -> tuple[np.ndarray, np.ndarray, Path]:
    images_path = _require_idx(folder, images_stem)
    labels_path = _require_idx(folder, labels_stem)
    images = _images_from_array(_read_idx(images_path), str(images_path))
    labels = _labels_from_array(_read_idx(labels_path), str(labels_path))
    if len(labels) != len(images):
        raise DataError(
            f"{labels_path} holds {len(labels)} labels but {images_path} holds "
            f"{len(images)} images; they must match"
        )
    return images, labels, images_path


def _read_idx_folder(
    folder: Path, name: str, class_names: list[str] | None = None
) -> _Source:
    images, labels, images_path = _read_idx_pair(folder, _TRAIN_IMAGES, _TRAIN_LABELS)
    labels_from = str(_require_idx(folder, _TRAIN_LABELS))
    data = _Source(name, [], images, labels, labels_from=labels_from)
    has_test = (
        _find_idx(folder, _TEST_IMAGES) is not None
        or _find_idx(folder, _TEST_LABELS) is not None
    )
    if has_test:
        test_images, test_labels, test_path = _read_idx_pair(
            folder, _TEST_IMAGES, _TEST_LABELS
        )
        _check_same_image_shape(test_images, images, str(test_path), str(images_path))
        data.test_images, data.test_labels = test_images, test_labels

    names_file = folder / "classes.txt"
    names_from = str(names_file) if class_names is None else "Fashion-MNIST"
    if class_names is None:
        class_names = _read_classes_txt(names_file)
    data.class_names = _resolve_class_names(data, class_names, names_from)
    return data


def _read_classes_txt(path: Path) -> list[str] | None:
    if not path.is_file():
        return None
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"cannot read {path} ({error}); save it as UTF-8") from error
    names = [line.strip() for line in lines if line.strip()]
    if not names:
        raise DataError(f"{path} is empty; list one class name per line")
    return names


def _resolve_class_names(
    data: _Source, class_names: list[str] | None, names_from: str
) -> list[str]:
    """Check ``class_names`` against the labels, or name classes "0", "1", ..."""
    all_labels = [data.labels]
    if data.test_labels is not None:
        all_labels.append(data.test_labels)
    highest = max(int(labels.max()) for labels in all_labels)
    if class_names is None:
        return [str(label) for label in range(highest + 1)]

    if len(set(class_names)) != len(class_names):
        duplicates = sorted({n for n in class_names if class_names.count(n) > 1})
        raise DataError(
            f"{names_from} repeats class names {duplicates}; make them unique"
        )
    if highest >= len(class_names):
        raise DataError(
            f"the labels go up to {highest} but {names_from} names only "
            f"{len(class_names)} classes; add the missing names"
        )
    return list(class_names)


def _images_from_array(array: np.ndarray, what: str) -> np.ndarray:
    """Return images as uint8 (N, C, H, W), from (N,H,W), (N,H,W,C) or (N,C,H,W)."""
    images = _to_nchw(array, what)
    if len(images) == 0:
        raise DataError(f"{what} holds no images")
    return _to_uint8(images, what)


def _to_nchw(array: np.ndarray, what: str) -> np.ndarray:
    if array.ndim == 3:
        return array[:, None]
    # Channels-last is numpy's usual layout, so it wins when both could apply.
    if array.ndim == 4 and array.shape[3] in (1, 3):
        return array.transpose(0, 3, 1, 2)
    if array.ndim == 4 and array.shape[1] in (1, 3):
        return array
    raise DataError(
        f"{what} has shape {array.shape}; expected images as (N, H, W), "
        "(N, H, W, C) or (N, C, H, W) with C 1 or 3"
    )


def _to_uint8(images: np.ndarray, what: str) -> np.ndarray:
    if images.dtype == np.uint8:
        return images
    if images.dtype.kind in "iu":
        low, high = int(images.min()), int(images.max())
        if low < 0 or high > 255:
            raise DataError(
                f"{what} holds integers from {low} to {high}; expected pixel "
                "values 0..255"
            )
        return images.astype(np.uint8)
    if images.dtype.kind == "f":
        return _float_to_uint8(images, what)
    raise DataError(
        f"{what} has dtype {images.dtype}; expected uint8, integers 0..255 or "
        "floats in [0, 1] or [0, 255]"
    )


def _float_to_uint8(images: np.ndarray, what: str) -> np.ndarray:
    if not np.isfinite(images).all():
        raise DataError(f"{what} holds NaN or infinite values; expected pixels")
    low, high = float(images.min()), float(images.max())
    if low < 0 or high > 255:
        raise DataError(
            f"{what} holds floats from {low:g} to {high:g}; expected pixel "
            "values in [0, 1] or [0, 255]: rescale them to [0, 1] or pass "
            "uint8 0..255"
        )
    if 1 < high <= _DIM_FLOAT_MAX:
        _logger.warning(
            "%s holds floats from %g to %g; read them as pixel values 0..255, as "
            "any float array whose maximum is above 1 is, so its brightest pixel "
            "is %.0f%% of full brightness. If they use a smaller scale (such as "
            "scikit-learn's digits, 0..16), rescale them to [0, 1]; to keep "
            "0..255 without this warning, pass uint8",
            what,
            low,
            high,
            100 * high / 255,
        )
    # A whole array within [0, 1] is read as normalised; otherwise as 0..255.
    scale = 255.0 if high <= 1 else 1.0
    return np.rint(images * scale).astype(np.uint8)


def _check_label_shape(array: np.ndarray, what: str) -> None:
    if array.ndim != 1:
        raise DataError(
            f"{what} has shape {array.shape}; expected one label per image, (N,)"
        )


def _labels_from_array(array: np.ndarray, what: str) -> np.ndarray:
    """Check class indices; booleans count as the indices 0 and 1."""
    _check_label_shape(array, what)
    if array.dtype.kind == "f":
        raise DataError(
            f"{what} has dtype {array.dtype}; expected integer class labels "
            "(convert whole-number floats with .astype(int))"
        )
    if array.dtype.kind not in "iub":
        raise DataError(
            f"{what} has dtype {array.dtype}; expected integer class labels, "
            "strings or booleans"
        )
    if len(array) and int(array.min()) < 0:
        raise DataError(
            f"{what} holds the negative label {int(array.min())}; labels must "
            "be class indices 0, 1, ..."
        )
    return array.astype(np.int64)


def _holds_class_names(labels: np.ndarray, class_names: object) -> bool:
    """Whether ``labels`` name their classes rather than index them."""
    # Booleans index two given class names as 0 and 1 would; without names,
    # False and True are the names.
    kind = labels.dtype.kind
    return kind in "US" or (kind == "b" and class_names is None)


def _label_kind(labels: np.ndarray) -> str:
    kinds = {"U": "strings", "S": "strings", "b": "booleans"}
    return kinds.get(labels.dtype.kind, f"{labels.dtype} values")


def _encode_named_labels(
    labels: np.ndarray, what: str, names_given: str | None
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Number the distinct values of naming labels in sorted order.

    Parameters
    ----------
    labels : numpy.ndarray
        Strings, bytes or booleans, one per image.
    what : str
        The labels' origin, for messages.
    names_given : str or None
        Where class names were also given, which is an error, or ``None``.

    Returns
    -------
    encoded : numpy.ndarray
        int64 class indices.
    values : numpy.ndarray
        The sorted distinct label values, one per class.
    names : list of str
        The class names, in index order.
    """
    _check_label_shape(labels, what)
    if names_given is not None:
        raise DataError(
            f"{what} holds strings, which name the classes, and {names_given} "
            "names them too; remove class_names (the classes are then the sorted "
            "distinct labels) or store the labels as integer indices into it"
        )
    values, encoded = np.unique(labels, return_inverse=True)
    names = [_value_name(value) for value in values.tolist()]
    _logger.info("%s names %s; numbered in sorted order", what, _preview(names))
    return encoded.astype(np.int64), values, names


def _encode_test_labels(
    labels: np.ndarray, values: np.ndarray, what: str, train_what: str
) -> np.ndarray:
    _check_label_shape(labels, what)
    unknown = np.setdiff1d(labels, values)
    if len(unknown):
        names = [_value_name(value) for value in unknown.tolist()]
        raise DataError(
            f"{what} holds labels that {train_what} does not: {_preview(names)}; "
            f"every class needs training images, so add them to {train_what}"
        )
    return np.searchsorted(values, labels).astype(np.int64)


def _value_name(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="backslashreplace")
    return str(value)


def _preview(names: list[str], limit: int = 10) -> str:
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return f"{names[:limit]}{more}"


def _check_same_image_shape(
    images: np.ndarray, reference: np.ndarray, what: str, reference_what: str
) -> None:
    if images.shape[1:] != reference.shape[1:]:
        raise DataError(
            f"{what} has images of shape {images.shape[1:]} (C, H, W) but "
            f"{reference_what} has {reference.shape[1:]}; they must match"
        )


def _load_npz(
    path: Path, keys: tuple[str, ...], expects: str
) -> tuple[dict[str, np.ndarray], list[str]]:
    """Load the arrays named in ``keys`` that exist, and list every array name.

    ``expects`` describes the archive the caller needs, for error messages.
    """
    _check_npz_magic(path, expects)
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise DataError(
            f"cannot read {path} as an .npz archive ({error}); write it with "
            "numpy.savez"
        ) from error
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise DataError(
            f"{path} holds a single array, not an .npz archive of named arrays"
        )
    with archive:
        found = list(archive.files)
        arrays = {
            key: _load_npz_array(archive, key, path) for key in keys if key in found
        }
    return arrays, found


def _check_npz_magic(path: Path, expects: str) -> None:
    # numpy.load falls back to unpickling any file that is neither a zip nor an
    # .npy, so its error for a text file advises allow_pickle: unsafe and beside
    # the point. Checking the signature first gives the real reason.
    try:
        with path.open("rb") as stream:
            head = stream.read(len(_NPY_MAGIC))
    except OSError as error:
        raise DataError(f"cannot read {path} ({error})") from error
    if not head.startswith((*_ZIP_MAGICS, _NPY_MAGIC)):
        raise DataError(
            f"{path} is not a valid .npz archive: it is not a zip file, which "
            f"numpy.savez and numpy.savez_compressed write; expected {expects}"
        )


def _load_npz_array(archive: np.lib.npyio.NpzFile, key: str, path: Path) -> np.ndarray:
    try:
        return archive[key]
    except ValueError as error:
        # numpy only says so in words: object arrays need allow_pickle, which
        # would let the file run code, so never suggest it.
        if "pickle" not in str(error):
            raise _unloadable_array(key, path, error) from error
        raise DataError(
            f"array {key!r} in {path} holds Python objects, which deepens does "
            "not load because unpickling can run arbitrary code; store it as a "
            "plain numeric or string array (e.g. with .astype(str))"
        ) from error
    except (OSError, EOFError, zipfile.BadZipFile) as error:
        raise _unloadable_array(key, path, error) from error


def _unloadable_array(key: str, path: Path, error: Exception) -> DataError:
    return DataError(
        f"cannot load array {key!r} from {path} ({error}); store it as a "
        "plain numeric or string array"
    )


def _require_npz_array(key: str, found: list[str], path: Path, needs: str) -> None:
    if key not in found:
        listed = ", ".join(found) or "none"
        raise DataError(f"{path} has no array {key!r} (found: {listed}); {needs}")


def _read_npz_dataset(path: Path) -> _Source:
    keys = ("x", "y", "x_test", "y_test", "class_names")
    arrays, found = _load_npz(path, keys, _NPZ_DATASET)
    needs = "an .npz data set needs x (images) and y (labels)"
    _require_npz_array("x", found, path, needs)
    _require_npz_array("y", found, path, needs)
    has_test = "x_test" in arrays or "y_test" in arrays
    if has_test:
        needs = "a test split needs both x_test and y_test"
        _require_npz_array("x_test", found, path, needs)
        _require_npz_array("y_test", found, path, needs)

    names_from = f"array 'class_names' in {path}"
    class_names = _npz_class_names(arrays.get("class_names"), names_from)
    label_names = _encode_npz_labels(arrays, path, class_names)
    images, labels = _npz_pair(arrays, "x", "y", path)
    data = _Source(path.stem, [], images, labels, labels_from=f"array 'y' in {path}")
    if has_test:
        data.test_images, data.test_labels = _npz_pair(arrays, "x_test", "y_test", path)
        _check_same_image_shape(
            data.test_images, images, f"array 'x_test' in {path}", "array 'x'"
        )
    names = label_names if label_names is not None else class_names
    data.class_names = _resolve_class_names(data, names, names_from)
    return data


def _encode_npz_labels(
    arrays: dict[str, np.ndarray],
    path: Path,
    class_names: list[str] | None,
) -> list[str] | None:
    """Replace labels that name their classes by indices; return the names.

    Returns ``None``, changing nothing, when ``y`` holds class indices.
    """
    y, y_test = arrays["y"], arrays.get("y_test")
    test_what = f"array 'y_test' in {path}"
    named = _holds_class_names(y, class_names)
    if y_test is not None and y_test.dtype.kind != y.dtype.kind:
        if named or _holds_class_names(y_test, class_names):
            raise DataError(
                f"{test_what} has dtype {y_test.dtype} but array 'y' holds "
                f"{_label_kind(y)}; store both the same way"
            )
    if not named:
        return None
    given = None if class_names is None else "array 'class_names'"
    arrays["y"], values, names = _encode_named_labels(y, f"array 'y' in {path}", given)
    if y_test is not None:
        arrays["y_test"] = _encode_test_labels(y_test, values, test_what, "array 'y'")
    return names


def _npz_pair(
    arrays: dict[str, np.ndarray], x_key: str, y_key: str, path: Path
) -> tuple[np.ndarray, np.ndarray]:
    images = _images_from_array(arrays[x_key], f"array {x_key!r} in {path}")
    labels = _labels_from_array(arrays[y_key], f"array {y_key!r} in {path}")
    if len(labels) != len(images):
        raise DataError(
            f"array {y_key!r} in {path} holds {len(labels)} labels but "
            f"{x_key!r} holds {len(images)} images; they must match"
        )
    return images, labels


def _npz_class_names(array: np.ndarray | None, what: str) -> list[str] | None:
    if array is None:
        return None
    if array.ndim != 1 or array.dtype.kind not in "US" or len(array) == 0:
        raise DataError(
            f"{what} has shape {array.shape} and dtype {array.dtype}; expected "
            "a non-empty 1-D array of strings"
        )
    return [str(name) for name in array.tolist()]


def _skip(path: Path, reason: str, skipped: list[str]) -> None:
    _logger.warning("Skipping %s: %s", path, reason)
    skipped.append(str(path))


def _is_hidden(path: Path) -> bool:
    return path.name.startswith(".")


def _is_grayscale(image: Image.Image) -> bool:
    if image.mode in _GRAY_MODES:
        return True
    if image.mode not in ("P", "PA"):
        return False
    palette = image.getpalette()
    if not palette:
        return False
    rgb = np.asarray(palette).reshape(-1, 3)
    return bool((rgb == rgb[:, :1]).all())


def _shows_only_gray(image: Image.Image) -> bool:
    rgb = np.asarray(_convert_image(image, "RGB"))
    return bool((rgb == rgb[..., :1]).all())


def _probe(path: Path) -> tuple[bool, tuple[int, int]]:
    """Read only the header: is the image grayscale, and its (H, W) as shown."""
    with Image.open(path) as image:
        grayscale = _is_grayscale(image)
        width, height = image.size
        if image.getexif().get(_EXIF_ORIENTATION) in _ROTATING_ORIENTATIONS:
            width, height = height, width
    return grayscale, (height, width)


def _to_8bit(image: Image.Image) -> Image.Image:
    if image.mode == "I" or image.mode.startswith("I;16"):
        # Treat wide integer images as 16-bit, the depth PNG and TIFF store.
        values = np.asarray(image, dtype=np.float64) / 257
    elif image.mode == "F":
        values = np.nan_to_num(np.asarray(image, dtype=np.float64))
        values = values * 255 if values.max() <= 1 else values
    else:
        return image
    return Image.fromarray(np.rint(np.clip(values, 0, 255)).astype(np.uint8))


def _composite_on_black(image: Image.Image) -> Image.Image:
    # Pillow cannot turn premultiplied modes into RGBA in one step.
    if image.mode in _PREMULTIPLIED:
        image = image.convert(_PREMULTIPLIED[image.mode])
    image = image.convert("RGBA")
    background = Image.new("RGB", image.size)
    background.paste(image.convert("RGB"), mask=image.getchannel("A"))
    return background


def _convert_image(image: Image.Image, mode: str) -> Image.Image:
    """Return ``image`` as it is displayed, in ``mode`` ("L" or "RGB")."""
    image = ImageOps.exif_transpose(image) or image
    image = _to_8bit(image)
    if image.mode in _ALPHA_MODES or "transparency" in image.info:
        return _composite_on_black(image).convert(mode)
    # Go through L or RGB first: Pillow cannot convert every mode to L directly.
    base = "L" if image.mode in ("1", "L") else "RGB"
    return image.convert(base).convert(mode)


def _decode(
    path: Path,
    mode: str,
    size: tuple[int, int],
    conversions: _Conversions | None = None,
) -> np.ndarray:
    """Decode one file to a uint8 (C, H, W) array of the given mode and size.

    ``conversions``, if given, records how the file had to change.
    """
    with Image.open(path) as image:
        image.load()
        converted = _convert_image(image, mode)
        if conversions is not None:
            grayscale = _is_grayscale(image) or (
                # A colour file of gray pixels loses nothing as grayscale.
                mode == "L" and _shows_only_gray(image)
            )
            conversions.note(grayscale, (converted.height, converted.width), 1)
    height, width = size
    if converted.size != (width, height):
        converted = converted.resize((width, height), _RESAMPLE)
    pixels = np.asarray(converted)
    return pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)


def _convert_array(images: np.ndarray, mode: str, size: tuple[int, int]) -> np.ndarray:
    """Convert uint8 (N, C, H, W) arrays as :func:`_decode` converts files."""
    channels = 1 if mode == "L" else 3
    if images.shape[1] == channels and images.shape[2:] == size:
        return images
    height, width = size
    converted = np.empty((len(images), channels, height, width), dtype=np.uint8)
    for index, pixels in enumerate(images):
        image = Image.fromarray(
            pixels[0] if len(pixels) == 1 else pixels.transpose(1, 2, 0)
        )
        image = image.convert(mode).resize((width, height), _RESAMPLE)
        converted[index] = (
            np.asarray(image).reshape(height, width, channels).transpose(2, 0, 1)
        )
    return converted


def _list_class_files(folder: Path) -> list[Path]:
    """All non-hidden files below ``folder``, in sorted order."""
    files: list[Path] = []
    for directory, subdirectories, names in os.walk(folder):
        subdirectories[:] = sorted(d for d in subdirectories if not d.startswith("."))
        files.extend(
            Path(directory, name) for name in sorted(names) if not name.startswith(".")
        )
    return files


def _scan_root(root: Path, skipped: list[str]) -> list[Path]:
    entries = sorted(entry for entry in root.iterdir() if not _is_hidden(entry))
    for entry in entries:
        if not entry.is_dir():
            _skip(entry, "not inside a class folder; move it into one", skipped)
    class_dirs = [entry for entry in entries if entry.is_dir()]
    if len(class_dirs) < 2:
        found = f"only {class_dirs[0].name!r}" if class_dirs else "none"
        raise DataError(
            f"{root} needs at least two class subfolders (found {found}); put each "
            "class's images in its own subfolder"
        )
    return class_dirs


def _probe_class(
    folder: Path, skipped: list[str]
) -> list[tuple[Path, bool, tuple[int, int]]]:
    files = _list_class_files(folder)
    if not files:
        raise DataError(
            f"class folder {folder} is empty; add its images or remove the folder"
        )
    probes = []
    for path in files:
        try:
            probes.append((path, *_probe(path)))
        except _DECODE_ERRORS as error:
            _skip(path, f"not a readable image ({error})", skipped)
    if not probes:
        raise _no_readable_images(folder)
    return probes


def _no_readable_images(folder: Path) -> DataError:
    return DataError(
        f"class folder {folder} has no readable images (every file in it was "
        "skipped, see the warnings); add images or remove the folder"
    )


def _read_image_folder(root: Path, image_size: int | None) -> _Source:
    skipped: list[str] = []
    class_dirs = _scan_root(root, skipped)
    probes = [_probe_class(folder, skipped) for folder in class_dirs]

    flat = [probe for class_probes in probes for probe in class_probes]
    mode = "L" if all(grayscale for _, grayscale, _ in flat) else "RGB"
    size = _common_size([size for _, _, size in flat], image_size)

    images, labels = _decode_classes(class_dirs, probes, mode, size, skipped)
    names = [folder.name for folder in class_dirs]
    return _Source(_folder_name(root), names, images, labels, skipped=skipped)


def _common_size(
    sizes: list[tuple[int, int]], image_size: int | None
) -> tuple[int, int]:
    if image_size is not None:
        return image_size, image_size
    counts = Counter(sizes)
    size = counts.most_common(1)[0][0]
    if len(counts) > 1:
        _logger.info(
            "Images have %d different sizes; resizing %d of them to the most "
            "common size %dx%d (height x width)",
            len(counts),
            len(sizes) - counts[size],
            *size,
        )
    return size


def _decode_classes(
    class_dirs: list[Path],
    probes: list[list[tuple[Path, bool, tuple[int, int]]]],
    mode: str,
    size: tuple[int, int],
    skipped: list[str],
) -> tuple[np.ndarray, np.ndarray]:
    # Decode straight into one preallocated array: holding every decoded image
    # at its original size first could need many times the final memory.
    total = sum(len(class_probes) for class_probes in probes)
    channels = 1 if mode == "L" else 3
    images = np.empty((total, channels, *size), dtype=np.uint8)
    labels = np.empty(total, dtype=np.int64)
    count = 0
    for label, (folder, class_probes) in enumerate(
        zip(class_dirs, probes, strict=True)
    ):
        start = count
        for path, _, _ in class_probes:
            try:
                images[count] = _decode(path, mode, size)
            except _DECODE_ERRORS as error:
                _skip(path, f"not a readable image ({error})", skipped)
                continue
            labels[count] = label
            count += 1
        if count == start:
            raise _no_readable_images(folder)
    return images[:count], labels[:count]


@dataclass
class _Conversions:
    """How prediction inputs differ from what the model was trained on.

    Predictions on resized or recoloured images can be silently worse, so
    :func:`load_prediction_inputs` warns once per kind of change.
    """

    mode: str
    size: tuple[int, int]
    total: int = 0
    resized_from: Counter[tuple[int, int]] = field(default_factory=Counter)
    recoloured: int = 0

    def note(self, grayscale: bool, size: tuple[int, int], count: int) -> None:
        """Record ``count`` inputs of one kind and ``(height, width)``."""
        self.total += count
        if size != self.size:
            self.resized_from[size] += count
        if grayscale != (self.mode == "L"):
            self.recoloured += count

    def warn(self, source: Path) -> None:
        """Log a warning for each kind of change the inputs needed."""
        resized = sum(self.resized_from.values())
        if resized:
            _logger.warning(
                "Resizing %s from %s to %dx%d (height x width), the size the model "
                "was trained on; predictions can be less accurate than on images "
                "of that size",
                self._subject(resized, source),
                _list_sizes(self.resized_from),
                *self.size,
            )
        if self.recoloured and self.mode == "L":
            _logger.warning(
                "Converting %s from colour to grayscale: the model was trained on "
                "grayscale images",
                self._subject(self.recoloured, source),
            )
        elif self.recoloured:
            _logger.warning(
                "Converting %s from grayscale to colour (RGB): the model was "
                "trained on colour images, so grayscale inputs can be predicted "
                "poorly",
                self._subject(self.recoloured, source),
            )

    def _subject(self, count: int, source: Path) -> str:
        if self.total == 1:
            return str(source)
        if count == self.total:
            return f"all {count} images in {source}"
        return f"{count} of {self.total} images in {source}"


def _list_sizes(sizes: Counter[tuple[int, int]], limit: int = 3) -> str:
    """The most common ``(height, width)`` sizes as ``HxW``, most common first."""
    listed = ", ".join(f"{h}x{w}" for (h, w), _ in sizes.most_common(limit))
    others = len(sizes) - limit
    return listed + (f" and {_plural(others, 'other size')}" if others > 0 else "")


def _decode_prediction_file(
    path: Path, mode: str, size: tuple[int, int], conversions: _Conversions
) -> np.ndarray:
    try:
        return _decode(path, mode, size, conversions)[None]
    except _DECODE_ERRORS as error:
        raise DataError(
            f"{path} is not a readable image ({error}); pass an image file, a "
            "folder of images or an .npz file with an array x"
        ) from error


def _decode_prediction_folder(
    folder: Path, mode: str, size: tuple[int, int], conversions: _Conversions
) -> tuple[np.ndarray, list[str]]:
    # Searched like a training folder, since users often point predict at one
    # laid out by class; relative names keep same-named files apart.
    relative = sorted(
        (path.relative_to(folder) for path in _list_class_files(folder)),
        key=lambda path: path.parts,
    )
    decoded: list[np.ndarray] = []
    names: list[str] = []
    skipped: list[str] = []
    for name in relative:
        try:
            decoded.append(_decode(folder / name, mode, size, conversions))
        except _DECODE_ERRORS as error:
            _skip(folder / name, f"not a readable image ({error})", skipped)
            continue
        names.append(name.as_posix())
    if not decoded:
        raise DataError(
            f"{folder} holds no readable images ({_plural(len(skipped), 'file')} "
            "skipped); add image files to it or to its subfolders"
        )
    _log_subfolder_counts(names)
    return np.stack(decoded), names


def _log_subfolder_counts(names: list[str]) -> None:
    counts = Counter(name.split("/")[0] for name in names if "/" in name)
    for subfolder, count in sorted(counts.items()):
        _logger.debug("Found %s in subfolder %s", _plural(count, "image"), subfolder)


def _read_prediction_npz(
    path: Path, mode: str, size: tuple[int, int], conversions: _Conversions
) -> tuple[np.ndarray, list[str]]:
    arrays, found = _load_npz(path, ("x",), _NPZ_PREDICTION)
    _require_npz_array("x", found, path, "store the images to predict as x")
    images = _images_from_array(arrays["x"], f"array 'x' in {path}")
    height, width = images.shape[2:]
    # As for files: colour channels that are all equal lose nothing as gray.
    grayscale = images.shape[1] == 1 or (
        mode == "L" and bool((images == images[:, :1]).all())
    )
    conversions.note(grayscale, (height, width), len(images))
    converted = _convert_array(images, mode, size)
    return converted, [f"row-{index}" for index in range(len(converted))]


def _test_labels(data: _Source) -> np.ndarray:
    return data.test_labels if data.test_labels is not None else data.labels


def _class_counts(labels: np.ndarray, num_classes: int) -> np.ndarray:
    return np.bincount(labels, minlength=num_classes)


def _check_class_counts(data: _Source) -> None:
    if len(data.class_names) < 2:
        raise DataError(
            f"{data.name} has only one class ({data.class_names[0]!r}); a "
            "classifier needs at least two"
        )
    own_test = data.test_labels is not None
    # An empty test split was left out on purpose (dataset_from_arrays), so no
    # class is missing from it.
    if data.test_labels is not None and len(data.test_labels):
        _warn_missing_test_classes(data, data.test_labels)
    needed = 2 if own_test else 3
    counts = _class_counts(data.labels, len(data.class_names))
    empty = np.flatnonzero(counts == 0)
    if len(empty):
        raise _skipped_labels_error(data, empty)
    short = np.flatnonzero(counts < needed)
    if len(short) == 0:
        return

    listed = ", ".join(
        f"class {data.class_names[c]!r} has {_plural(int(counts[c]), 'image')}"
        for c in short[:5]
    )
    more = f" (and {len(short) - 5} more classes)" if len(short) > 5 else ""
    splits = "train and validation" if own_test else "train, validation and test"
    raise DataError(
        f"{listed}{more}; each class needs at least {needed} images, one for each "
        f"of {splits}: add images or remove the class"
    )


def _skipped_labels_error(data: _Source, empty: np.ndarray) -> DataError:
    # Only labels read from arrays (npz, IDX, in memory) can leave a class
    # without images, and "add images" does not help there: the numbering does.
    named = [_label_and_name(data.class_names, int(label)) for label in empty]
    listed = ", ".join(named[:10]) + (
        f" and {len(named) - 10} more" if len(named) > 10 else ""
    )
    return DataError(
        f"{data.labels_from} skips the labels {listed} (no image has them), so "
        "those classes would have no images; renumber the labels 0..K-1 for the "
        "K classes that have images (numpy.unique(labels, return_inverse=True) "
        "does it) and give class_names (or classes.txt) one name per class in "
        "that order"
    )


def _label_and_name(class_names: list[str], label: int) -> str:
    name = class_names[label]
    return str(label) if name == str(label) else f"{label} ({name!r})"


def _warn_missing_test_classes(data: _Source, test_labels: np.ndarray) -> None:
    # The data set chose its own test split, so a class missing there is its
    # authors' decision to report, not a reason to refuse the data.
    counts = _class_counts(test_labels, len(data.class_names))
    missing = [data.class_names[c] for c in np.flatnonzero(counts == 0)]
    if missing:
        _logger.warning(
            "The test split of %s has no images of classes %s; test accuracy "
            "will not cover them",
            data.name,
            missing,
        )


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _allocate(weights: np.ndarray, total: int, upper: np.ndarray) -> np.ndarray:
    """Share ``total`` among classes in proportion to ``weights``.

    Each class with room gets at least one and at most ``upper``; rounding
    follows the largest remainder so the shares sum exactly to ``total``
    (clipped to what the bounds allow).
    """
    lower = np.minimum(upper, 1)
    total = int(np.clip(total, lower.sum(), upper.sum()))
    ideal = weights * (total / weights.sum())
    quota = np.clip(np.floor(ideal).astype(np.int64), lower, upper)
    while (missing := total - int(quota.sum())) != 0:
        gap = ideal - quota
        if missing > 0:
            gap[quota >= upper] = -np.inf
            quota[int(np.argmax(gap))] += 1
        else:
            gap[quota <= lower] = np.inf
            quota[int(np.argmin(gap))] -= 1
    return quota


def _split_indices(
    data: _Source,
    validation_fraction: float,
    test_fraction: float,
    rng: np.random.Generator,
) -> dict[str, np.ndarray]:
    # Our own allocation rather than sklearn's train_test_split: its stratified
    # rounding can leave a small class out of a split, and every split must hold
    # every class.
    labels = data.labels
    counts = _class_counts(labels, len(data.class_names))
    if data.test_labels is not None:
        test_quota = np.zeros_like(counts)
    else:
        test_quota = _allocate(counts, round(len(labels) * test_fraction), counts - 2)
    remaining = counts - test_quota
    validation_quota = _allocate(
        remaining, round(len(labels) * validation_fraction), remaining - 1
    )

    by_class = np.split(np.argsort(labels, kind="stable"), np.cumsum(counts)[:-1])
    parts: dict[str, list[np.ndarray]] = {"train": [], "validation": [], "test": []}
    for members, n_test, n_validation in zip(
        by_class, test_quota, validation_quota, strict=True
    ):
        members = rng.permutation(members)
        parts["test"].append(members[:n_test])
        parts["validation"].append(members[n_test : n_test + n_validation])
        parts["train"].append(members[n_test + n_validation :])

    # Shuffle each split so no consumer sees images grouped by class.
    indices = {split: rng.permutation(np.concatenate(p)) for split, p in parts.items()}
    if data.test_labels is not None:
        # A data set's own test split stays whole and in its original order.
        indices["test"] = np.arange(len(data.test_labels))
    return indices


def _cap_indices(
    indices: np.ndarray,
    pool_labels: np.ndarray,
    cap: int | None,
    parameter: str,
    rng: np.random.Generator,
) -> np.ndarray:
    if cap is None or cap >= len(indices):
        return indices
    labels = pool_labels[indices]
    counts = np.bincount(labels)
    present = int(np.count_nonzero(counts))
    if cap < present:
        raise DataError(
            f"{parameter} must be at least the number of classes ({present}) so "
            f"every class keeps an image, got {cap}"
        )

    quota = _allocate(counts, cap, counts)
    keep = np.zeros(len(indices), dtype=bool)
    for label in np.flatnonzero(quota):
        members = np.flatnonzero(labels == label)
        keep[rng.choice(members, size=quota[label], replace=False)] = True
    # A boolean mask keeps the split's existing order.
    return indices[keep]


def _build_dataset(
    data: _Source, indices: dict[str, np.ndarray], image_size: int | None
) -> ImageDataset:
    test_images = data.test_images if data.test_images is not None else data.images
    pools = {
        "train": (data.images, data.labels),
        "validation": (data.images, data.labels),
        "test": (test_images, _test_labels(data)),
    }
    mode = "L" if data.images.shape[1] == 1 else "RGB"
    tensors: dict[str, torch.Tensor] = {}
    for split, (images, labels) in pools.items():
        chosen = images[indices[split]]
        if image_size is not None:
            chosen = _convert_array(chosen, mode, (image_size, image_size))
        tensors[f"{split}_images"] = _to_tensor(chosen)
        tensors[f"{split}_labels"] = _to_tensor(labels[indices[split]])
    dataset = ImageDataset(
        name=data.name,
        class_names=list(data.class_names),
        skipped_files=list(data.skipped),
        **tensors,
    )
    _logger.info("Loaded %s", dataset.describe())
    return dataset


def _to_tensor(array: np.ndarray) -> torch.Tensor:
    # torch.from_numpy shares memory, so hand it a private, writable, C-ordered
    # array; fancy indexing above has usually made one already.
    return torch.from_numpy(np.require(array, requirements=["C", "W", "O"]))
