"""Validation error metrics E that ensemble selection minimises.

Every metric is an *error*: lower is better, 0 is perfect. With ``p_i`` the
combined class probabilities of validation sample ``i``, ``y_i`` its label, ``N``
samples and ``C`` classes (the full class list, present in the labels or not):

* cross-entropy (Eq. M1): ``E_CE = -1/N sum_i log max(p_i[y_i], eps)``
* error rate (Eq. M2): ``E_ER = 1/N sum_i [argmax_c p_i[c] != y_i]``
* macro-F1 error (Eq. M3): ``E_F1 = 1 - 1/C sum_c F1_c`` with
  ``F1_c = 2 TP_c / (2 TP_c + FP_c + FN_c)``

``eps`` is :data:`PROBABILITY_FLOOR`. The arg-max breaks ties towards the lowest
class index (numpy's rule), so the error rate is deterministic. In Eq. M3 a class
that is neither present nor predicted has ``0 / 0``; it counts as handled
perfectly (``F1_c = 1``, scikit-learn's ``zero_division=1``), so a perfect
classifier scores 0 while a prediction of a class missing from the labels still
costs that class's F1.

Selection never averages full probability matrices to score a candidate: it
keeps *sufficient statistics* (fixed-point sums of log terms, counts of correct
predictions, per-class counts) that add up over samples, so the same reductions
below serve the single-process, torch and sharded paths alike.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from deepens.selection._errors import invalid_setting, one_of

METRICS: tuple[str, ...] = ("cross_entropy", "error_rate", "macro_f1")
"""Names of the validation error metrics ``E`` accepted by selection."""

PROBABILITY_FLOOR = 1e-7
"""Combined probabilities are clipped below at this value before the log.

It sits just above the smallest positive float16 (6e-8): predictions are stored
in float16, so smaller probabilities are not represented reliably, and a floor at
this level makes the loss the same whether a tiny probability survived storage or
underflowed to 0. It also bounds one sample's loss at ``-log(1e-7) = 16.1``.
"""

LOG_TERM_SCALE = 2.0**25
"""Fixed-point scale of the per-sample log terms of the cross-entropy.

Selection computes each sample's ``log max(s_i, eps * k)`` in float32 (ample for
predictions stored with float16's 11 bits), rounds ``LOG_TERM_SCALE * log`` to
an integer (a resolution of ``3e-8``) and sums the integers in int64. Integer
sums are exact in any order, so the single-process, torch and sharded paths
reach identical scores however the samples are split. ``|log| <= 16.2`` (the
floor bounds it below; ensembles of fewer than 10 million picks above), so a
term fits in int32 with room to spare.
"""


RESOLUTION: dict[str, float] = {
    "cross_entropy": 1e-6,
    "error_rate": 0.0,
    "macro_f1": 0.0,
}
"""Smallest difference in ``E`` that selection treats as a real improvement.

