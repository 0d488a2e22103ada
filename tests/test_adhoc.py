"""Ad-hoc ensembles: the ensemble space, and short searches on digits."""

import json

import numpy as np
import pytest
from probabilities import one_hot_noise
from spaces import tiny_space
from typer.testing import CliRunner

from deepens.adhoc import (
    ensemble_space,
    group_id_for,
    heterogeneous_space,
    member_configs,
    weighted_scores,
)
from deepens.cli import app
from deepens.combiners import best_grid_weights, combine
from deepens.ensemble import Ensemble
from deepens.errors import LibraryError, SearchError
from deepens.library import AdHocGroup, Library, loss_and_error
from deepens.optimizers import tune_param_space
from deepens.report import plot_pareto, write_json
from deepens.search import SearchSettings, run_search
from deepens.selection import SelectionError
from deepens.space import SearchSpace
from deepens.trial import model_id_for
from deepens.workflow import select


# ------------------------------------------------------------ the space
def test_heterogeneous_space_repeats_every_parameter_per_member():
    space = SearchSpace.load("small")

    derived = heterogeneous_space(space, 3)

    expected = [
        f"member{index}_{name}" for index in (1, 2, 3) for name in space.parameters
    ]
    assert list(derived.parameters) == expected
    original = space.parameters["learning_rate"]
    copy = derived.parameters["member2_learning_rate"]
    assert (copy.kind, copy.low, copy.high, copy.log) == (
        original.kind,
        original.low,
        original.high,
        original.log,
    )
    assert derived.conditional_parameters() == [
        "member1_cardinality",
        "member2_cardinality",
        "member3_cardinality",
    ]
    assert derived.parameters["member3_cardinality"].condition == {
        "member3_block_type": ("next",)
    }
    # An ordinary space: the optimisers' translation takes it as it is.
    assert set(tune_param_space(derived)) == set(expected)


def test_each_member_gets_the_canonical_form_of_its_own_parameters():
    space = SearchSpace.load("small")
    derived = heterogeneous_space(space, 2)
    config = derived.sample(np.random.default_rng(0))
    # Optimisers without conditions propose every parameter, in any form.
    config.update(
        member1_block_type="v1",
        member1_cardinality=3,
        member2_block_type="next",
        member2_cardinality=3.4,
        member2_batch_size=40.2,
    )

    first, second = member_configs(space, "heterogeneous", 2, config)

    assert "cardinality" not in first and first["block_type"] == "v1"
    assert second["cardinality"] == 3 and second["batch_size"] == 40
    assert first["learning_rate"] == config["member1_learning_rate"]
    assert second["learning_rate"] == config["member2_learning_rate"]
    own = {
        name.removeprefix("member1_"): value
        for name, value in config.items()
        if name.startswith("member1_")
    }
    assert first == space.canonical(own)
    canonical = derived.canonical(config)
    assert "member1_cardinality" not in canonical
    assert canonical["member2_cardinality"] == 3


def test_homogeneous_ensembles_search_the_users_space_with_one_config_per_member():
    space = SearchSpace.load("small")
    config = space.sample(np.random.default_rng(1))

    assert ensemble_space(space, "homogeneous", 4) is space
    assert (
        member_configs(space, "homogeneous", 4, config) == [space.canonical(config)] * 4
    )


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (
            dict(ad_hoc="mixed"),
            r"ad_hoc \(--ad-hoc\) must be one of 'homogeneous', 'heterogeneous'; "
            r"got 'mixed'",
        ),
        (
            dict(ad_hoc="homogeneous", ad_hoc_members=1),
            r"ad_hoc_members \(--ad-hoc-members\) must be a whole number from 2 to 8; "
            r"got 1",
        ),
        (dict(ad_hoc="heterogeneous", ad_hoc_members=9), r"from 2 to 8; got 9"),
    ],
)
def test_bad_ad_hoc_settings_fail_validation_naming_the_option(settings, message):
    with pytest.raises(SearchError, match=message):
        SearchSettings(**settings).validate()


