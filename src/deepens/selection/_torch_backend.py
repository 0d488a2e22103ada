"""The torch backend: the numpy backend's arithmetic on a torch device.

It computes the same statistics as :class:`~deepens.selection._backend.NumpyBackend`
(see that module for the equations) with the same float32/float64 operations in
the same order, so it picks the same ensembles; a device's ``log`` may differ
from numpy's in the last bit, which moves one fixed-point term by one unit at
most (``3e-8``).
"""

from __future__ import annotations

import numpy as np
import torch

from deepens.selection._backend import ShardData
from deepens.selection.metrics import LOG_TERM_SCALE, PROBABILITY_FLOOR

# Bound on one vectorised block of full predictions, in float64 elements (64 MiB).
_FULL_BLOCK_ELEMENTS = 8 * 1024 * 1024
_TRUE_CLASS_BLOCK = 256


class TorchBackend:
    """Scores candidate ensembles with torch on ``device`` (``"cpu-torch"``, cuda)."""

    def __init__(self, data: ShardData, device: str) -> None:
        self._device = torch.device("cpu" if device == "cpu-torch" else device)
        self._data = data
        self._true_class = self._tensor(data.true_class_probabilities)
        self._labels = self._tensor(data.labels.astype(np.int64))
        self._full: torch.Tensor | None = None
        self._inverse_row_sums: torch.Tensor | None = None

    def candidate_statistics(
        self, metric: str, counts: np.ndarray, candidates: np.ndarray
    ) -> np.ndarray:
        """Statistics of ``counts + one pick of c`` for each ``c`` in candidates."""
        if metric == "cross_entropy":
            return self._log_sums(counts, candidates)
        predicted = self._candidate_predictions(counts, candidates)
        if metric == "error_rate":
            correct = (predicted == self._labels).sum(dim=1)
            return correct.cpu().numpy().astype(np.int64)
        return np.stack([self._class_counts(row) for row in predicted])

    def ensemble_statistics(self, metric: str, counts: np.ndarray) -> np.ndarray:
        """Statistics of the ensemble given by ``counts`` itself."""
        if metric == "cross_entropy":
            floor = PROBABILITY_FLOOR * int(counts.sum())
            summed = self._true_class_sum(counts).clamp_min(floor)[None, :]
            return self._fixed_point_log_sums(summed)[0]
        predicted = self._full_sum(counts).argmax(dim=1)
        if metric == "error_rate":
            correct = (predicted == self._labels).sum()
            return np.asarray(int(correct.item()), dtype=np.int64)
        return self._class_counts(predicted)

    def close(self) -> None:
        """Drop the device tensors so their memory can be reused."""
        self._full = None
        self._inverse_row_sums = None

    def _tensor(self, array: np.ndarray) -> torch.Tensor:
        # A fresh writable copy: torch warns about read-only memmaps otherwise.
        return torch.from_numpy(np.array(array)).to(self._device)

    def _log_sums(self, counts: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        ensemble_sum = self._true_class_sum(counts)
        floor = PROBABILITY_FLOOR * (int(counts.sum()) + 1)
        index = self._tensor(candidates.astype(np.int64))
        sums = []
        for start in range(0, len(candidates), _TRUE_CLASS_BLOCK):
            block = index[start : start + _TRUE_CLASS_BLOCK]
            summed = self._true_class[block] + ensemble_sum
            sums.append(self._fixed_point_log_sums(summed.clamp_min_(floor)))
        return np.concatenate(sums)

    @staticmethod
    def _fixed_point_log_sums(summed: torch.Tensor) -> np.ndarray:
        """Row sums of ``rint(LOG_TERM_SCALE * log summed)``; overwrites ``summed``."""
        # torch.round rounds half to even, like np.rint.
        terms = summed.log_().mul_(LOG_TERM_SCALE).round_().to(torch.int32)
        return terms.sum(dim=1, dtype=torch.int64).cpu().numpy()

    def _true_class_sum(self, counts: np.ndarray) -> torch.Tensor:
        # Member by member in model order, like the numpy backend, for equal bits.
        total = torch.zeros(
            self._true_class.shape[1], dtype=torch.float32, device=self._device
        )
        for member in np.flatnonzero(counts):
            total += float(counts[member]) * self._true_class[int(member)]
        return total

    def _load_full(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._full is None or self._inverse_row_sums is None:
            stacked = np.stack([np.asarray(p) for p in self._data.member_predictions])
            self._full = torch.from_numpy(stacked).to(self._device)
            self._inverse_row_sums = self._tensor(self._data.inverse_row_sums)
        return self._full, self._inverse_row_sums

    def _normalised(self, members: torch.Tensor) -> torch.Tensor:
        full, inverse_row_sums = self._load_full()
        return full[members].to(torch.float64) * inverse_row_sums[members][..., None]

    def _full_sum(self, counts: np.ndarray) -> torch.Tensor:
        shape = (self._data.labels.shape[0], self._data.num_classes)
        total = torch.zeros(shape, dtype=torch.float64, device=self._device)
        for member in np.flatnonzero(counts):
            one = self._tensor(np.array([member], dtype=np.int64))
            total += float(counts[member]) * self._normalised(one)[0]
        return total

    def _candidate_predictions(
        self, counts: np.ndarray, candidates: np.ndarray
    ) -> torch.Tensor:
        ensemble_sum = self._full_sum(counts)
        index = self._tensor(candidates.astype(np.int64))
        block_size = max(1, _FULL_BLOCK_ELEMENTS // ensemble_sum.numel())
        predicted = []
        for start in range(0, len(candidates), block_size):
            combined = self._normalised(index[start : start + block_size])
            combined += ensemble_sum
            # torch's argmax returns the first maximum, like numpy: lowest class.
            predicted.append(combined.argmax(dim=2))
        return torch.cat(predicted)

    def _class_counts(self, predicted: torch.Tensor) -> np.ndarray:
        classes = self._data.num_classes
        hits = predicted == self._labels
        true_positives = torch.bincount(self._labels[hits], minlength=classes)
        predicted_counts = torch.bincount(predicted, minlength=classes)
        stacked = torch.stack([true_positives, predicted_counts])
        return stacked.cpu().numpy().astype(np.int64)
