"""EnsembleClassifier: fit on a slice of digits, predict, re-select, refuse bad input.

One estimator is fitted for the whole module (a short search on Ray) with string
labels, so every test also shows that labels round-trip.
"""

from __future__ import annotations

import pickle
import re

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.datasets import load_digits
from sklearn.exceptions import NotFittedError

from deepens import EnsembleClassifier
from deepens.errors import BudgetError, DataError, SearchError
from deepens.library import Library
from deepens.selection import SelectionError

pytestmark = pytest.mark.slow

TRAIN = 400


@pytest.fixture(scope="module")
def digits():
    bunch = load_digits()
    # Floats in [0, 1], as a scikit-learn user would scale them.
    images = bunch.images[: TRAIN + 100] / 16
    labels = np.array([f"digit-{target}" for target in bunch.target[: TRAIN + 100]])
    return images[:TRAIN], labels[:TRAIN], images[TRAIN:], labels[TRAIN:]


@pytest.fixture(scope="module")
def fitted(digits):
    train_images, train_labels, _, _ = digits
    estimator = EnsembleClassifier(
        max_trials=3,
        max_epochs=2,
        max_concurrent_trials=2,
        # Every model is a candidate, so a smaller budget can change the ensemble.
        pruning_fraction=1.0,
    )
    return estimator.fit(train_images, train_labels)


@pytest.fixture
def restored(fitted):
    """The shared estimator, given back with its fitted selection afterwards."""
    yield fitted
    fitted.set_params(cost_unit="seconds").select_budget(None)


def _snapshot(library: Library) -> dict[str, dict[str, str]]:
    return {entry.model_id: entry.files for entry in library.entries()}


def _cheapest_cost(estimator: EnsembleClassifier) -> float:
    library = Library.open(estimator.library_path_)
    return min(entry.cost(estimator.cost_unit) for entry in library.entries())


# ------------------------------------------------------------- prediction
def test_predictions_are_original_labels(fitted, digits):
    _, train_labels, test_images, _ = digits

    predicted = fitted.predict(test_images)

    assert list(fitted.classes_) == sorted(set(train_labels))
    assert predicted.shape == (len(test_images),)
    assert set(predicted) <= set(fitted.classes_)
    assert predicted.dtype.kind == "U"


def test_probabilities_have_a_column_per_class_and_rows_sum_to_one(fitted, digits):
    _, _, test_images, _ = digits

    probabilities = fitted.predict_proba(test_images)

    assert probabilities.shape == (len(test_images), len(fitted.classes_))
    assert np.all(probabilities >= 0)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=0, atol=1e-12)
    predicted = fitted.classes_[probabilities.argmax(axis=1)]
    assert list(predicted) == list(fitted.predict(test_images))


def test_score_is_far_better_than_chance(fitted, digits):
    _, _, test_images, test_labels = digits

    assert fitted.score(test_images, test_labels) > 0.3


def test_every_layout_of_the_fitted_shape_predicts_alike(fitted, digits):
    _, _, test_images, _ = digits
    pixels = np.rint(test_images[:20] * 255).astype(np.uint8)

    layouts = [pixels, pixels[..., None], pixels[:, None]]
    results = [fitted.predict_proba(images) for images in layouts]

    np.testing.assert_allclose(results[1], results[0])
    np.testing.assert_allclose(results[2], results[0])


@pytest.mark.parametrize(
    ("shape", "received"),
    [((5, 9, 8), "(1, 9, 8)"), ((5, 8, 8, 3), "(3, 8, 8)")],
)
def test_images_of_another_shape_name_expected_and_received(fitted, shape, received):
    with pytest.raises(DataError) as raised:
        fitted.predict(np.zeros(shape, dtype=np.uint8))

    message = str(raised.value)
    assert received in message and "fitted on (1, 8, 8)" in message
    assert "(N, 8, 8)" in message


def test_flat_feature_rows_are_refused_with_a_reshape_hint(fitted):
    with pytest.raises(DataError, match=r"shape \(5, 64\).*reshape"):
        fitted.predict(np.zeros((5, 64)))


# ---------------------------------------------------------------- fitting
def test_fitted_attributes_describe_the_selection(fitted):
    assert fitted.image_shape_ == (1, 8, 8) and fitted.n_features_in_ == 64
    assert 0 < fitted.cost_ <= fitted.budget_
    assert fitted.report_.rows[0].cost == fitted.cost_
    assert (fitted.ensemble_path_ / "ensemble.json").is_file()
    assert fitted.ensemble_.class_names == [str(c) for c in fitted.classes_]
    assert fitted.search_summary_.library_size == len(
        Library.open(fitted.library_path_).entries()
    )


def test_library_has_no_test_split_and_every_model_a_cost(fitted):
    library = Library.open(fitted.library_path_)

    assert library.test_labels is None
    assert len(library.validation_labels) == 60  # 15 % of 400
    for entry in library.entries():
        assert entry.cost_seconds > 0 and "test" not in entry.files
    row = fitted.report_.rows[0]
    assert row.test_loss is None and row.test_error is None


def test_default_budget_is_the_cost_of_the_whole_pruned_library(fitted):
    library = Library.open(fitted.library_path_)
    # pruning_fraction=1.0 keeps every model.
    total = sum(entry.cost_seconds for entry in library.entries())

    assert fitted.budget is None
    assert fitted.budget_ == pytest.approx(max(total, 4 * _cheapest_cost(fitted)))