def test_a_bad_kind_fails_before_the_space_is_derived():
    with pytest.raises(SearchError, match="--ad-hoc"):
        ensemble_space(SearchSpace.load("small"), "Homogeneous", 4)


# ----------------------------------------------------------- searches
def _search(digits, path, kind, members, trials=2, space=None):
    reported = []

    def listener(event, trial_id, metrics):
        if event == "result":
            reported.append(metrics)

    settings = SearchSettings(
        max_trials=trials,
        max_epochs=1,
        max_concurrent_trials=2,
        ad_hoc=kind,
        ad_hoc_members=members,
    )
    summary = run_search(
        digits, space or tiny_space(), path, settings, listener=listener
    )
    return summary, reported


def _check_reported_losses(library, reported):
    """Each report is the grid-weighted loss recomputed from stored predictions."""
    assert reported
    for result in reported:
        group = library.get_group(result["ad_hoc_group"])
        members = [library.get(model_id) for model_id in group.members]
        stored = [member.validation_probabilities() for member in members]
        weights = best_grid_weights(stored, library.validation_labels)
        loss, _ = loss_and_error(combine(stored, weights), library.validation_labels)

        assert result["model_ids"] == group.members
        assert group.weights == pytest.approx(weights)
        assert result["validation_loss"] == pytest.approx(loss, rel=1e-12)
        assert group.validation_loss == pytest.approx(loss, rel=1e-12)


@pytest.mark.slow
def test_a_homogeneous_search_fills_the_library_with_members_and_groups(
    digits, tmp_path
):
    summary, reported = _search(digits, tmp_path / "lib", "homogeneous", 4)

    library = Library.open(tmp_path / "lib")
    groups = library.groups()
    assert summary.trials_finished == 2 and len(groups) == 2
    assert len(library.entries(("finished",))) == 8
    for group in groups:
        members = [library.get(model_id) for model_id in group.members]
        assert group.kind == "homogeneous" and group.status == "finished"
        assert group.group_id == group_id_for("homogeneous", group.members)
        assert all(m.config == members[0].config for m in members)
        assert [m.info["seed"] for m in members] == [0, 1, 2, 3]
        assert [m.info["ad_hoc_member"] for m in members] == [1, 2, 3, 4]
        assert {m.info["ad_hoc_group"] for m in members} == {group.group_id}
        assert [m.model_id for m in members] == [
            model_id_for(m.config, m.info["seed"]) for m in members
        ]
        assert sum(group.weights) == pytest.approx(1.0)
    _check_reported_losses(library, reported)


@pytest.mark.slow
def test_a_heterogeneous_search_trains_one_configuration_per_member(digits, tmp_path):
    summary, reported = _search(digits, tmp_path / "lib", "heterogeneous", 3)

    library = Library.open(tmp_path / "lib")
    groups = library.groups()
    assert summary.trials_finished == 2 and len(groups) == 2
    assert len(library.entries(("finished",))) == 6
    for group in groups:
        members = [library.get(model_id) for model_id in group.members]
        assert group.kind == "heterogeneous"
        assert len({m.config["learning_rate"] for m in members}) == 3
        assert [m.info["ad_hoc_kind"] for m in members] == ["heterogeneous"] * 3
        # The proposal, recorded in canonical form, holds every member's config.
        for index, member in enumerate(members, start=1):
            own = {
                name.removeprefix(f"member{index}_"): value
                for name, value in group.info["config"].items()
                if name.startswith(f"member{index}_")
            }
            assert own == member.config
    _check_reported_losses(library, reported)


