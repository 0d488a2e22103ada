"""Combiners: how an ensemble's member probabilities become one prediction.

Every combiner returns a valid probability distribution per row: non-negative,
summing to 1. Members arrive as float16 arrays (possibly memmaps) and are
combined in float64; each member's rows are first renormalised to sum to 1,
which undoes float16 rounding and matches how selection scored them.

Rules (``rule`` of :func:`combine`):

* ``"average"`` (Eq. C1): ``p_i = sum_k w_k P_k[i] / sum_k w_k``, uniform
  weights by default. Weights may be given, taken from pick counts
  (:func:`weights_from_counts`) or chosen on validation data from the grid
  ``{1, 2, 4, 8}^K`` (:func:`weight_grid`, :func:`best_grid_weights`).
* ``"vote"`` (Eq. C2): each member votes for its arg-max class (ties within a
  member go to the lowest class index); row ``i`` is the weighted fraction of
  votes per class. A tie between classes stays visible as equal fractions; an
  arg-max over the result then picks the lowest class index, deterministically.
"""

from __future__ import annotations

import itertools
import numbers
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from deepens.errors import DeepensError, LibraryError
from deepens.selection._arrays import as_float64
from deepens.selection.metrics import (
    METRICS,
    PROBABILITY_FLOOR,
    error_rate_from_counts,
    macro_f1_error_from_counts,
)

COMBINER_RULES: tuple[str, ...] = ("average", "vote")
"""The combination rules :func:`combine` accepts."""

WEIGHT_LEVELS: tuple[int, ...] = (1, 2, 4, 8)
"""Integer weight levels of the weight grid, before normalisation."""

MAX_GRID_MEMBERS = 8
"""Largest ensemble whose weights the grid search covers (4**8 = 65,536 points)."""

# Bound on one block of combined grid predictions, in float64 elements (64 MiB).
_GRID_BLOCK_ELEMENTS = 8 * 1024 * 1024

# Weightings whose errors differ by less than this are tied: equal mixtures of
# identical members differ by float64 rounding (0.1 t + 0.8 t + 0.1 t != t).
_GRID_TIE_TOLERANCE = 1e-12


class CombinerError(DeepensError, ValueError):
    """A combiner setting is invalid; the message names it and the allowed values."""


def combine(
    member_probabilities: Sequence[npt.ArrayLike],
    weights: Sequence[float] | None = None,
    rule: str = "average",
) -> np.ndarray:
    """Combine members' class probabilities into one distribution per row.

    Implements Eq. C1 (``"average"``, weighted when ``weights`` are given) or
    Eq. C2 (``"vote"``) of the module docstring.

    Parameters
    ----------
    member_probabilities
        ``K`` arrays ``(N, C)`` of class probabilities, one per member (a
        member listed twice counts twice).
    weights
        ``K`` non-negative weights, not all zero; normalised to sum to 1.
        Uniform when omitted.
    rule
        ``"average"`` or ``"vote"``.

    Returns
    -------
    numpy.ndarray
        ``(N, C)`` float64; every row is non-negative and sums to 1.

    Raises
    ------
    LibraryError
        Members of different shapes, or not probabilities; names the member.
    CombinerError
        Unknown rule or invalid weights.
    """
    if rule not in COMBINER_RULES:
        raise _invalid("rule", "one of " + ", ".join(map(repr, COMBINER_RULES)), rule)
    members = _check_members(member_probabilities)
    normalised_weights = _normalised_weights(weights, len(members))
    if rule == "vote":
        combined = _vote_counts(members, normalised_weights)
    else:
        combined = np.zeros(members[0].shape, dtype=np.float64)
        for index, (member, weight) in enumerate(
            zip(members, normalised_weights, strict=True)
        ):
            combined += weight * _renormalised(member, index)
    # Weights summing to 1 leave rows at 1 up to rounding; divide it away.
    combined /= combined.sum(axis=1, keepdims=True)
    return combined


