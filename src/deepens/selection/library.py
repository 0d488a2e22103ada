"""Validating, pruning and preparing a library of cached predictions.

:func:`prepare_library` does once what every budget shares: it checks the
inputs, leaves out models whose predictions are not finite, prunes the library
to the best ``max(1, ceil(X * M))`` models by validation cross-entropy (step 1
of SMOBF) and extracts each pruned model's probability of the true class. The
:class:`PreparedLibrary` it returns then answers any number of budgets, with any
method, without reading the predictions again.

Which arrays are read: the shape and dtype of every model (no data), the
true-class column of every model for pruning (none when ``model_losses`` is
given), and the full arrays of the pruned models only. A NaN or infinity outside
the true-class column of a model that pruning drops is therefore never seen;
nothing is lost, since that model is not used.
"""

from __future__ import annotations

import logging
import math
import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from deepens.errors import BudgetError, LibraryError
from deepens.selection._arrays import as_float64
from deepens.selection._backend import ScoringBackend, ShardData, make_local_backend
from deepens.selection._errors import SelectionError, invalid_setting, one_of
from deepens.selection._evaluator import CandidateEvaluator
from deepens.selection.ensemble import SelectedEnsemble
from deepens.selection.metrics import (
    METRICS,
    PROBABILITY_FLOOR,
)

_logger = logging.getLogger(__name__)

DEVICES: tuple[str, ...] = ("cpu", "cpu-torch", "cuda", "cuda:<index>")
"""Accepted ``device`` values: numpy on CPU, torch on CPU, torch on a GPU."""

# How far a prediction row may sum from 1. float16 keeps 11 significant bits, so
# a float32 softmax stored as float16 sums to 1 within about 5e-4; a softmax run
# in float16 itself drifts further. Logits miss by far more than either bound.
_ROW_SUM_TOLERANCE_FLOAT16 = 1e-2
_ROW_SUM_TOLERANCE = 1e-3


