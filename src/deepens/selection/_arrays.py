"""Fast, exact widening of stored predictions to float64."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt


def _float16_table() -> np.ndarray:
    bit_patterns = np.arange(2**16, dtype=np.uint32).astype(np.uint16)
    with np.errstate(invalid="ignore"):
        return bit_patterns.view(np.float16).astype(np.float64)


# Every float16 value in float64, indexed by its bit pattern (512 KiB).
_FLOAT16_AS_FLOAT64 = _float16_table()


def as_float64(array: npt.ArrayLike) -> np.ndarray:
    """``array`` in float64, exactly.

    numpy widens float16 subnormals (below 6.1e-5, where a confident network's
    wrong-class probabilities live) about eight times slower than normal
    values; a lookup of each value's bit pattern in a 65,536-entry table takes
    the same short time for every value.
    """
    values = np.asarray(array)
    if values.dtype == np.float16:
        return _FLOAT16_AS_FLOAT64[values.view(np.uint16)]
    return values.astype(np.float64)
