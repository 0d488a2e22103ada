"""Validation and pruning (SMOBF step 1) and every bad input they catch."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pytest
from selection_helpers import binary_models, random_library, zero_labels

from deepens.errors import LibraryError
from deepens.selection import SelectionError, prepare_library, smobf


def ten_models() -> list[np.ndarray]:
    # Model m has t = 0.9 - 0.05 m: losses rise with the index.
    return binary_models([[0.9 - 0.05 * m] * 2 for m in range(10)])


@pytest.mark.parametrize(
    ("fraction", "kept"),
    [
        (0.2, (0, 1)),  # ceil(0.2 * 10) = 2
        (0.25, (0, 1, 2)),  # ceil(2.5) = 3
        (0.01, (0,)),  # max(1, ceil(0.1)) = 1
        (0.7, (0, 1, 2, 3, 4, 5, 6)),  # 0.7 * 10 = 7.000000000000001 -> 7, not 8
        (1.0, tuple(range(10))),
    ],
)
def test_pruning_keeps_max_1_ceil_x_m_best(fraction: float, kept: tuple) -> None:
    models = ten_models()[::-1]  # best last, so kept indices are the high ones
    with prepare_library(
        models, zero_labels(2), [1] * 10, pruning_fraction=fraction
    ) as lib:
        assert lib.model_indices == tuple(sorted(9 - i for i in kept))


def test_pruning_counts_only_finite_models(caplog: pytest.LogCaptureFixture) -> None:
    # 9 finite models: ceil(0.2 * 9) = 2 kept; model 0 (the best) is NaN.
    models = ten_models()
    models[0] = models[0].copy()
    models[0][1, 0] = np.nan
    names = [f"m{i}" for i in range(10)]
    with caplog.at_level(logging.WARNING, logger="deepens.selection"):
        library = prepare_library(models, zero_labels(2), [1] * 10, model_names=names)
    assert library.model_indices == (1, 2)
    assert library.dropped == (0,)
    assert "Leaving out model 'm0': its validation predictions contain NaN" in (
        caplog.text
    )


def test_ties_at_the_pruning_cut_go_to_the_lower_index() -> None:
    models = binary_models([[0.8, 0.8]] * 5)
    with prepare_library(models, zero_labels(2), [1] * 5, pruning_fraction=0.4) as lib:
        assert lib.model_indices == (0, 1)


def test_model_losses_replace_reading_predictions_for_pruning() -> None:
    # The given losses rank model 3 best, whatever the predictions say.
    losses = [0.9, 0.8, 0.7, 0.1, 1.0]
    with prepare_library(
        ten_models()[:5],
        zero_labels(2),
        [1] * 5,
        model_losses=losses,
        pruning_fraction=0.2,
    ) as library:
        assert library.model_indices == (3,)


def test_non_finite_model_loss_leaves_the_model_out(
    caplog: pytest.LogCaptureFixture,
) -> None:
    losses = [math.inf, 0.8, 0.7]
    with caplog.at_level(logging.WARNING, logger="deepens.selection"):
        library = prepare_library(
            ten_models()[:3],
            zero_labels(2),
            [1] * 3,
            model_losses=losses,
            pruning_fraction=1,
        )
    assert library.model_indices == (1, 2)
    assert "model #0: its validation loss in model_losses is not finite" in caplog.text


def test_infinity_outside_the_true_class_is_caught_on_a_kept_model(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Model 0 is the best by true-class loss, but holds an infinity in class 1;
    # it is left out and the next best (model 1) takes its place.
    models = ten_models()[:5]
    models[0] = models[0].copy()
    models[0][0, 1] = np.inf
    with caplog.at_level(logging.WARNING, logger="deepens.selection"):
        library = prepare_library(models, zero_labels(2), [1] * 5, pruning_fraction=0.2)
    assert library.model_indices == (1,)
    assert library.dropped == (0,)
    assert "model #0" in caplog.text


def test_every_model_non_finite() -> None:
    models = [np.full((2, 2), np.nan)]
    with pytest.raises(LibraryError, match="every model's validation predictions"):
        prepare_library(models, zero_labels(2), [1])


def test_logits_are_rejected_naming_the_model() -> None:
    models = ten_models()[:2]
    models[1] = np.array([[2.0, -1.0], [0.5, -3.0]])
    with pytest.raises(
        LibraryError, match=r"model 'b'.*not probabilities.*looks like logits; apply"
    ):
        prepare_library(models, zero_labels(2), [1, 1], model_names=["a", "b"])


def test_negative_values_outside_the_true_class_are_rejected() -> None:
    models = [np.array([[0.9, -0.1, 0.2], [0.5, 0.6, -0.1]])]
    with pytest.raises(
        LibraryError, match=r"model #0: .*negative values \(min -0.1\).*apply softmax"
    ):
        prepare_library(models, zero_labels(2), [1])


def test_rows_not_summing_to_one_are_rejected() -> None:
    models = [np.array([[0.3, 0.2], [0.5, 0.4]])]
    with pytest.raises(LibraryError, match=r"model #0: .*row 0 sums to 0.5"):
        prepare_library(models, zero_labels(2), [1])


def test_float16_rounding_of_row_sums_is_accepted() -> None:
    # 3 classes of 1/3 in float16 sum to 0.99951171875.
    models = [np.full((4, 3), 1 / 3, dtype=np.float16)]
    assert models[0].astype(np.float64).sum(axis=1)[0] != 1.0
    with prepare_library(models, np.array([0, 1, 2, 0]), [1]) as library:
        assert smobf(library, 1.0).validation_loss == pytest.approx(math.log(3))


def test_shape_mismatch_names_the_model() -> None:
    models = ten_models()[:3]
    models[2] = np.full((3, 2), 0.5)
    with pytest.raises(
        LibraryError, match=r"model 'c': .*shape \(3, 2\); expected \(2, 2\)"
    ):
        prepare_library(models, zero_labels(2), [1] * 3, model_names=["a", "b", "c"])


def test_num_classes_must_match_the_predictions() -> None:
    with pytest.raises(LibraryError, match=r"model #0: .*3 classes as in num_classes"):
        prepare_library(ten_models()[:1], zero_labels(2), [1], num_classes=3)


def test_memmaps_are_accepted(tmp_path: Path) -> None:
    predictions, labels, costs = random_library(4, 30, 3, seed=0)
    paths = []
    for index, array in enumerate(predictions):
        paths.append(tmp_path / f"model{index}.npy")
        np.save(paths[-1], array)
    mapped = [np.load(path, mmap_mode="r") for path in paths]
    with prepare_library(mapped, labels, costs, pruning_fraction=1) as from_disk:
        on_disk = smobf(from_disk, 5.0)
    with prepare_library(predictions, labels, costs, pruning_fraction=1) as in_memory:
        assert smobf(in_memory, 5.0) == on_disk


@pytest.mark.parametrize(
    ("keyword", "value", "message"),
    [
        (
            "pruning_fraction",
            0.0,
            r"pruning_fraction must be a number in \(0, 1\]; received 0.0",
        ),
        ("pruning_fraction", 1.5, r"pruning_fraction must be .*received 1.5"),
        ("pruning_fraction", float("nan"), r"pruning_fraction must be .*received nan"),
        (
            "device",
            "tpu",
            r"device must be one of 'cpu', 'cpu-torch', 'cuda'.*received 'tpu'",
        ),
        ("shards", 0, r"shards must be a positive integer; received 0"),
        ("shards", 5, r"shards must be at most the number of validation samples \(2\)"),
        ("model_names", ["a"], r"model_names must be 2 names, one per model"),
        ("model_losses", [0.1], r"model_losses must be 2 losses, one per model"),
    ],
)
def test_invalid_settings_name_parameter_allowed_and_received(
    keyword: str, value: object, message: str
) -> None:
    with pytest.raises(SelectionError, match=message):
        prepare_library(ten_models()[:2], zero_labels(2), [1, 1], **{keyword: value})


def test_cuda_without_a_gpu_is_refused() -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(SelectionError, match="device 'cuda' needs a CUDA GPU"):
        prepare_library(ten_models()[:2], zero_labels(2), [1, 1], device="cuda")


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        (np.array([0.0, 1.0]), r"validation_labels must be integer class indices"),
        (np.array([0, 2]), r"validation_labels must be class indices in \[0, 2\)"),
        (np.zeros((2, 1), int), r"validation_labels must be a non-empty 1-D array"),
    ],
)
def test_bad_labels(labels: np.ndarray, message: str) -> None:
    with pytest.raises(SelectionError, match=message):
        prepare_library(ten_models()[:2], labels, [1, 1])


@pytest.mark.parametrize(
    ("costs", "message"),
    [
        ([1.0], r"costs must be 2 costs, one per model; received 'shape \(1,\)'"),
        ([1.0, -2.0], r"costs\[1\] \(model #1\) must be a finite, non-negative"),
        ([float("nan"), 1.0], r"costs\[0\] \(model #0\) must be a finite"),
    ],
)
def test_bad_costs(costs: list[float], message: str) -> None:
    with pytest.raises(SelectionError, match=message):
        prepare_library(ten_models()[:2], zero_labels(2), costs)


def test_empty_library() -> None:
    with pytest.raises(LibraryError, match="the library is empty"):
        prepare_library([], zero_labels(2), [])


def test_float16_widening_is_exact_for_every_bit_pattern() -> None:
    from deepens.selection._arrays import as_float64

    every = np.arange(2**16, dtype=np.uint32).astype(np.uint16).view(np.float16)
    with np.errstate(invalid="ignore"):
        expected = every.astype(np.float64)
    np.testing.assert_array_equal(as_float64(every.reshape(256, 256)).ravel(), expected)
    assert as_float64(np.array([0.5], np.float32)).dtype == np.float64