class PreparedLibrary:
    """A validated, pruned library, ready to answer budgets.

    Build it with :func:`prepare_library`. It holds references to the pruned
    models' arrays (memmaps stay memmaps) and, for ``shards > 1``, Ray actors:
    call :meth:`close` (or use it as a context manager) when done.

    Attributes
    ----------
    model_indices
        Input indices of the pruned models, ascending. Internally a model is
        known by its position in this tuple.
    costs
        ``(K,)`` costs of the pruned models.
    library_costs
        ``(M,)`` costs of all input models.
    model_names
        Names of all input models (``None`` when none were given).
    dropped
        Input indices of the models left out for non-finite predictions.
    num_samples, num_classes
        ``N`` validation samples and ``C`` classes.
    pruning_fraction
        The fraction ``X`` used.
    """

    def __init__(
        self,
        *,
        model_indices: tuple[int, ...],
        library_costs: np.ndarray,
        model_names: tuple[str, ...] | None,
        dropped: tuple[int, ...],
        data: ShardData,
        pruning_fraction: float,
        device: str,
        shards: int,
    ) -> None:
        self.model_indices = model_indices
        self.library_costs = library_costs
        self.costs = library_costs[list(model_indices)]
        self.model_names = model_names
        self.dropped = dropped
        self.num_samples = int(data.labels.shape[0])
        self.num_classes = data.num_classes
        self.pruning_fraction = pruning_fraction
        self.device = device
        self.shards = shards
        self._data = data
        self._class_counts = np.bincount(data.labels, minlength=data.num_classes)
        self._backend: ScoringBackend | None = None
        self._evaluators: dict[str, CandidateEvaluator] = {}

    def __enter__(self) -> PreparedLibrary:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the backend (Ray actors, device memory); safe to call twice."""
        if self._backend is not None:
            self._backend.close()
        self._backend = None
        self._evaluators = {}

    def evaluator(self, metric: str) -> CandidateEvaluator:
        """The cached candidate scorer for ``metric`` (one of :data:`METRICS`)."""
        if metric not in METRICS:
            raise invalid_setting("metric", one_of(METRICS), metric)
        if metric not in self._evaluators:
            self._evaluators[metric] = CandidateEvaluator(
                self._scoring_backend(),
                metric,
                num_models=len(self.model_indices),
                num_samples=self.num_samples,
                class_counts=self._class_counts,
            )
        return self._evaluators[metric]

    def scoring_counts(self) -> dict[str, float]:
        """Candidate ensembles requested, computed (cache misses), and the seconds
        spent computing them, summed over metrics."""
        evaluators = self._evaluators.values()
        return {
            "requested": sum(evaluator.requested for evaluator in evaluators),
            "computed": sum(evaluator.computed for evaluator in evaluators),
            "scoring_seconds": sum(e.scoring_seconds for e in evaluators),
        }

    def describe(self, model_index: int) -> str:
        """How messages name input model ``model_index``."""
        return describe_model(model_index, self.model_names)

    def check_budget(self, budget: float) -> None:
        """Raise :class:`BudgetError` unless some pruned model fits ``budget``."""
        cheapest = int(np.argmin(self.costs))
        cheapest_cost = float(self.costs[cheapest])
        if budget >= cheapest_cost:
            return
        name = self.describe(self.model_indices[cheapest])
        message = (
            f"budget {budget:g} is below the cheapest model ({cheapest_cost:g}, "
            f"{name}); raise the budget to at least {cheapest_cost:g}"
        )
        library_cheapest = int(np.argmin(self.library_costs))
        library_cheapest_cost = float(self.library_costs[library_cheapest])
        if library_cheapest_cost < cheapest_cost:
            message += (
                f" (cheaper models were pruned: {self.describe(library_cheapest)}"
                f" costs {library_cheapest_cost:g}; raise pruning_fraction, now "
                f"{self.pruning_fraction:g}, to keep more models)"
            )
        raise BudgetError(message)

    def build_ensemble(
        self,
        picks: Sequence[int],
        cost: float,
        *,
        method: str,
        budget: float | None,
        trade_off: float | None = None,
    ) -> SelectedEnsemble:
        """Describe the ensemble of pruned-model positions ``picks`` (pick order).

        Its validation loss and error are computed through the backend, so the
        single-process and sharded paths report identical figures.
        """
        counts = self.pick_counts(picks)
        members = tuple(self.model_indices[position] for position in picks)
        names = self.model_names
        return SelectedEnsemble(
            members=members,
            weights=tuple(1.0 / len(picks) for _ in picks),
            cost=float(cost),
            validation_loss=self.evaluator("cross_entropy").ensemble_error(counts),
            validation_error=self.evaluator("error_rate").ensemble_error(counts),
            method=method,
            budget=budget,
            trade_off=trade_off,
            member_names=() if names is None else tuple(names[i] for i in members),
        )

    def pick_counts(self, picks: Sequence[int]) -> np.ndarray:
        """``(K,)`` int64 number of times each pruned model appears in ``picks``."""
        return np.bincount(
            np.asarray(picks, dtype=np.int64), minlength=len(self.model_indices)
        ).astype(np.int64)

    def _scoring_backend(self) -> ScoringBackend:
        if self._backend is None:
            if self.shards > 1:
                from deepens.selection.sharded import ShardedBackend

                worker_device = "cpu-torch" if self.device == "cpu-torch" else "cpu"
                self._backend = ShardedBackend(self._data, self.shards, worker_device)
            else:
                self._backend = make_local_backend(self._data, self.device)
        return self._backend


def describe_model(model_index: int, model_names: Sequence[str] | None) -> str:
    """``model 'name'`` when models are named, else ``model #index``."""
    if model_names is None:
        return f"model #{model_index}"
    return f"model {model_names[model_index]!r}"


