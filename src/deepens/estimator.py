"""A scikit-learn style classifier: ``fit`` searches, ``predict`` uses the ensemble.

:class:`EnsembleClassifier` chains what ``deepens run`` does on in-memory
arrays: it holds out a validation split, trains a library of networks with the
hyperparameter search, measures each model's inference cost, and loads the
SMOBF ensemble for the budget. :meth:`EnsembleClassifier.select_budget` answers
a new budget from the same library without training again.

Torch and Ray are imported only when an estimator is fitted or used, so that
importing this module stays cheap.
"""

from __future__ import annotations

import functools
import logging
import math
import numbers
import os
import secrets
import shutil
import tempfile
import warnings
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self, TypeVar

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, column_or_1d

from deepens.errors import DataError, LibraryError, SearchError
from deepens.library import COST_UNITS, Library
from deepens.selection import SelectionError
from deepens.selection.library import check_budget_value, check_pruning_fraction
from deepens.space import SearchSpace
from deepens.workflow import SelectionReport, default_budgets, select, usable_entries

if TYPE_CHECKING:
    import torch
    from sklearn.utils import Tags

    from deepens.data import ImageDataset
    from deepens.ensemble import Ensemble
    from deepens.search import SearchSettings, SearchSummary

__all__ = ["EnsembleClassifier"]

_logger = logging.getLogger(__name__)

_DEVICES = ("cpu", "cuda", "auto")
_METHOD = "smobf"


@dataclass
class _Selection:
    """The outcome of one selection: what becomes the fitted attributes."""

    budget: float
    report: SelectionReport
    ensemble: Ensemble
    ensemble_path: Path


class _WarningBridge(logging.Handler):
    """Re-issues deepens' logged warnings as Python warnings."""

    def emit(self, record: logging.LogRecord) -> None:
        warnings.warn(record.getMessage(), UserWarning, stacklevel=2)


_Method = TypeVar("_Method", bound=Callable[..., Any])


def _warns_in_python(method: _Method) -> _Method:
    """Show deepens' warnings the way scikit-learn users expect them.

    The library logs fixable mistakes (resized inputs, float pixel ranges,
    pruning that keeps few models); a script that never configured logging would
    not see them, so while an estimator method runs they also become
    ``UserWarning``s (filter them with :mod:`warnings` as usual).
    """

    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        bridge = _WarningBridge(level=logging.WARNING)
        package = logging.getLogger("deepens")
        package.addHandler(bridge)
        try:
            return method(*args, **kwargs)
        finally:
            package.removeHandler(bridge)

    return wrapper  # type: ignore[return-value]


