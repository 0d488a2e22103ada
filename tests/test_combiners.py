"""Combiners (Eqs. C1, C2) and the weight grid, by hand."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pytest

from deepens.combiners import (
    COMBINER_RULES,
    MAX_GRID_MEMBERS,
    CombinerError,
    best_grid_weights,
    combine,
    weight_grid,
    weights_from_counts,
)
from deepens.errors import LibraryError

FIRST = np.array([[0.6, 0.4], [0.2, 0.8]])
SECOND = np.array([[0.3, 0.7], [0.5, 0.5]])


def assert_distributions(combined: np.ndarray) -> None:
    assert combined.dtype == np.float64
    assert (combined >= 0).all()
    np.testing.assert_allclose(combined.sum(axis=1), 1.0, rtol=0, atol=1e-12)


def test_average_by_hand() -> None:
    # Row 0: (0.6 + 0.3) / 2 = 0.45, (0.4 + 0.7) / 2 = 0.55.
    # Row 1: (0.2 + 0.5) / 2 = 0.35, (0.8 + 0.5) / 2 = 0.65.
    combined = combine([FIRST, SECOND])
    np.testing.assert_allclose(combined, [[0.45, 0.55], [0.35, 0.65]])
    assert_distributions(combined)


def test_weighted_average_normalises_weights() -> None:
    # Weights 3 and 1 -> 0.75, 0.25. Row 0: 0.75*0.6 + 0.25*0.3 = 0.525.
    combined = combine([FIRST, SECOND], weights=[3, 1])
    np.testing.assert_allclose(combined, [[0.525, 0.475], [0.275, 0.725]])


def test_repeat_counts_as_weights_equal_listing_members_twice() -> None:
    # Picks (0, 1, 0): member 0 twice -> weights 2/3 and 1/3.
    distinct, weights = weights_from_counts([0, 1, 0])
    assert distinct == (0, 1)
    assert weights == pytest.approx((2 / 3, 1 / 3))
    np.testing.assert_allclose(
        combine([FIRST, SECOND], weights=weights), combine([FIRST, SECOND, FIRST])
    )


def test_float16_memmaps_are_combined_in_float64(tmp_path: Path) -> None:
    # float16 rows sum to 1 only approximately; the output rows sum to 1.
    members = []
    for index, value in enumerate((1 / 3, 0.2)):
        array = np.full((5, 3), value, dtype=np.float16)
        array[:, 0] = 1 - 2 * value
        np.save(tmp_path / f"m{index}.npy", array)
        members.append(np.load(tmp_path / f"m{index}.npy", mmap_mode="r"))
    for rule in COMBINER_RULES:
        assert_distributions(combine(members, rule=rule))


def test_majority_vote_fractions_and_deterministic_ties() -> None:
    # Three members vote per row: row 0 -> classes 1, 2, 1: fractions 0, 2/3, 1/3.
    # Row 1: member 0 ties classes 0 and 2 -> lowest, 0; votes 0, 2, 2.
    members = [
        np.array([[0.1, 0.8, 0.1], [0.4, 0.2, 0.4]]),
        np.array([[0.1, 0.2, 0.7], [0.1, 0.1, 0.8]]),
        np.array([[0.2, 0.5, 0.3], [0.3, 0.1, 0.6]]),
    ]
    combined = combine(members, rule="vote")
    np.testing.assert_allclose(combined, [[0, 2 / 3, 1 / 3], [1 / 3, 0, 2 / 3]])
    assert_distributions(combined)


def test_a_two_way_vote_tie_stays_visible_and_argmax_takes_the_lower_class() -> None:
    # Row 0: member 0 votes 0, member 1 votes 1 -> (0.5, 0.5) -> arg-max 0.
    combined = combine([FIRST, SECOND], rule="vote")
    np.testing.assert_allclose(combined[0], [0.5, 0.5])
    assert combined[0].argmax() == 0


def test_weighted_vote() -> None:
    # Row 0 votes: member 0 class 0 (weight 0.25), member 1 class 1 (0.75).
    combined = combine([FIRST, SECOND], weights=[1, 3], rule="vote")
    np.testing.assert_allclose(combined[0], [0.25, 0.75])


def test_weight_grid_of_two_members_by_hand() -> None:
    # {1,2,4,8}^2 = 16 vectors; those without a 1 are multiples of one with a
    # 1 ((2,2) = 2*(1,1), (4,8) = 4*(1,2), ...), leaving 16 - 9 = 7.
    grid = weight_grid(2)
    expected = [(1, 1), (1, 2), (1, 4), (1, 8), (2, 1), (4, 1), (8, 1)]
    np.testing.assert_allclose(grid, [np.array(v) / sum(v) for v in expected])


@pytest.mark.parametrize("members", [1, 2, 3, 4, 5])
def test_weight_grid_has_no_redundant_weightings(members: int) -> None:
    grid = weight_grid(members)
    assert len(grid) == 4**members - 3**members + (members == 0)
    np.testing.assert_allclose(grid.sum(axis=1), 1.0)
    np.testing.assert_allclose(grid[0], 1 / members)  # the uniform one first
    # No two rows are the same normalised vector.
    assert len({tuple(np.round(row, 12)) for row in grid}) == len(grid)
    # Every product vector is represented: (2, 2, 2, 2) by (1, 1, 1, 1), ...
    represented = {tuple(np.round(row, 12)) for row in grid}
    for vector in itertools.product((1, 2, 4, 8), repeat=members):
        normalised = np.array(vector) / sum(vector)
        assert tuple(np.round(normalised, 12)) in represented


def test_weight_grid_with_other_levels_reduces_by_the_gcd() -> None:
    # Levels {2, 3}: (2,2) = (3,3) -> (1,1); (2,3); (3,2): three weightings.
    grid = weight_grid(2, levels=(2, 3))
    np.testing.assert_allclose(grid, [[0.5, 0.5], [0.4, 0.6], [0.6, 0.4]])


def test_best_grid_weights_by_hand() -> None:
    # One sample of class 0; member 0 gives it 0.9, member 1 gives 0.1. The
    # combined probability w0 * 0.9 + w1 * 0.1 is highest at (8, 1) / 9:
    # 0.8 + 0.011111 = 0.811111, loss -ln 0.811111 = 0.209350.
    members = [np.array([[0.9, 0.1]]), np.array([[0.1, 0.9]])]
    weights = best_grid_weights(members, [0])
    assert weights == pytest.approx((8 / 9, 1 / 9))
    combined = combine(members, weights=weights)
    assert -math.log(combined[0, 0]) == pytest.approx(0.209350, abs=1e-6)


def test_best_grid_weights_prefers_the_plain_average_on_a_tie() -> None:
    # Identical members: every weighting scores the same; the first (uniform)
    # one wins.
    members = [FIRST, FIRST, FIRST]
    assert best_grid_weights(members, [0, 1]) == pytest.approx((1 / 3,) * 3)
    assert best_grid_weights(members, [0, 1], metric="error_rate") == pytest.approx(
        (1 / 3,) * 3
    )


def test_best_grid_weights_by_error_rate() -> None:
    # Labels 0, 1; weights (w0, w1) before normalising.
    # Row 0 is right when 0.6 w0 + 0.25 w1 > 0.4 w0 + 0.75 w1, i.e. w1 < 0.4 w0.
    # Row 1 is right when 0.4 w0 + 0.95 w1 > 0.6 w0 + 0.05 w1, i.e. w1 > 0.22 w0.
    # Grid order (1,1), (1,2), (1,4), (1,8), (2,1), (4,1), (8,1): ratios w1/w0
    # 1, 2, 4, 8, 0.5 miss the window (0.22, 0.4); (4, 1) with ratio 0.25 is the
    # first with no error.
    members = [
        np.array([[0.6, 0.4], [0.6, 0.4]]),
        np.array([[0.25, 0.75], [0.05, 0.95]]),
    ]
    weights = best_grid_weights(members, [0, 1], metric="error_rate")
    assert weights == pytest.approx((0.8, 0.2))
    # No error also means a perfect macro F1: the same weighting wins.
    assert best_grid_weights(members, [0, 1], metric="macro_f1") == weights
    assert combine(members).argmax(axis=1).tolist() == [1, 1]
    assert combine(members, weights=weights).argmax(axis=1).tolist() == [0, 1]


def test_bad_inputs() -> None:
    with pytest.raises(CombinerError, match=r"rule must be one of 'average', 'vote'"):
        combine([FIRST], rule="median")
    with pytest.raises(CombinerError, match=r"weights must be 2 weights, one per"):
        combine([FIRST, SECOND], weights=[1.0])
    with pytest.raises(CombinerError, match=r"weights must be finite, non-negative"):
        combine([FIRST, SECOND], weights=[1.0, -1.0])
    with pytest.raises(CombinerError, match=r"weights must be finite, non-negative"):
        combine([FIRST, SECOND], weights=[0.0, 0.0])
    with pytest.raises(LibraryError, match=r"member 1: probabilities have shape"):
        combine([FIRST, np.ones((3, 2)) / 2])
    with pytest.raises(LibraryError, match=r"member 0: .*looks like logits; apply"):
        combine([np.array([[2.0, -1.0]])])
    with pytest.raises(CombinerError, match=r"member_probabilities must be at least"):
        combine([])
    with pytest.raises(CombinerError, match=rf"from 1 to {MAX_GRID_MEMBERS}"):
        weight_grid(MAX_GRID_MEMBERS + 1)
    with pytest.raises(CombinerError, match=r"levels must be positive integers"):
        weight_grid(2, levels=(1, 0.5))  # type: ignore[arg-type]