def prepare_library(
    validation_probabilities: Sequence[npt.ArrayLike],
    validation_labels: npt.ArrayLike,
    costs: Sequence[float] | np.ndarray,
    *,
    pruning_fraction: float = 0.2,
    model_names: Sequence[str] | None = None,
    model_losses: Sequence[float] | None = None,
    num_classes: int | None = None,
    device: str = "cpu",
    shards: int = 1,
) -> PreparedLibrary:
    """Validate and prune a library (SMOBF step 1) for any number of budgets.

    Models with non-finite predictions are left out with a warning. Of the
    ``M`` remaining, the ``max(1, ceil(X * M))`` with the lowest validation
    cross-entropy (Eq. M1) are kept, ``X`` being ``pruning_fraction``; ties go to
    the lower index.

    Parameters
    ----------
    validation_probabilities
        ``M`` arrays ``(N, C)`` of class probabilities, float16/32/64, possibly
        ``np.memmap``.
    validation_labels
        ``(N,)`` integer labels in ``[0, C)``.
    costs
        ``(M,)`` non-negative finite costs (inference seconds).
    pruning_fraction
        ``X`` in ``(0, 1]``; 1 keeps every finite model.
    model_names
        ``M`` names used in warnings and errors.
    model_losses
        ``M`` precomputed validation cross-entropies; when given, pruning reads
        no predictions and non-finite losses mark models to leave out.
    num_classes
        Size of the full class list; must equal ``C`` when given.
    device
        ``"cpu"`` (numpy), ``"cpu-torch"``, ``"cuda"`` or ``"cuda:<index>"``.
    shards
        Number of Ray workers to split the samples over (1: no Ray).

    Returns
    -------
    PreparedLibrary
        The pruned library.

    Raises
    ------
    LibraryError
        Predictions with the wrong shape, not probabilities (e.g. logits), or
        none finite; the message names the model.
    SelectionError
        An invalid setting; the message names it.
    """
    check_pruning_fraction(pruning_fraction)
    check_device(device)
    arrays = [np.asarray(predictions) for predictions in validation_probabilities]
    if not arrays:
        raise LibraryError(
            "the library is empty: validation_probabilities has no model"
        )
    names = _check_names(model_names, len(arrays))
    labels = _check_labels(validation_labels)
    classes = _check_shapes(arrays, labels.shape[0], num_classes, names)
    _check_label_range(labels, classes)
    library_costs = _check_costs(costs, len(arrays), names)
    _check_shards(shards, device, labels.shape[0])

    losses, extracted = _pruning_losses(arrays, labels, model_losses, names)
    non_finite = [int(index) for index in np.flatnonzero(~np.isfinite(losses))]
    _warn_left_out(non_finite, names, from_losses=model_losses is not None)
    kept, inverse_row_sums, late_drops = _prune(arrays, losses, pruning_fraction, names)

    data = ShardData(
        true_class_probabilities=_pruned_true_class(
            arrays, labels, kept, inverse_row_sums, extracted
        ),
        labels=labels,
        member_predictions=[arrays[index] for index in kept],
        inverse_row_sums=np.stack(inverse_row_sums),
        num_classes=classes,
    )
    dropped = tuple(sorted(non_finite + list(late_drops)))
    return PreparedLibrary(
        model_indices=kept,
        library_costs=library_costs,
        model_names=names,
        dropped=dropped,
        data=data,
        pruning_fraction=float(pruning_fraction),
        device=device,
        shards=shards,
    )


def _warn_left_out(
    indices: Sequence[int], names: Sequence[str] | None, *, from_losses: bool
) -> None:
    reason = (
        "its validation loss in model_losses is not finite"
        if from_losses
        else "its validation predictions contain NaN or infinity"
    )
    for index in indices:
        _logger.warning("Leaving out %s: %s", describe_model(index, names), reason)


def _pruned_true_class(
    arrays: Sequence[np.ndarray],
    labels: np.ndarray,
    kept: Sequence[int],
    inverse_row_sums: Sequence[np.ndarray],
    extracted: dict[int, np.ndarray],
) -> np.ndarray:
    """``(K, N)`` float32 true-class probabilities of the renormalised rows."""
    rows = []
    for index, row_scale in zip(kept, inverse_row_sums, strict=True):
        # Reuse what pruning already read; read it now if model_losses was given.
        true_class = extracted.get(index)
        if true_class is None:
            true_class = _true_class(arrays[index], labels)
        rows.append(true_class * row_scale)
    return np.stack(rows).astype(np.float32)


def check_pruning_fraction(pruning_fraction: float) -> None:
    """Raise :class:`SelectionError` unless ``0 < pruning_fraction <= 1``."""
    is_number = isinstance(pruning_fraction, numbers.Real) and not isinstance(
        pruning_fraction, bool
    )
    if not (is_number and 0 < pruning_fraction <= 1):
        raise invalid_setting(
            "pruning_fraction", "a number in (0, 1]", pruning_fraction
        )


def is_valid_budget(budget: object) -> bool:
    """Whether ``budget`` is a positive finite number."""
    if isinstance(budget, bool) or not isinstance(budget, numbers.Real):
        return False
    value = float(budget)
    return math.isfinite(value) and value > 0


def check_budget_value(budget: float | None) -> None:
    """Raise unless ``budget`` is a positive finite number (or ``None``)."""
    if budget is not None and not is_valid_budget(budget):
        raise invalid_setting("budget", "a positive finite number", budget)


def check_device(device: str) -> None:
    """Raise :class:`SelectionError` for an unknown or unavailable device."""
    known = device in ("cpu", "cpu-torch", "cuda") or (
        isinstance(device, str)
        and device.startswith("cuda:")
        and device[len("cuda:") :].isdigit()
    )
    if not known:
        raise invalid_setting("device", one_of(DEVICES), device)
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise SelectionError(
                f"device {device!r} needs a CUDA GPU, but torch sees none; "
                "use device='cpu' (numpy) or 'cpu-torch'"
            )