Cross-entropies of ensembles of different sizes are computed with float32 logs
(``log s - log k``), so two mathematically equal values (an ensemble and the
same ensemble plus a duplicate of a member) can differ by about ``1e-7``; a
step must improve by more than ``1e-6`` to count. Error rate and macro-F1 come
from exact integer counts and need no margin. Candidates of the *same* step
are compared exactly: identical models yield identical bits, so ties are exact
and go to the lowest index.
"""


def cross_entropy_from_sums(
    fixed_point_sums: npt.ArrayLike, picks: int, num_samples: int
) -> np.ndarray:
    """Eq. M1 from int64 sums of ``rint(LOG_TERM_SCALE * log max(s_i, eps * k))``.

    ``s_i`` is the *summed* (not averaged) true-class probability of ``k`` picks,
    so ``log(s_i / k) = log s_i - log k`` and the clip at ``eps`` of the average
    is a clip at ``eps * k`` of the sum.
    """
    sums = np.asarray(fixed_point_sums, dtype=np.float64)
    return math.log(picks) - sums / (LOG_TERM_SCALE * num_samples)


def error_rate_from_counts(correct: npt.ArrayLike, num_samples: int) -> np.ndarray:
    """Eq. M2 from the number of correctly classified samples."""
    return 1.0 - np.asarray(correct, dtype=np.float64) / num_samples


def macro_f1_error_from_counts(
    true_positives: npt.ArrayLike,
    predicted: npt.ArrayLike,
    actual: npt.ArrayLike,
) -> np.ndarray:
    """Eq. M3 from per-class counts (last axis is the class).

    ``2 TP + FP + FN`` equals ``predicted + actual`` per class, which is how the
    denominator is formed here.
    """
    true_positives = np.asarray(true_positives, dtype=np.float64)
    denominator = np.asarray(predicted, dtype=np.float64) + np.asarray(
        actual, dtype=np.float64
    )
    # 0 / 0 (class absent and never predicted) counts as a perfect F1 of 1.
    safe = np.where(denominator > 0, denominator, 1.0)
    f1 = np.where(denominator > 0, 2.0 * true_positives / safe, 1.0)
    return 1.0 - f1.mean(axis=-1)


def cross_entropy(probabilities: npt.ArrayLike, labels: npt.ArrayLike) -> float:
    """Cross-entropy of class probabilities against labels (Eq. M1).

    Parameters
    ----------
    probabilities
        ``(N, C)`` class probabilities, any float dtype.
    labels
        ``(N,)`` integer class indices.

    Returns
    -------
    float
        Mean negative log-probability of the true class, clipped at
        :data:`PROBABILITY_FLOOR`.
    """
    probabilities = np.asarray(probabilities)
    labels = np.asarray(labels)
    true_class = probabilities[np.arange(labels.shape[0]), labels].astype(np.float64)
    return float(-np.mean(np.log(np.maximum(true_class, PROBABILITY_FLOOR))))


def error_rate(probabilities: npt.ArrayLike, labels: npt.ArrayLike) -> float:
    """Fraction of samples whose arg-max class is wrong (Eq. M2).

    Parameters
    ----------
    probabilities
        ``(N, C)`` class probabilities or scores.
    labels
        ``(N,)`` integer class indices.

    Returns
    -------
    float
        Error rate in ``[0, 1]``; arg-max ties go to the lowest class index.
    """
    predicted = np.asarray(probabilities).argmax(axis=1)
    return float(np.mean(predicted != np.asarray(labels)))


def macro_f1_error(
    probabilities: npt.ArrayLike,
    labels: npt.ArrayLike,
    num_classes: int | None = None,
) -> float:
    """One minus the macro-averaged F1 over the full class list (Eq. M3).

    Parameters
    ----------
    probabilities
        ``(N, C)`` class probabilities or scores.
    labels
        ``(N,)`` integer class indices.
    num_classes
        Size of the full class list; defaults to ``C``. Classes missing from
        ``labels`` still count in the average.

    Returns
    -------
    float
        ``1 - macro F1`` in ``[0, 1]``.
    """
    probabilities = np.asarray(probabilities)
    labels = np.asarray(labels)
    classes = probabilities.shape[1] if num_classes is None else num_classes
    predicted = probabilities.argmax(axis=1)
    true_positives = np.bincount(labels[predicted == labels], minlength=classes)
    predicted_counts = np.bincount(predicted, minlength=classes)
    actual_counts = np.bincount(labels, minlength=classes)
    return float(
        macro_f1_error_from_counts(true_positives, predicted_counts, actual_counts)
    )


def evaluate(
    metric: str,
    probabilities: npt.ArrayLike,
    labels: npt.ArrayLike,
    num_classes: int | None = None,
) -> float:
    """Evaluate the metric named ``metric`` (one of :data:`METRICS`).

    Parameters
    ----------
    metric
        ``"cross_entropy"`` (Eq. M1), ``"error_rate"`` (Eq. M2) or ``"macro_f1"``
        (Eq. M3).
    probabilities
        ``(N, C)`` class probabilities.
    labels
        ``(N,)`` integer class indices.
    num_classes
        Size of the full class list (only macro-F1 uses it).

    Returns
    -------
    float
        The error; lower is better.
    """
    if metric == "cross_entropy":
        return cross_entropy(probabilities, labels)
    if metric == "error_rate":
        return error_rate(probabilities, labels)
    if metric == "macro_f1":
        return macro_f1_error(probabilities, labels, num_classes)
    raise invalid_setting("metric", one_of(METRICS), metric)