def weights_from_counts(
    members: Sequence[int],
) -> tuple[tuple[int, ...], tuple[float, ...]]:
    """Turn a pick list with repeats into distinct members and their weights.

    Parameters
    ----------
    members
        Model indices in pick order, repeats allowed (with-replacement greedy).

    Returns
    -------
    tuple[tuple[int, ...], tuple[float, ...]]
        Distinct members in first-pick order, and each one's pick count over
        the number of picks.
    """
    if not members:
        raise _invalid("members", "at least one pick", list(members))
    counts: dict[int, int] = {}
    for member in members:
        counts[member] = counts.get(member, 0) + 1
    total = len(members)
    return tuple(counts), tuple(count / total for count in counts.values())


def weight_grid(member_count: int, levels: Sequence[int] = WEIGHT_LEVELS) -> np.ndarray:
    """All distinct normalised weightings from ``levels ** member_count``.

    Integer weightings that are multiples of one another give the same
    normalised weights ((2, 2, 2, 2) is (1, 1, 1, 1)); each vector is reduced by
    the greatest common divisor of its entries and only its first occurrence is
    kept. For the default levels this leaves ``4**K - 3**K`` weightings (those
    with a 1 somewhere), e.g. 7 for ``K = 2``.

    Parameters
    ----------
    member_count
        ``K``, from 1 to :data:`MAX_GRID_MEMBERS`.
    levels
        Positive integer levels.

    Returns
    -------
    numpy.ndarray
        ``(G, K)`` float64 rows summing to 1, in ``itertools.product`` order of
        the reduced vectors; the first row is the uniform weighting.
    """
    _check_member_count(member_count)
    if not levels or not all(
        isinstance(level, numbers.Integral) and level > 0 for level in levels
    ):
        raise _invalid("levels", "positive integers", levels)
    product = np.array(
        list(itertools.product(sorted(set(levels)), repeat=member_count)),
        dtype=np.int64,
    )
    reduced = product // np.gcd.reduce(product, axis=1)[:, None]
    _, first = np.unique(reduced, axis=0, return_index=True)
    kept = reduced[np.sort(first)].astype(np.float64)
    return kept / kept.sum(axis=1, keepdims=True)


def best_grid_weights(
    member_probabilities: Sequence[npt.ArrayLike],
    labels: npt.ArrayLike,
    *,
    metric: str = "cross_entropy",
    levels: Sequence[int] = WEIGHT_LEVELS,
    num_classes: int | None = None,
) -> tuple[float, ...]:
    """The weighting of :func:`weight_grid` with the lowest validation error.

    Scores the weighted average (Eq. C1) for every grid weighting with the
    metric's equation (M1 cross-entropy, M2 error rate, M3 macro-F1 error of
    :mod:`deepens.selection.metrics`); the first best in grid order wins (errors
    within ``1e-12`` tie), so the plain average wins a tie.

    Parameters
    ----------
    member_probabilities
        ``K`` validation arrays ``(N, C)``, ``K <= MAX_GRID_MEMBERS``.
    labels
        ``(N,)`` integer validation labels.
    metric
        One of ``"cross_entropy"``, ``"error_rate"``, ``"macro_f1"``.
    levels
        Integer weight levels of the grid.
    num_classes
        Full class list size for macro-F1 (defaults to ``C``).

    Returns
    -------
    tuple[float, ...]
        ``K`` weights summing to 1.
    """
    if metric not in METRICS:
        raise _invalid("metric", "one of " + ", ".join(map(repr, METRICS)), metric)
    members = [
        _renormalised(member, index)
        for index, member in enumerate(_check_members(member_probabilities))
    ]
    grid = weight_grid(len(members), levels)
    label_array = np.asarray(labels, dtype=np.int64)
    if label_array.shape != (members[0].shape[0],):
        raise _invalid(
            "labels", f"shape ({members[0].shape[0]},)", f"shape {label_array.shape}"
        )
    if metric == "cross_entropy":
        errors = _grid_cross_entropies(members, label_array, grid)
    else:
        classes = members[0].shape[1] if num_classes is None else num_classes
        errors = _grid_errors(members, label_array, grid, metric, classes)
    best = int(np.argmax(errors <= errors.min() + _GRID_TIE_TOLERANCE))
    return tuple(float(weight) for weight in grid[best])


def _grid_cross_entropies(
    members: Sequence[np.ndarray], labels: np.ndarray, grid: np.ndarray
) -> np.ndarray:
    # Averaging is linear, so the combined true-class probability of every
    # weighting is one matrix product with the members' true-class columns.
    rows = np.arange(labels.shape[0])
    true_class = np.stack([member[rows, labels] for member in members])
    combined = np.maximum(grid @ true_class, PROBABILITY_FLOOR)
    return -np.log(combined).mean(axis=1)