def _check_shards(shards: int, device: str, num_samples: int) -> None:
    if not isinstance(shards, int) or isinstance(shards, bool) or shards < 1:
        raise invalid_setting("shards", "a positive integer", shards)
    if shards > num_samples:
        raise invalid_setting(
            "shards",
            f"at most the number of validation samples ({num_samples})",
            shards,
        )
    if shards > 1 and device.startswith("cuda"):
        raise invalid_setting(
            "device",
            "'cpu' or 'cpu-torch' when shards > 1 (Ray workers get no GPU)",
            device,
        )


def _check_names(
    model_names: Sequence[str] | None, count: int
) -> tuple[str, ...] | None:
    if model_names is None:
        return None
    names = tuple(str(name) for name in model_names)
    if len(names) != count:
        raise invalid_setting(
            "model_names", f"{count} names, one per model", f"{len(names)} names"
        )
    return names


def _check_labels(validation_labels: npt.ArrayLike) -> np.ndarray:
    labels = np.asarray(validation_labels)
    if labels.ndim != 1 or labels.shape[0] == 0:
        raise invalid_setting(
            "validation_labels", "a non-empty 1-D array", f"shape {labels.shape}"
        )
    if not np.issubdtype(labels.dtype, np.integer):
        raise invalid_setting(
            "validation_labels", "integer class indices", f"dtype {labels.dtype}"
        )
    return labels.astype(np.int64)


def _check_label_range(labels: np.ndarray, classes: int) -> None:
    if labels.min() < 0 or labels.max() >= classes:
        raise invalid_setting(
            "validation_labels",
            f"class indices in [0, {classes})",
            f"values from {labels.min()} to {labels.max()}",
        )


def _check_shapes(
    arrays: Sequence[np.ndarray],
    num_samples: int,
    num_classes: int | None,
    names: Sequence[str] | None,
) -> int:
    if num_classes is not None and (
        not isinstance(num_classes, int) or num_classes < 2
    ):
        raise invalid_setting("num_classes", "an integer of at least 2", num_classes)
    classes = arrays[0].shape[-1] if num_classes is None else num_classes
    source = "the first model" if num_classes is None else "num_classes"
    for index, array in enumerate(arrays):
        if array.shape != (num_samples, classes):
            raise LibraryError(
                f"{describe_model(index, names)}: validation predictions have shape "
                f"{array.shape}; expected ({num_samples}, {classes}): {num_samples} "
                f"samples as in validation_labels and {classes} classes as in "
                f"{source}"
            )
        if not np.issubdtype(array.dtype, np.floating):
            raise LibraryError(
                f"{describe_model(index, names)}: validation predictions have dtype "
                f"{array.dtype}; expected floating-point class probabilities"
            )
    return int(classes)


def _check_costs(
    costs: Sequence[float] | np.ndarray, count: int, names: Sequence[str] | None
) -> np.ndarray:
    values = np.asarray(costs, dtype=np.float64)
    if values.shape != (count,):
        raise invalid_setting(
            "costs", f"{count} costs, one per model", f"shape {values.shape}"
        )
    bad = np.flatnonzero(~np.isfinite(values) | (values < 0))
    if bad.size:
        index = int(bad[0])
        raise invalid_setting(
            f"costs[{index}] ({describe_model(index, names)})",
            "a finite, non-negative number",
            float(values[index]),
        )
    return values