@pytest.mark.slow
def test_members_already_in_the_library_are_replayed_not_retrained(digits, tmp_path):
    # Every parameter fixed: each search proposes the one configuration.
    config = tiny_space().sample(np.random.default_rng(0))
    document = tiny_space().to_dict()
    document["parameters"] = {
        k: {"type": "fixed", "value": v} for k, v in config.items()
    }
    space = SearchSpace.from_dict(document)
    run_search(
        digits, space, tmp_path / "lib", SearchSettings(max_trials=1, max_epochs=1)
    )
    library = Library.open(tmp_path / "lib")
    (single,) = library.entries()

    _, reported = _search(digits, tmp_path / "lib", "homogeneous", 2, 1, space)

    group = library.groups()[0]
    assert group.members[0] == single.model_id
    assert library.get(single.model_id).files == single.files
    assert group.info["replayed"] == [single.model_id]
    assert library.get(group.members[1]).info["seed"] == 1
    _check_reported_losses(library, reported)
    before = {e.model_id: e.files for e in library.entries()}

    _, replayed = _search(digits, tmp_path / "lib", "homogeneous", 2, 1, space)

    assert {e.model_id: e.files for e in library.entries()} == before
    assert [r["validation_loss"] for r in replayed] == group.learning_curve


def test_weighted_scores_match_the_grid_weighted_combination(tmp_path):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 50)
    library = Library.create(
        tmp_path / "lib", class_names="abc", validation_labels=labels, test_labels=None
    )
    members = []
    for index in range(3):
        probabilities = rng.dirichlet(np.ones(3), size=50)
        members.append(
            library.write(
                f"m{index}",
                config={},
                status="finished",
                validation_probabilities=probabilities,
            )
        )

    weights, loss, error = weighted_scores(library, members)

    stored = [m.validation_probabilities() for m in members]
    expected = best_grid_weights(stored, labels)
    assert weights == pytest.approx(expected)
    assert (loss, error) == pytest.approx(
        loss_and_error(combine(stored, expected), labels)
    )


# ----------------------------------------------------------- selection


@pytest.fixture
def adhoc_library(tmp_path):
    """Six measured models; ad-hoc ensembles of the two best and the two cheapest."""
    import torch

    rng = np.random.default_rng(0)
    validation, test = rng.integers(0, 3, 300), rng.integers(0, 3, 300)
    library = Library.create(
        tmp_path / "lib",
        class_names=["a", "b", "c"],
        validation_labels=validation,
        test_labels=test,
        channels=1,
        image_size=(8, 8),
    )
    costs = [3.0, 2.0, 0.5, 0.4, 0.2, 0.1]
    for index, (accuracy, cost) in enumerate(
        zip([0.9, 0.85, 0.7, 0.65, 0.6, 0.5], costs, strict=True)
    ):
        library.write(
            f"m{index}",
            config={},
            status="finished",
            state_dict={"weight": torch.zeros(1)},
            validation_probabilities=one_hot_noise(validation, accuracy, rng),
            test_probabilities=one_hot_noise(test, accuracy, rng),
            cost_seconds=cost,
        )
    for kind, members in [
        ("homogeneous", ["m0", "m1"]),
        ("heterogeneous", ["m2", "m3"]),
    ]:
        entries = [library.get(model_id) for model_id in members]
        weights, loss, error = weighted_scores(library, entries)
        library.write_group(
            AdHocGroup(
                group_id=group_id_for(kind, members),
                kind=kind,
                members=members,
                weights=weights,
                status="finished",
                validation_loss=loss,
                validation_error=error,
                learning_curve=[loss],
            )
        )
    return library


