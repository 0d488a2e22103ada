"""Sufficient statistics of candidate ensembles on a block of validation samples.

A *backend* answers one question for the selection algorithms: for the current
ensemble (pick counts per pruned model) and each candidate model, what are the
additive statistics of ``ensemble + candidate`` on its samples? The statistics
add up over samples, so the sharded backend sums its workers' answers and gets
exactly what one process would (see
:data:`~deepens.selection.metrics.LOG_TERM_SCALE`).

Statistics per metric (one row per candidate):

* ``cross_entropy``: ``sum_i rint(LOG_TERM_SCALE * log max(s_i + t_i, eps * k))``
  in int64, where ``s`` is the ensemble's summed true-class probability, ``t``
  the candidate's and ``k`` the number of picks including the candidate (Eq. M1
  before the mean), all float32. Only the ``(models, samples)`` true-class
  matrix is touched: averaging is linear, so the true-class probability of an
  average is the average of the members' true-class probabilities, and a
  candidate costs ``O(N)``, not ``O(N * C)``.
* ``error_rate``: the number of samples whose arg-max class is right (Eq. M2).
* ``macro_f1``: per-class true positives and predicted counts, shape ``(2, C)``
  (Eq. M3).

The ensemble's running sums are recomputed from the pick counts in model order,
never updated in pick order, so they are a function of the ensemble alone: any
path to the same ensemble, on any backend or shard, gives the same bits.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from deepens.selection._arrays import as_float64
from deepens.selection.metrics import LOG_TERM_SCALE, PROBABILITY_FLOOR

# Candidates scored per vectorised block: 64 x 2,000 float32 values stay in cache.
_CANDIDATE_BLOCK = 64


@dataclass(frozen=True)
class ShardData:
    """What a backend needs about the pruned models on its block of samples.

    Attributes
    ----------
    true_class_probabilities
        ``(K, n)`` float32, model ``k``'s probability of sample ``i``'s label, with
        each prediction row renormalised to sum to 1 (undoing float16 rounding).
    labels
        ``(n,)`` int64 labels.
    member_predictions
        ``K`` arrays ``(n, C)`` as stored (float16 or wider, possibly memmaps).
    inverse_row_sums
        ``(K, n)`` float64, ``1 / sum_c P_k[i, c]``, applied when a full
        prediction row is combined.
    num_classes
        ``C``, the full class list size.
    """

    true_class_probabilities: np.ndarray
    labels: np.ndarray
    member_predictions: Sequence[np.ndarray]
    inverse_row_sums: np.ndarray
    num_classes: int

    def sample_block(self, start: int, stop: int) -> ShardData:
        """Copy samples ``start:stop`` out, contiguous, ready to ship to a worker."""
        return ShardData(
            true_class_probabilities=np.ascontiguousarray(
                self.true_class_probabilities[:, start:stop]
            ),
            labels=np.ascontiguousarray(self.labels[start:stop]),
            member_predictions=[
                np.ascontiguousarray(predictions[start:stop])
                for predictions in self.member_predictions
            ],
            inverse_row_sums=np.ascontiguousarray(self.inverse_row_sums[:, start:stop]),
            num_classes=self.num_classes,
        )


class ScoringBackend(Protocol):
    """Computes additive statistics of ensembles; see the module docstring."""

    def candidate_statistics(
        self, metric: str, counts: np.ndarray, candidates: np.ndarray
    ) -> np.ndarray:
        """Statistics of ``counts + one pick of c`` for each ``c`` in candidates."""
        ...

    def ensemble_statistics(self, metric: str, counts: np.ndarray) -> np.ndarray:
        """Statistics of the ensemble given by ``counts`` itself."""
        ...

    def close(self) -> None:
        """Release workers or device memory."""
        ...


class NumpyBackend:
    """The single-process numpy backend (also what each Ray worker runs)."""

    def __init__(self, data: ShardData) -> None:
        self._data = data
        self._true_class_minimum = data.true_class_probabilities.min(axis=1)
        self._true_sum_key = b""
        self._true_sum_cache: np.ndarray | None = None
        self._full_sum_key = b""
        self._full_sum_cache: np.ndarray | None = None

    def candidate_statistics(
        self, metric: str, counts: np.ndarray, candidates: np.ndarray
    ) -> np.ndarray:
        """Statistics of ``counts + one pick of c`` for each ``c`` in candidates."""
        if metric == "cross_entropy":
            return self._log_sums(counts, candidates)
        predictions = self._candidate_predictions(counts, candidates)
        if metric == "error_rate":
            return np.array(
                [self._correct(predicted) for predicted in predictions], dtype=np.int64
            ).reshape(len(candidates))
        return np.array(
            [self._class_counts(predicted) for predicted in predictions],
            dtype=np.int64,
        ).reshape(len(candidates), 2, self._data.num_classes)

    def ensemble_statistics(self, metric: str, counts: np.ndarray) -> np.ndarray:
        """Statistics of the ensemble given by ``counts`` itself."""
        if metric == "cross_entropy":
            floor = np.float32(PROBABILITY_FLOOR * int(counts.sum()))
            summed = np.maximum(self._true_class_sum(counts), floor)[None, :]
            return self._fixed_point_log_sums(summed)[0]
        predicted = self._full_sum(counts).argmax(axis=1)
        if metric == "error_rate":
            return np.asarray(self._correct(predicted), dtype=np.int64)
        return self._class_counts(predicted)

    def close(self) -> None:
        """Nothing to release: the arrays belong to the caller."""

    def _log_sums(self, counts: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        ensemble_sum = self._true_class_sum(counts)
        ensemble_minimum = ensemble_sum.min()
        floor = np.float32(PROBABILITY_FLOOR * (int(counts.sum()) + 1))
        sums = np.empty(len(candidates), dtype=np.int64)
        for start in range(0, len(candidates), _CANDIDATE_BLOCK):
            block = candidates[start : start + _CANDIDATE_BLOCK]
            # In place on one block-sized copy: no other temporaries.
            summed = self._data.true_class_probabilities[block]
            summed += ensemble_sum
            # Rounding is monotone, so every sum is at least the rounded sum of
            # the minima: when that clears the floor the clip (a quarter of the
            # kernel's time) cannot change anything and is skipped.
            if ensemble_minimum + self._true_class_minimum[block].min() < floor:
                np.maximum(summed, floor, out=summed)
            sums[start : start + len(block)] = self._fixed_point_log_sums(summed)
        return sums

    @staticmethod
    def _fixed_point_log_sums(summed: np.ndarray) -> np.ndarray:
        """Row sums of ``rint(LOG_TERM_SCALE * log summed)``; overwrites ``summed``."""
        np.log(summed, out=summed)
        summed *= np.float32(LOG_TERM_SCALE)
        np.rint(summed, out=summed)
        return summed.astype(np.int32).sum(axis=1, dtype=np.int64)

    def _true_class_sum(self, counts: np.ndarray) -> np.ndarray:
        key = counts.tobytes()
        if self._true_sum_cache is None or key != self._true_sum_key:
            true_class = self._data.true_class_probabilities
            total = np.zeros(true_class.shape[1], dtype=np.float32)
            for member in np.flatnonzero(counts):
                total += np.float32(counts[member]) * true_class[member]
            self._true_sum_cache, self._true_sum_key = total, key
        return self._true_sum_cache

    def _full_sum(self, counts: np.ndarray) -> np.ndarray:
        key = counts.tobytes()
        if self._full_sum_cache is None or key != self._full_sum_key:
            shape = (self._data.labels.shape[0], self._data.num_classes)
            total = np.zeros(shape, dtype=np.float64)
            for member in np.flatnonzero(counts):
                total += counts[member] * self._normalised(int(member))
            self._full_sum_cache, self._full_sum_key = total, key
        return self._full_sum_cache

    def _normalised(self, member: int) -> np.ndarray:
        predictions = as_float64(self._data.member_predictions[member])
        predictions *= self._data.inverse_row_sums[member][:, None]
        return predictions

    def _candidate_predictions(
        self, counts: np.ndarray, candidates: np.ndarray
    ) -> Iterator[np.ndarray]:
        ensemble_sum = self._full_sum(counts)
        for candidate in candidates:
            combined = self._normalised(int(candidate))
            combined += ensemble_sum
            yield combined.argmax(axis=1)

    def _correct(self, predicted: np.ndarray) -> int:
        return int(np.count_nonzero(predicted == self._data.labels))

    def _class_counts(self, predicted: np.ndarray) -> np.ndarray:
        labels = self._data.labels
        classes = self._data.num_classes
        true_positives = np.bincount(labels[predicted == labels], minlength=classes)
        predicted_counts = np.bincount(predicted, minlength=classes)
        return np.stack([true_positives, predicted_counts]).astype(np.int64)


def make_local_backend(data: ShardData, device: str) -> ScoringBackend:
    """The backend for one process: numpy for ``"cpu"``, else torch on ``device``."""
    if device == "cpu":
        return NumpyBackend(data)
    from deepens.selection._torch_backend import TorchBackend

    return TorchBackend(data, device)