class EnsembleClassifier(ClassifierMixin, BaseEstimator):
    """The most accurate ensemble of deep image classifiers within a budget.

    ``fit`` holds out a stratified validation split, runs the hyperparameter
    search on Ray Tune to train a library of ResNet-family networks, measures
    each network's inference cost, and loads the ensemble that SMOBF selects
    for ``budget``. :meth:`select_budget` re-selects for another budget from
    the same library, without training.

    Parameters
    ----------
    budget : float or None
        Inference budget in ``cost_unit``. ``None`` takes the largest of
        deepens' default budgets: the summed cost of the pruned library, so
        the best ensemble SMOBF can build from it.
    cost_unit : {"seconds", "flops", "parameters"}
        Unit of ``budget``: seconds to predict 2,000 images on ``device``
        (measured), or the deterministic FLOPs or parameter counts.
    space : str, path or SearchSpace
        Search space: a preset (``"small"``, ``"paper"``), a JSON file, or a
        :class:`~deepens.space.SearchSpace`.
    optimizer : {"asha", "random", "hyperband", "bohb", "tpe", "gp", "ga", "smac"}
        Hyperparameter optimiser (see :mod:`deepens.optimizers`).
    max_trials : int
        Trials to start at most.
    time_budget_s : float or None
        Wall-time limit of the search in seconds.
    max_epochs : int
        Epochs a trial trains at most.
    grace_period : int
        Epochs every trial trains before the scheduler may stop it.
    reduction_factor : int
        Of each scheduler rung, 1 in ``reduction_factor`` trials continues.
    cpus_per_trial, gpus_per_trial : float
        Resources each trial reserves; fractional GPUs share one device.
    max_concurrent_trials : int or None
        Trials running at once; ``None`` lets Ray fill the resources.
    validation_fraction : float
        Share of the training images held out to validate the trials and to
        select the ensemble, in (0, 1).
    pruning_fraction : float
        Share of the library, best first by validation loss, that SMOBF
        chooses from, in (0, 1].
    device : {"cpu", "cuda", "auto"}
        Where costs are measured and predictions run.
    cost_threads : int
        CPU threads when measuring costs (the same for every model).
    work_dir : str, path or None
        Folder for the library (``library/``) and the selected ensembles
        (``ensembles/``). An existing library there for the same data and
        ``random_state`` is extended. ``None`` uses a temporary folder that is
        deleted with the estimator.
    random_state : int or None
        Seed of the validation split, the optimiser and the networks'
        initialisation; ``None`` draws a fresh one at each ``fit``.

    Attributes
    ----------
    classes_ : numpy.ndarray
        The labels seen in ``fit``, sorted; ``predict`` returns these values.
    image_shape_ : tuple of int
        ``(channels, height, width)`` of the images seen in ``fit``.
    n_features_in_ : int
        Pixel values per image, ``channels * height * width``.
    library_path_ : pathlib.Path
        The library folder.
    ensemble_ : deepens.ensemble.Ensemble
        The selected ensemble.
    ensemble_path_ : pathlib.Path
        Its saved, self-contained folder (usable with ``deepens predict``).
    budget_ : float
        The budget it was selected for, in ``cost_unit``.
    cost_ : float
        Its cost in ``cost_unit``; at most ``budget_``.
    report_ : deepens.workflow.SelectionReport
        The selection: the ensemble's validation scores, the best single
        model and every candidate model.
    search_summary_ : deepens.search.SearchSummary
        Trials started, finished, stopped early and failed.
    random_state_ : int
        The seed used.

    Notes
    -----
    Images may be ``(N, H, W)``, ``(N, H, W, C)`` or ``(N, C, H, W)`` with
    ``C`` 1 or 3; channels-last wins when both could apply. Pixels are uint8,
    integers 0..255, or floats in [0, 1] or [0, 255]; each array is read as a
    whole, so a float array whose values all lie in [0, 1] counts as
    normalised. Pass uint8 to leave no doubt.

    Change ``budget`` of a fitted estimator with :meth:`select_budget`;
    ``set_params(budget=...)`` only takes effect at the next ``fit``.

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from deepens import EnsembleClassifier
    >>> digits = load_digits()
    >>> images, labels = digits.images[:400] / 16, digits.target[:400]
    >>> model = EnsembleClassifier(max_trials=3, max_epochs=2)
    >>> model = model.fit(images[:300], labels[:300])  # doctest: +SKIP
    >>> model.predict(images[300:305]).shape  # doctest: +SKIP
    (5,)

    Half the budget, answered from the same library without training:

    >>> model = model.select_budget(model.budget_ / 2)  # doctest: +SKIP
    >>> bool(model.cost_ <= model.budget_)  # doctest: +SKIP
    True
    """

    def __init__(
        self,
        budget: float | None = None,
        cost_unit: str = "seconds",
        space: str | os.PathLike[str] | SearchSpace = "small",
        optimizer: str = "asha",
        max_trials: int = 12,
        time_budget_s: float | None = None,
        max_epochs: int = 4,
        grace_period: int = 1,
        reduction_factor: int = 2,
        cpus_per_trial: float = 1.0,
        gpus_per_trial: float = 0.0,
        max_concurrent_trials: int | None = None,
        validation_fraction: float = 0.15,
        pruning_fraction: float = 0.2,
        device: str = "cpu",
        cost_threads: int = 1,
        work_dir: str | os.PathLike[str] | None = None,
        random_state: int | None = 0,
    ) -> None:
        self.budget = budget
        self.cost_unit = cost_unit
        self.space = space
        self.optimizer = optimizer
        self.max_trials = max_trials
        self.time_budget_s = time_budget_s
        self.max_epochs = max_epochs
        self.grace_period = grace_period
        self.reduction_factor = reduction_factor
        self.cpus_per_trial = cpus_per_trial
        self.gpus_per_trial = gpus_per_trial
        self.max_concurrent_trials = max_concurrent_trials
        self.validation_fraction = validation_fraction
        self.pruning_fraction = pruning_fraction
        self.device = device
        self.cost_threads = cost_threads
        self.work_dir = work_dir
        self.random_state = random_state

    # ------------------------------------------------------------ fitting
    @_warns_in_python
    def fit(self, X: Any, y: Any) -> Self:
        """Search a library on ``X, y`` and load the ensemble for ``budget``.

        Parameters
        ----------
        X : array-like
            Training images; see the class notes for layouts and pixel ranges.
        y : array-like of shape (N,)
            Class labels of any type numpy can sort (ints, strings...).

        Returns
        -------
        EnsembleClassifier
            This estimator, fitted.

        Raises
        ------
        DataError
            If ``X`` is not images, ``y`` does not match it, or a class has
            fewer than two images.
        SearchError, SelectionError, SpaceError, LibraryError
            If a parameter is invalid (the message names it, the allowed
            values and the value received), or the search trained no model.
        BudgetError
            If ``budget`` is below the cheapest model SMOBF may choose; the
            message gives that model's cost.
        """
        self._check_selection_parameters(self.budget)
        settings, space, seed = self._search_parameters()
        _resolve_device(self.device)
        classes, encoded = _encode_labels(y)
        dataset = _dataset(X, encoded, classes, self.validation_fraction, seed)

        folder, cleanup = self._new_work_folder()
        try:
            summary, library = self._build_library(dataset, space, settings, folder)
            selection = self._select(library, self.budget)
        except BaseException:
            if cleanup is not None:
                cleanup()
            raise

        self._replace_work_folder(cleanup)
        self.classes_ = classes
        self.image_shape_ = (dataset.channels, *dataset.image_size)
        self.n_features_in_ = math.prod(self.image_shape_)
        self.library_path_ = library.path
        self.search_summary_ = summary
        self.random_state_ = seed
        self._apply(selection)
        return self

    @_warns_in_python
    def select_budget(self, budget: float | None) -> Self:
        """Re-select the ensemble for ``budget`` from the fitted library.

        Nothing is trained: selection reads the validation predictions and
        costs cached in the library, so it takes seconds. ``cost_unit`` and
        ``pruning_fraction`` are read again, so ``set_params`` may change them
        first. On success ``budget`` is set to the new value, so the
        estimator's parameters describe the ensemble it holds.

        Parameters
        ----------
        budget : float or None
            The new budget in ``cost_unit``; ``None`` for the largest default.

        Returns
        -------
        EnsembleClassifier
            This estimator, holding the new ensemble.

        Raises
        ------
        sklearn.exceptions.NotFittedError
            If the estimator is not fitted.
        BudgetError
            If ``budget`` is below the cheapest model SMOBF may choose; the
            message gives that model's cost. The estimator keeps its ensemble.
        """
        check_is_fitted(self)
        self._check_selection_parameters(budget)
        selection = self._select(Library.open(self.library_path_), budget)
        self._apply(selection)
        self.budget = budget
        return self

    # --------------------------------------------------------- predicting
    @_warns_in_python
    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities of the ensemble.

        Parameters
        ----------
        X : array-like
            Images shaped like those seen in ``fit`` (any accepted layout).

        Returns
        -------
        numpy.ndarray of shape (N, n_classes)
            Probabilities in the column order of ``classes_``; rows sum to 1.
        """
        check_is_fitted(self)
        images = self._prediction_images(X)
        probabilities = self.ensemble_.predict_proba(
            images, device=_resolve_device(self.device)
        ).astype(np.float64)
        # Averaging float32 softmax outputs leaves rows off 1 by ~1e-7.
        return probabilities / probabilities.sum(axis=1, keepdims=True)

    def predict(self, X: Any) -> np.ndarray:
        """Predicted labels, as values of ``classes_``.

        Parameters
        ----------
        X : array-like
            Images shaped like those seen in ``fit`` (any accepted layout).

        Returns
        -------
        numpy.ndarray of shape (N,)
            One label per image.
        """
        probabilities = self.predict_proba(X)
        return self.classes_[probabilities.argmax(axis=1)]

    def __sklearn_tags__(self) -> Tags:
        tags = super().__sklearn_tags__()
        # Images, not feature rows; and costs in seconds are timed, so two fits
        # may select differently.
        tags.input_tags.two_d_array = False
        tags.input_tags.three_d_array = True
        tags.non_deterministic = True
        return tags

    def __getstate__(self) -> dict[str, Any]:
        if getattr(self, "_cleanup", None) is not None:
            # A copy would point at files that vanish with this estimator.
            raise TypeError(
                "an EnsembleClassifier fitted with work_dir=None keeps its models in "
                "a temporary folder deleted with it; fit with a work_dir to pickle "
                "or copy it"
            )
        state: dict[str, Any] = super().__getstate__()
        return state

    # ------------------------------------------------------------ helpers
    def _check_selection_parameters(self, budget: float | None) -> None:
        """Raise before any work for an invalid budget, unit or pruning."""
        check_budget_value(budget)
        if self.cost_unit not in COST_UNITS:
            raise SelectionError(
                f"cost_unit must be one of {', '.join(map(repr, COST_UNITS))}; "
                f"received {self.cost_unit!r}"
            )
        check_pruning_fraction(self.pruning_fraction)

    def _search_parameters(self) -> tuple[SearchSettings, SearchSpace, int]:
        """The validated search settings, search space and seed."""
        from deepens.search import SearchSettings

        seed = _resolve_seed(self.random_state)
        _check_positive_int("cost_threads", self.cost_threads)
        settings = SearchSettings(
            optimizer=self.optimizer,
            max_trials=self.max_trials,
            time_budget_s=self.time_budget_s,
            max_epochs=self.max_epochs,
            grace_period=self.grace_period,
            reduction_factor=self.reduction_factor,
            cpus_per_trial=self.cpus_per_trial,
            gpus_per_trial=self.gpus_per_trial,
            max_concurrent_trials=self.max_concurrent_trials,
            seed=seed,
        )
        settings.validate()
        space = (
            self.space
            if isinstance(self.space, SearchSpace)
            else SearchSpace.load(self.space)
        )
        return settings, space, seed

    def _new_work_folder(self) -> tuple[Path, weakref.finalize | None]:
        """The folder to fill, and the cleanup of a temporary one."""
        if self.work_dir is not None:
            return Path(self.work_dir), None
        folder = Path(tempfile.mkdtemp(prefix="deepens-"))
        # Runs when the estimator is collected or Python exits, whichever is first.
        cleanup = weakref.finalize(self, shutil.rmtree, folder, ignore_errors=True)
        return folder, cleanup

    def _replace_work_folder(self, cleanup: weakref.finalize | None) -> None:
        """Keep the new fit's folder and delete a previous fit's temporary one."""
        previous = getattr(self, "_cleanup", None)
        self._cleanup = cleanup
        if previous is not None:
            previous()

    def _build_library(
        self,
        dataset: ImageDataset,
        space: SearchSpace,
        settings: SearchSettings,
        folder: Path,
    ) -> tuple[SearchSummary, Library]:
        """Search into ``folder/library`` and measure every new model."""
        from deepens.cost import measure_library
        from deepens.search import run_search

        _logger.info("searching %d trials into %s", settings.max_trials, folder)
        summary = run_search(dataset, space, folder / "library", settings)
        if summary.library_size == 0:
            raise SearchError(
                f"the search trained no model ({summary.trials_started} trials "
                f"started, {summary.trials_failed} failed); raise max_trials or "
                "time_budget_s, or check the Ray logs for the failures"
            )

        library = Library.open(summary.library_path)
        measured = measure_library(
            library,
            dataset,
            device=_resolve_device(self.device),
            threads=self.cost_threads,
        )
        _logger.info("measured the cost of %d model(s)", measured)
        return summary, library

    def _select(self, library: Library, budget: float | None) -> _Selection:
        """Select, save and load the SMOBF ensemble for ``budget``."""
        from deepens.ensemble import Ensemble

        resolved = (
            budget
            if budget is not None
            else _largest_default_budget(library, self.cost_unit, self.pruning_fraction)
        )
        output = library.path.parent
        report = select(
            library,
            [float(resolved)],
            cost_unit=self.cost_unit,
            methods=(_METHOD,),
            pruning_fraction=self.pruning_fraction,
            output=output,
        )

        row = report.rows[0]
        if row.saved_to is None:
            raise LibraryError(
                f"the selected models {row.members} have no weights in {library.path}"
            )
        _logger.info(
            "selected %d model(s) costing %.4g %s for the budget %.4g",
            len(row.members),
            row.cost,
            self.cost_unit,
            resolved,
        )
        path = Path(row.saved_to)
        return _Selection(float(resolved), report, Ensemble.load(path), path)

    def _apply(self, selection: _Selection) -> None:
        self.budget_ = selection.budget
        self.report_ = selection.report
        self.ensemble_ = selection.ensemble
        self.ensemble_path_ = selection.ensemble_path
        self.cost_ = float(selection.report.rows[0].cost)

    def _prediction_images(self, X: Any) -> torch.Tensor:
        """``X`` as uint8 ``(N, C, H, W)``, checked against the fitted shape."""
        import torch

        # The conversion fit applied (through dataset_from_arrays), so both
        # read layouts and pixel ranges alike.
        from deepens.data import _images_from_array

        array = np.asarray(X)
        _refuse_feature_rows(array)
        images = _images_from_array(array, "X")
        if tuple(images.shape[1:]) != self.image_shape_:
            raise DataError(
                f"X of shape {array.shape} holds images of (C, H, W) "
                f"{tuple(images.shape[1:])}, but the estimator was fitted on "
                f"{self.image_shape_}; pass X as {_layouts(self.image_shape_)}"
            )
        return torch.from_numpy(np.ascontiguousarray(images))


def _layouts(image_shape: tuple[int, ...]) -> str:
    """The shapes of X that hold images of ``(C, H, W)`` ``image_shape``."""
    channels, height, width = image_shape
    layouts: list[tuple[int, ...]] = [
        (height, width, channels),
        (channels, height, width),
    ]
    if channels == 1:
        layouts.insert(0, (height, width))
    return " or ".join(f"(N, {', '.join(map(str, shape))})" for shape in layouts)


def _refuse_feature_rows(array: np.ndarray) -> None:
    # scikit-learn users often hold flattened rows such as load_digits().data.
    if array.ndim == 2:
        raise DataError(
            f"X has shape {array.shape}: rows of features, not images; reshape "
            "them to (N, H, W), (N, H, W, C) or (N, C, H, W), e.g. "
            "X.reshape(len(X), 8, 8) for scikit-learn's digits"
        )


def _encode_labels(y: Any) -> tuple[np.ndarray, np.ndarray]:
    """Sorted distinct labels, and each label's index among them."""
    labels = column_or_1d(y, warn=True)
    check_classification_targets(labels)
    classes, encoded = np.unique(labels, return_inverse=True)
    if len(classes) < 2:
        raise DataError(
            f"y holds only one class ({classes.tolist()[0]!r}); a classifier needs "
            "at least two"
        )
    return classes, encoded.astype(np.int64)


