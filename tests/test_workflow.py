"""Selection orchestration on a hand-made library (no training)."""

import numpy as np
import pytest
from probabilities import one_hot_noise

from deepens.combiners import combine
from deepens.errors import BudgetError, LibraryError
from deepens.library import Library
from deepens.workflow import default_budgets, ensemble_folder_name, select


@pytest.fixture
def library(tmp_path):
    rng = np.random.default_rng(0)
    validation = rng.integers(0, 3, 300)
    test = rng.integers(0, 3, 300)
    library = Library.create(
        tmp_path / "lib",
        class_names=["a", "b", "c"],
        validation_labels=validation,
        test_labels=test,
    )
    for index, (accuracy, cost) in enumerate(
        [(0.9, 4.0), (0.85, 1.0), (0.8, 0.5), (0.6, 0.2), (0.5, 0.1)]
    ):
        library.write(
            f"m{index}",
            config={},
            status="finished",
            validation_probabilities=one_hot_noise(validation, accuracy, rng),
            test_probabilities=one_hot_noise(test, accuracy, rng),
            cost_seconds=cost,
            flops=int(cost * 1000),
            parameters=index + 1,
        )
    return library


def test_every_budget_gets_an_ensemble_within_it_for_each_method(library):
    report = select(
        library,
        [0.6, 2.0, 6.0],
        methods=["smobf", "greedy", "single"],
        pruning_fraction=1.0,
    )

    assert len(report.rows) == 9
    for row in report.rows:
        assert row.cost <= row.budget
        assert 0 <= row.test_error <= 1 and row.test_loss > 0
    largest = [r for r in report.rows if r.method == "smobf" and r.budget == 6.0][0]
    assert len(largest.members) >= 2
    assert report.best_single["model_id"] == "m0"


def test_flops_budget_uses_the_flop_counts(library):
    report = select(
        library, [600], cost_unit="flops", methods=["smobf"], pruning_fraction=1.0
    )

    row = report.rows[0]
    assert row.cost <= 600 and set(row.members) <= {"m2", "m3", "m4"}


def test_weighted_combiner_picks_grid_weights_and_vote_scores_votes(library):
    weighted = select(
        library, [6.0], methods=["smobf"], pruning_fraction=1.0, combiner="weighted"
    ).rows[0]
    voted = select(
        library, [6.0], methods=["smobf"], pruning_fraction=1.0, combiner="vote"
    ).rows[0]

    levels = np.array(weighted.weights) / min(weighted.weights)
    assert np.all(np.isin(np.round(levels, 6), [1, 2, 4, 8]))
    assert weighted.combiner == "weighted" and voted.combiner == "vote"
    assert voted.members == weighted.members


def test_unknown_combiner_and_budget_below_the_cheapest(library):
    with pytest.raises(LibraryError, match="combiner 'median'"):
        select(library, [1.0], combiner="median")
    with pytest.raises(BudgetError, match="cheapest"):
        select(library, [0.01], pruning_fraction=1.0)


def test_default_budgets_span_the_pruned_models():
    costs = [4.0, 1.0, 0.5, 0.2, 0.1]
    losses = [0.1, 0.2, 0.3, 0.4, 0.5]

    budgets = default_budgets(costs, losses, pruning_fraction=0.4)

    # The best 2 models cost 4 and 1: from the cheapest kept (1) to their sum (5).
    assert budgets[0] == pytest.approx(1.0) and budgets[-1] == pytest.approx(5.0)
    assert budgets == sorted(budgets) and len(budgets) == 4


def test_a_library_without_measured_models_says_what_to_do(tmp_path):
    empty = Library.create(
        tmp_path / "e",
        class_names=["a", "b"],
        validation_labels=np.array([0, 1]),
        test_labels=None,
    )

    with pytest.raises(LibraryError, match="run 'deepens search' first"):
        select(empty)


def test_sharded_selection_gives_the_same_ensembles(library):
    single = select(library, [0.6, 6.0], methods=["smobf"], pruning_fraction=1.0)
    sharded = select(
        library, [0.6, 6.0], methods=["smobf"], pruning_fraction=1.0, shards=2
    )

    assert [r.members for r in sharded.rows] == [r.members for r in single.rows]
    assert [r.validation_loss for r in sharded.rows] == pytest.approx(
        [r.validation_loss for r in single.rows], abs=1e-9
    )


def test_validation_figures_are_those_of_the_chosen_combiner(library):
    averaged = select(library, [6.0], methods=["smobf"], pruning_fraction=1.0).rows[0]
    voted = select(
        library, [6.0], methods=["smobf"], pruning_fraction=1.0, combiner="vote"
    ).rows[0]

    members = [library.get(m).validation_probabilities() for m in voted.members]
    votes = combine(
        [np.asarray(m, dtype=np.float32) for m in members],
        weights=voted.weights,
        rule="vote",
    )
    labels = library.validation_labels
    expected_error = float((votes.argmax(1) != labels).mean())
    assert voted.validation_error == pytest.approx(expected_error)
    assert voted.validation_loss != pytest.approx(averaged.validation_loss)


def test_ensemble_folders_name_method_unit_and_plain_budget():
    assert ensemble_folder_name("smobf", 3e6, "flops") == "smobf-flops-3000000"
    assert ensemble_folder_name("greedy", 0.0573872, "seconds") == (
        "greedy-seconds-0.057387"
    )


def test_an_unreachable_budget_is_reported_and_the_others_answered(library):
    report = select(library, [0.01, 6.0], methods=["smobf"], pruning_fraction=1.0)

    assert [row.budget for row in report.rows] == [6.0]
    assert len(report.errors) == 1 and "budget 0.01" in report.errors[0]
    assert "cheapest" in report.errors[0] and "seconds" in report.errors[0]


def test_the_library_is_summarised_per_optimiser(tmp_path):
    from deepens.report import summarise_optimizers

    rng = np.random.default_rng(1)
    validation = rng.integers(0, 3, 200)
    test = rng.integers(0, 3, 200)
    library = Library.create(
        tmp_path / "lib",
        class_names=["a", "b", "c"],
        validation_labels=validation,
        test_labels=test,
    )
    runs = [
        ("tpe", "finished", [0.9, 0.5], 0.9),
        ("tpe", "stopped", [0.8], 0.6),
        ("tpe", "failed", [], None),
        ("smac", "finished", [0.7, 0.4], 0.95),
    ]
    for index, (optimizer, status, curve, accuracy) in enumerate(runs):
        arrays = {}
        if accuracy is not None:
            arrays = dict(
                validation_probabilities=one_hot_noise(validation, accuracy, rng),
                test_probabilities=one_hot_noise(test, accuracy, rng),
            )
        library.write(
            f"m{index}",
            config={},
            status=status,
            learning_curve=curve,
            info={"optimizer": optimizer},
            **arrays,
        )

    rows = {row["optimizer"]: row for row in summarise_optimizers(library)}

    assert set(rows) == {"smac", "tpe"}
    assert (rows["tpe"]["models"], rows["tpe"]["failed"]) == (2, 1)
    assert (rows["tpe"]["finished"], rows["tpe"]["stopped"]) == (1, 1)
    assert rows["tpe"]["best_validation_loss"] == 0.5
    assert rows["smac"]["best_validation_loss"] == 0.4
    expected = (library.get("m0").test_probabilities().argmax(1) != test).mean()
    assert rows["tpe"]["best_test_error"] == pytest.approx(expected)