def _true_class(predictions: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """``P[i, y_i]`` in float64; on a memmap this reads one value per row."""
    return predictions[np.arange(labels.shape[0]), labels].astype(np.float64)


def _pruning_losses(
    arrays: Sequence[np.ndarray],
    labels: np.ndarray,
    model_losses: Sequence[float] | None,
    names: Sequence[str] | None,
) -> tuple[np.ndarray, dict[int, np.ndarray]]:
    """Validation cross-entropy per model (Eq. M1); NaN marks non-finite models.

    Also returns the true-class probabilities it extracted, by model index, so
    the pruned models' are not read twice (none when ``model_losses`` is given).
    """
    if model_losses is not None:
        losses = np.asarray(model_losses, dtype=np.float64)
        if losses.shape != (len(arrays),):
            raise invalid_setting(
                "model_losses",
                f"{len(arrays)} losses, one per model",
                f"shape {losses.shape}",
            )
        return np.where(np.isfinite(losses), losses, np.nan), {}
    losses = np.empty(len(arrays))
    extracted = {}
    for index, predictions in enumerate(arrays):
        true_class = _true_class(predictions, labels)
        if not np.isfinite(true_class).all():
            losses[index] = np.nan
            continue
        _check_true_class_range(true_class, predictions.dtype, index, names)
        losses[index] = -np.mean(np.log(np.maximum(true_class, PROBABILITY_FLOOR)))
        extracted[index] = true_class
    return losses, extracted


def _row_sum_tolerance(dtype: np.dtype[Any]) -> float:
    return _ROW_SUM_TOLERANCE_FLOAT16 if dtype == np.float16 else _ROW_SUM_TOLERANCE


def _check_true_class_range(
    true_class: np.ndarray,
    dtype: np.dtype[Any],
    index: int,
    names: Sequence[str] | None,
) -> None:
    # The true-class column alone already exposes most saved logits.
    low, high = float(true_class.min()), float(true_class.max())
    if low < 0 or high > 1 + _row_sum_tolerance(dtype):
        raise LibraryError(
            f"{describe_model(index, names)}: validation predictions are not "
            f"probabilities (values from {low:.4g} to {high:.4g}, expected [0, 1]); "
            "looks like logits; apply softmax"
        )


def _inverse_row_sums(
    predictions: np.ndarray, index: int, names: Sequence[str] | None
) -> np.ndarray | None:
    """``1 / row sums`` of a full array, ``None`` if it holds NaN or infinity.

    Raises :class:`LibraryError` when the rows are not probability vectors.
    """
    row_sums = as_float64(predictions).sum(axis=1)
    # A NaN or infinity anywhere in a row makes its sum non-finite.
    if not np.isfinite(row_sums).all():
        return None
    name = describe_model(index, names)
    if _has_negative(predictions):
        minimum = float(predictions.min())
        raise LibraryError(
            f"{name}: validation predictions hold negative values (min "
            f"{minimum:.4g}), so they are not probabilities; looks like logits; "
            "apply softmax"
        )
    tolerance = _row_sum_tolerance(predictions.dtype)
    worst = int(np.argmax(np.abs(row_sums - 1.0)))
    if abs(row_sums[worst] - 1.0) > tolerance:
        raise LibraryError(
            f"{name}: validation prediction rows must sum to 1 (within "
            f"{tolerance:g}), but row {worst} sums to {row_sums[worst]:.4g}; "
            "looks like logits; apply softmax"
        )
    return 1.0 / row_sums


def _has_negative(predictions: np.ndarray) -> bool:
    """Whether any value is below 0 (-0.0 is not)."""
    if predictions.dtype == np.float16:
        # numpy's float16 min is scalar code (0.5 ms per 2,000 x 100); the sign
        # bit read as int16 is a vectorised integer min. -0.0 reads as -32768,
        # hence the exact check when any sign bit is set.
        if int(predictions.view(np.int16).min()) >= 0:
            return False
    return bool(predictions.min() < 0)


def _keep_count(pruning_fraction: float, finite_models: int) -> int:
    # Rounded first so that e.g. 0.7 * 10 = 7.000000000000001 keeps 7, not 8.
    return max(1, math.ceil(round(pruning_fraction * finite_models, 9)))


def _prune(
    arrays: Sequence[np.ndarray],
    losses: np.ndarray,
    pruning_fraction: float,
    names: Sequence[str] | None,
) -> tuple[tuple[int, ...], list[np.ndarray], tuple[int, ...]]:
    """Keep the best ``max(1, ceil(X * M))`` finite models by loss, index on ties.

    A kept model whose full array turns out non-finite is left out (with a
    warning) and the next best takes its place.
    """
    finite = np.flatnonzero(np.isfinite(losses))
    order = finite[np.lexsort((finite, losses[finite]))]
    remaining = len(finite)
    kept: list[tuple[int, np.ndarray]] = []
    late_drops: list[int] = []
    for index in order:
        if len(kept) >= _keep_count(pruning_fraction, remaining):
            break
        inverse_row_sums = _inverse_row_sums(arrays[index], int(index), names)
        if inverse_row_sums is None:
            _logger.warning(
                "Leaving out %s: its validation predictions contain NaN or infinity",
                describe_model(int(index), names),
            )
            late_drops.append(int(index))
            remaining -= 1
            continue
        kept.append((int(index), inverse_row_sums))
    if not kept:
        raise LibraryError(
            "no model is usable: every model's validation predictions contain NaN "
            "or infinity"
        )
    kept.sort(key=lambda entry: entry[0])
    return (
        tuple(index for index, _ in kept),
        [row_sums for _, row_sums in kept],
        tuple(late_drops),
    )