def _grid_errors(
    members: Sequence[np.ndarray],
    labels: np.ndarray,
    grid: np.ndarray,
    metric: str,
    classes: int,
) -> np.ndarray:
    stacked = np.stack(members)
    block = max(1, _GRID_BLOCK_ELEMENTS // stacked[0].size)
    errors = []
    for start in range(0, len(grid), block):
        weights = grid[start : start + block]
        predicted = np.einsum("gk,knc->gnc", weights, stacked).argmax(axis=2)
        for row in predicted:
            errors.append(_prediction_error(row, labels, metric, classes))
    return np.array(errors)


def _prediction_error(
    predicted: np.ndarray, labels: np.ndarray, metric: str, classes: int
) -> float:
    hits = predicted == labels
    if metric == "error_rate":
        return float(error_rate_from_counts(np.count_nonzero(hits), labels.shape[0]))
    true_positives = np.bincount(labels[hits], minlength=classes)
    predicted_counts = np.bincount(predicted, minlength=classes)
    actual = np.bincount(labels, minlength=classes)
    return float(macro_f1_error_from_counts(true_positives, predicted_counts, actual))


def _vote_counts(members: Sequence[np.ndarray], weights: np.ndarray) -> np.ndarray:
    rows = np.arange(members[0].shape[0])
    votes = np.zeros(members[0].shape, dtype=np.float64)
    for index, (member, weight) in enumerate(zip(members, weights, strict=True)):
        # numpy's argmax returns the first maximum: lowest class on a tie.
        votes[rows, _renormalised(member, index).argmax(axis=1)] += weight
    return votes


def _check_members(member_probabilities: Sequence[npt.ArrayLike]) -> list[np.ndarray]:
    members = [np.asarray(member) for member in member_probabilities]
    if not members:
        raise _invalid("member_probabilities", "at least one member", [])
    expected = members[0].shape
    if len(expected) != 2 or expected[0] == 0:
        raise LibraryError(
            f"member 0: probabilities must be a non-empty (N, C) array; got shape "
            f"{expected}"
        )
    for index, member in enumerate(members):
        if member.shape != expected:
            raise LibraryError(
                f"member {index}: probabilities have shape {member.shape}, but "
                f"member 0 has {expected}"
            )
        if not np.issubdtype(member.dtype, np.floating):
            raise LibraryError(
                f"member {index}: probabilities have dtype {member.dtype}; expected "
                "floating point"
            )
    return members


def _renormalised(member: np.ndarray, index: int) -> np.ndarray:
    """Member ``index`` in float64 with each row divided by its sum."""
    values = as_float64(member)
    row_sums = values.sum(axis=1, keepdims=True)
    if not (np.isfinite(row_sums).all() and (row_sums > 0).all()):
        raise LibraryError(
            f"member {index}: probabilities hold NaN, infinity or an all-zero row; "
            "cannot combine them"
        )
    if values.min() < 0:
        raise LibraryError(
            f"member {index}: probabilities hold negative values; looks like "
            "logits; apply softmax"
        )
    return values / row_sums


def _normalised_weights(weights: Sequence[float] | None, count: int) -> np.ndarray:
    if weights is None:
        return np.full(count, 1.0 / count)
    values = np.asarray(weights, dtype=np.float64)
    if values.shape != (count,):
        raise _invalid("weights", f"{count} weights, one per member", list(weights))
    if not (np.isfinite(values).all() and (values >= 0).all() and values.sum() > 0):
        allowed = "finite, non-negative and not all zero"
        raise _invalid("weights", allowed, list(weights))
    return values / values.sum()


def _check_member_count(member_count: int) -> None:
    is_integer = isinstance(member_count, numbers.Integral) and not isinstance(
        member_count, bool
    )
    if not (is_integer and 1 <= member_count <= MAX_GRID_MEMBERS):
        raise _invalid(
            "member_count", f"an integer from 1 to {MAX_GRID_MEMBERS}", member_count
        )


def _invalid(parameter: str, allowed: str, received: object) -> CombinerError:
    return CombinerError(f"{parameter} must be {allowed}; received {received!r}")