def _dataset(
    X: Any,
    encoded: np.ndarray,
    classes: np.ndarray,
    validation_fraction: float,
    seed: int,
) -> ImageDataset:
    """Train and validation splits of ``X``, without a test split."""
    from deepens.data import dataset_from_arrays

    array = np.asarray(X)
    _refuse_feature_rows(array)
    return dataset_from_arrays(
        array,
        encoded,
        validation_fraction=validation_fraction,
        seed=seed,
        class_names=[str(label) for label in classes],
    )


def _largest_default_budget(
    library: Library, cost_unit: str, pruning_fraction: float
) -> float:
    """The summed cost of the models SMOBF keeps: its best possible ensemble."""
    entries = usable_entries(library, cost_unit)
    costs = [float(entry.cost(cost_unit)) for entry in entries]  # type: ignore[arg-type]
    losses = [
        math.inf if entry.validation_loss is None else entry.validation_loss
        for entry in entries
    ]
    return default_budgets(costs, losses, pruning_fraction)[-1]


def _resolve_device(device: object) -> str:
    """``device`` as ``"cpu"`` or ``"cuda"``; ``"auto"`` picks the GPU if any."""
    if device not in _DEVICES:
        raise SearchError(
            f"device must be one of {', '.join(map(repr, _DEVICES))}; "
            f"received {device!r}"
        )
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise SearchError(
            "device is 'cuda' but no CUDA GPU is visible; use 'cpu' or 'auto'"
        )
    return str(device)


def _resolve_seed(random_state: object) -> int:
    if random_state is None:
        return secrets.randbelow(2**31)
    if (
        not isinstance(random_state, numbers.Integral)
        or isinstance(random_state, bool)
        or random_state < 0
    ):
        raise SearchError(
            "random_state must be a non-negative integer or None; "
            f"received {random_state!r}"
        )
    return int(random_state)


def _check_positive_int(name: str, value: object) -> None:
    if (
        not isinstance(value, numbers.Integral)
        or isinstance(value, bool)
        or int(value) < 1
    ):
        raise SearchError(f"{name} must be a whole number >= 1; received {value!r}")