# ------------------------------------------------------------- re-selection
def test_a_smaller_budget_is_answered_without_training(restored):
    before = _snapshot(Library.open(restored.library_path_))
    previous_cost = restored.cost_
    cheapest = _cheapest_cost(restored)
    smaller = cheapest + (previous_cost - cheapest) / 2

    returned = restored.select_budget(smaller)

    assert returned is restored and restored.budget == smaller
    assert restored.cost_ <= smaller <= previous_cost
    assert _snapshot(Library.open(restored.library_path_)) == before


def test_set_params_changes_the_unit_of_the_next_selection(restored, digits):
    _, _, test_images, _ = digits

    restored.set_params(cost_unit="flops").select_budget(None)

    assert restored.report_.cost_unit == "flops" == restored.ensemble_.cost_unit
    assert restored.cost_ <= restored.budget_
    assert restored.predict(test_images[:3]).shape == (3,)


def test_a_budget_below_the_cheapest_model_names_its_cost(restored):
    cheapest = _cheapest_cost(restored)
    ensemble, cost = restored.ensemble_, restored.cost_

    with pytest.raises(BudgetError, match=re.escape(f"at least {cheapest:g}")):
        restored.select_budget(cheapest / 10)

    assert restored.ensemble_ is ensemble and restored.cost_ == cost
    assert restored.budget is None


def test_an_estimator_in_a_temporary_folder_refuses_pickling(fitted):
    with pytest.raises(TypeError, match="work_dir"):
        pickle.dumps(fitted)


def test_an_estimator_with_a_work_dir_pickles_and_predicts_alike(fitted, digits):
    _, _, test_images, _ = digits
    # The fitted state as fit(work_dir=...) leaves it: no temporary folder owned.
    work_dir = fitted.library_path_.parent
    owner = EnsembleClassifier(**{**fitted.get_params(), "work_dir": work_dir})
    owner.__dict__.update({k: v for k, v in vars(fitted).items() if k.endswith("_")})

    copy = pickle.loads(pickle.dumps(owner))

    np.testing.assert_array_equal(
        copy.predict_proba(test_images), fitted.predict_proba(test_images)
    )


# ----------------------------------------------------------------- misuse
def test_an_unfitted_estimator_raises_not_fitted(digits):
    _, _, test_images, _ = digits
    estimator = EnsembleClassifier()

    for call in (estimator.predict, estimator.predict_proba):
        with pytest.raises(NotFittedError):
            call(test_images)
    with pytest.raises(NotFittedError):
        estimator.select_budget(1.0)


def test_clone_copies_parameters_not_the_fit(fitted):
    copy = clone(fitted)

    assert copy.get_params() == fitted.get_params()
    with pytest.raises(NotFittedError):
        copy.predict(np.zeros((1, 8, 8)))


@pytest.fixture
def no_training(monkeypatch):
    """Fail the test if fit gets as far as the search."""

    def refuse(*args, **kwargs):
        raise AssertionError("fit started the search despite invalid input")

    monkeypatch.setattr(EnsembleClassifier, "_build_library", refuse)


_IMAGES = np.zeros((12, 8, 8))
_LABELS = np.arange(12) % 2


@pytest.mark.parametrize(
    ("parameters", "images", "labels", "error", "pattern"),
    [
        ({}, np.zeros(12), _LABELS, DataError, r"shape \(12,\).*\(N, H, W\)"),
        ({}, _IMAGES, _LABELS[:11], DataError, "11 labels but x holds 12 images"),
        ({}, _IMAGES, np.full(12, "cat"), DataError, "only one class \\('cat'\\)"),
        ({}, _IMAGES, np.linspace(0, 1, 12), ValueError, "continuous"),
        (
            {"optimizer": "bohbb"},
            _IMAGES,
            _LABELS,
            SearchError,
            "optimizer 'bohbb' is unknown; choose one of asha, random, hyperband",
        ),
        (
            {"budget": -1.0},
            _IMAGES,
            _LABELS,
            SelectionError,
            "budget must be a positive finite number; received -1.0",
        ),
        (
            {"cost_unit": "joules"},
            _IMAGES,
            _LABELS,
            SelectionError,
            "cost_unit must be one of 'seconds', 'flops', 'parameters'; "
            "received 'joules'",
        ),
        (
            {"device": "tpu"},
            _IMAGES,
            _LABELS,
            SearchError,
            "device must be one of 'cpu', 'cuda', 'auto'; received 'tpu'",
        ),
        (
            {"random_state": -1},
            _IMAGES,
            _LABELS,
            SearchError,
            "random_state must be a non-negative integer or None; received -1",
        ),
        (
            {"validation_fraction": 1.5},
            _IMAGES,
            _LABELS,
            DataError,
            "validation_fraction must be a number strictly between 0 and 1, got 1.5",
        ),
        (
            {"max_trials": 0},
            _IMAGES,
            _LABELS,
            SearchError,
            r"max_trials \(--max-trials\) must be a whole number >= 1; got 0",
        ),
    ],
)
def test_invalid_input_is_refused_before_training(
    no_training, parameters, images, labels, error, pattern
):
    with pytest.raises(error, match=pattern):
        EnsembleClassifier(**parameters).fit(images, labels)


def test_a_class_with_one_image_is_named(no_training):
    labels = np.array([0] * 6 + [1] * 5 + [2])

    with pytest.raises(DataError, match="class '2' has 1 image"):
        EnsembleClassifier().fit(_IMAGES, labels)


def test_fixable_input_mistakes_arrive_as_python_warnings(fitted, digits):
    _, _, images, _ = digits

    # Pixels scaled 0..16 (scikit-learn's digits as loaded) instead of 0..1.
    with pytest.warns(UserWarning, match="uint8"):
        fitted.predict(images * 16)
