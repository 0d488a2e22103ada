"""Small libraries whose selection answers can be worked out by hand."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def binary_models(true_class: Sequence[Sequence[float]]) -> list[np.ndarray]:
    """One model per row of ``true_class``; all labels are 0 (see zero_labels).

    Model ``m`` predicts ``[t, 1 - t]`` for sample ``i`` with ``t =
    true_class[m][i]``, so its cross-entropy is ``-mean(log t)`` and the
    average of several models has true-class probability ``mean(t)``.
    """
    return [
        np.stack([np.asarray(row, float), 1.0 - np.asarray(row, float)], axis=1)
        for row in true_class
    ]


def zero_labels(samples: int) -> np.ndarray:
    """Labels of ``samples`` samples, all class 0."""
    return np.zeros(samples, dtype=np.int64)


def random_library(
    models: int,
    samples: int,
    classes: int,
    seed: int,
    dtype: type = np.float16,
) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """A random library of softmax predictions of varying quality, and costs."""
    generator = np.random.default_rng(seed)
    labels = generator.integers(0, classes, size=samples)
    costs = 10.0 ** generator.uniform(-1.0, 1.0, size=models)
    predictions = []
    for strength in generator.uniform(0.5, 3.0, size=models):
        logits = generator.standard_normal((samples, classes))
        logits[np.arange(samples), labels] += strength
        probabilities = np.exp(logits - logits.max(axis=1, keepdims=True))
        probabilities /= probabilities.sum(axis=1, keepdims=True)
        predictions.append(probabilities.astype(dtype))
    return predictions, labels, costs