def test_adhoc_selection_picks_the_best_ensemble_that_fits_each_budget(
    adhoc_library, tmp_path
):
    report = select(
        adhoc_library,
        [6.0, 1.0, 0.5],
        methods=["smobf", "adhoc"],
        pruning_fraction=1.0,
        output=tmp_path / "run",
    )

    adhoc = {row.budget: row for row in report.rows if row.method == "adhoc"}
    assert adhoc[6.0].members == ["m0", "m1"] and adhoc[6.0].cost == 5.0
    assert adhoc[1.0].members == ["m2", "m3"] and adhoc[1.0].cost == pytest.approx(0.9)
    assert adhoc[1.0].ad_hoc == {
        "group": group_id_for("heterogeneous", ["m2", "m3"]),
        "kind": "heterogeneous",
    }
    # Nothing fits 0.5 (the cheapest ad-hoc ensemble costs 0.9); SMOBF still does.
    assert 0.5 not in adhoc
    assert [r.method for r in report.rows if r.budget == 0.5] == ["smobf"]
    assert any("no ad-hoc ensemble fits budget 0.5" in e for e in report.errors)

    row = adhoc[6.0]
    group = adhoc_library.get_group(row.ad_hoc["group"])
    members = [adhoc_library.get(m) for m in row.members]
    assert row.combiner == "weighted" and row.weights == pytest.approx(group.weights)
    assert row.validation_loss == pytest.approx(group.validation_loss, rel=1e-6)
    test = [m.test_probabilities() for m in members]
    expected = loss_and_error(combine(test, group.weights), adhoc_library.test_labels)
    assert (row.test_loss, row.test_error) == pytest.approx(expected)

    saved = Ensemble.load(row.saved_to)
    assert [m.model_id for m in saved.members] == ["m0", "m1"]
    assert [m.weight for m in saved.members] == pytest.approx(group.weights)
    assert saved.info["ad_hoc"]["kind"] == "homogeneous"
    assert saved.cost == 5.0
    document = json.loads(write_json(report, tmp_path / "results.json").read_text())
    assert {e["method"] for e in document["ensembles"]} == {"smobf", "adhoc"}
    assert plot_pareto(report, tmp_path / "pareto.png").stat().st_size > 0


def test_adhoc_selection_alone_answers_budgets_below_the_pruned_models(adhoc_library):
    # Pruning keeps m0 only (cost 3): post-hoc methods could not answer 1.0.
    report = select(adhoc_library, [1.0], methods=["adhoc"], pruning_fraction=0.1)

    assert [(row.method, row.members) for row in report.rows] == [
        ("adhoc", ["m2", "m3"])
    ]


def test_adhoc_selection_without_ad_hoc_ensembles_says_how_to_build_them(tmp_path):
    library = Library.create(
        tmp_path / "lib", class_names="ab", validation_labels=[0, 1], test_labels=None
    )
    library.write(
        "m0",
        config={},
        status="finished",
        validation_probabilities=np.array([[0.9, 0.1], [0.2, 0.8]]),
        cost_seconds=1.0,
    )

    with pytest.raises(LibraryError, match="deepens search --ad-hoc homogeneous"):
        select(library, [2.0], methods=["adhoc"])
    with pytest.raises(SelectionError, match="one of .*'single', 'adhoc'; received"):
        select(library, [2.0], methods=["ad-hoc"])


def test_the_cli_rejects_an_unknown_kind_before_loading_data(tmp_path):
    result = CliRunner().invoke(
        app, ["search", "--output", str(tmp_path), "--ad-hoc", "mixed"]
    )

    assert result.exit_code == 2
    assert "--ad-hoc" in result.output and "'homogeneous', 'heterogeneous'" in (
        result.output
    )
    assert not (tmp_path / "library").exists()


@pytest.mark.slow
def test_run_with_ad_hoc_ensembles_reports_and_saves_them(tmp_path):
    arguments = [
        "run",
        "--output",
        str(tmp_path),
        "--ad-hoc",
        "heterogeneous",
        "--ad-hoc-members",
        "2",
        "--max-trials",
        "2",
        "--max-epochs",
        "1",
        "--max-concurrent",
        "2",
        "--max-train-samples",
        "200",
        "--max-validation-samples",
        "100",
        "--max-test-samples",
        "100",
        "--cost-unit",
        "flops",
        "--pruning-fraction",
        "1",
        "--device",
        "cpu",
    ]

    result = CliRunner().invoke(app, arguments)

    assert result.exit_code == 0, result.output
    document = json.loads((tmp_path / "results.json").read_text())
    rows = [e for e in document["ensembles"] if e["method"] == "adhoc"]
    assert rows and all(row["cost"] <= row["budget"] for row in rows)
    assert all(row["ad_hoc"]["kind"] == "heterogeneous" for row in rows)
    assert all(Ensemble.load(row["saved_to"]).members for row in rows)
    assert "adhoc" in result.output
