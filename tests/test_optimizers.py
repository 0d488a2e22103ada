"""Every optimiser: the space translated into its terms, and a short real search."""

import math
import pickle
from collections import Counter

import numpy as np
import optuna
import pytest
from spaces import tiny_space

from deepens.data import load_dataset
from deepens.errors import SearchError
from deepens.library import Library
from deepens.optimizers import (
    OPTIMIZERS,
    OptimizerInfo,
    check_space,
    make_optimizer_setup,
)
from deepens.optimizers.optuna_samplers import population_size, startup_trials
from deepens.optimizers.smac_searcher import SMACSearch
from deepens.optimizers.translate import (
    OptunaDefineByRun,
    constant_values,
    plain_config,
    to_configspace,
)
from deepens.search import SearchSettings, run_search
from deepens.space import SearchSpace
from deepens.trial import model_id_for
from deepens.workflow import select

PAPER_NAMES = {"random", "asha", "hyperband", "bohb", "tpe", "gp", "ga", "smac"}


def _check_condition(config):
    """cardinality exists exactly when the block type is ResNeXt's."""
    assert ("cardinality" in config) == (config["block_type"] == "next"), config


# ------------------------------------------------------------ translation
def test_the_eight_optimisers_of_the_paper_are_offered():
    assert set(OPTIMIZERS) == PAPER_NAMES


def test_an_unknown_optimiser_is_refused_with_the_known_names():
    settings = SearchSettings(optimizer="hyprband")
    with pytest.raises(SearchError, match="'hyprband' is unknown.*hyperband"):
        make_optimizer_setup(tiny_space(), settings)
    with pytest.raises(SearchError, match="'hyprband' is unknown"):
        settings.validate()


def test_configspace_keeps_log_scales_integers_and_the_condition():
    space = SearchSpace.load("paper")
    configspace = to_configspace(space, seed=0)

    learning_rate = configspace["learning_rate"]
    assert learning_rate.log and learning_rate.lower == pytest.approx(0.001)
    assert type(configspace["batch_size"]).__name__.startswith("Uniform" + "Integer")
    conditions = configspace.conditions
    assert [c.child.name for c in conditions] == ["cardinality"]
    assert conditions[0].parent.name == "block_type"
    for sample in configspace.sample_configuration(200):
        config = plain_config(space, dict(sample))
        _check_condition(config)
        assert isinstance(config["batch_size"], int)
        assert isinstance(config["block_type"], str)
        assert 0.001 <= config["learning_rate"] <= 0.01


def test_a_condition_with_several_values_or_parents_reaches_configspace():
    space = tiny_space(
        batch_size={"type": "categorical", "choices": [32, 64]},
        cardinality={
            "type": "int",
            "low": 2,
            "high": 4,
            "condition": {"block_type": ["v2", "next"], "batch_size": [32]},
        },
    )
    configspace = to_configspace(space, seed=0)
    for sample in configspace.sample_configuration(300):
        config = plain_config(space, dict(sample))
        active = config["block_type"] in ("v2", "next") and config["batch_size"] == 32
        assert ("cardinality" in config) == active


def test_optuna_suggests_a_conditional_parameter_only_when_it_applies():
    space = SearchSpace.load("paper")
    define_by_run = pickle.loads(pickle.dumps(OptunaDefineByRun(space)))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = Counter()
    for _ in range(40):
        trial = study.ask()
        define_by_run(trial)
        config = {**constant_values(space), **trial.params}
        _check_condition(config)
        assert trial.distributions["learning_rate"].log
        assert isinstance(trial.params["blocks_stage1"], int)
        seen[config["block_type"]] += 1
        study.tell(trial, 1.0)
    assert set(seen) == {"v1", "v2", "next"}


def test_fixed_and_single_value_ranges_reach_trials_as_constants():
    space = tiny_space(rotation={"type": "float", "low": 5.0, "high": 5.0})
    constants = constant_values(space)
    assert constants["rotation"] == 5.0 and constants["stem_filters"] == 4
    assert "rotation" not in to_configspace(space, seed=0)


def test_plain_config_turns_numpy_values_into_the_space_types():
    space = tiny_space(batch_size={"type": "categorical", "choices": [32, 64]})
    config = plain_config(
        space,
        {
            "batch_size": np.int64(64),
            "block_type": np.str_("v2"),
            "zoom": np.float64(0.1),
        },
    )
    assert config == {"batch_size": 64, "block_type": "v2", "zoom": 0.1}
    assert type(config["batch_size"]) is int and type(config["block_type"]) is str
    # The same network gets the same model id whatever types proposed it.
    assert model_id_for(config, 0) == model_id_for(
        {"batch_size": 64, "block_type": "v2", "zoom": 0.1}, 0
    )


def test_an_optimiser_without_conditions_names_the_conditional_parameter():
    flat = OptimizerInfo(
        "flat", "no conditions", "none", setup=None, supports_conditions=False
    )
    with pytest.raises(SearchError, match="cannot express conditions.*'cardinality'"):
        check_space(flat, tiny_space())
    # A space without conditions passes.
    document = tiny_space().to_dict()
    del document["parameters"]["cardinality"]
    check_space(flat, SearchSpace.from_dict(document))


@pytest.mark.parametrize("name", sorted(PAPER_NAMES))
def test_every_searcher_survives_pickling_as_ray_tune_checkpoints_it(name):
    settings = SearchSettings(optimizer=name, max_trials=8, max_epochs=2)
    setup = make_optimizer_setup(tiny_space(), settings)
    copy = pickle.loads(pickle.dumps(setup.searcher))
    assert type(copy) is type(setup.searcher)
    assert OPTIMIZERS[name].pauses_trials == (name in ("hyperband", "bohb"))


def test_the_ga_population_and_random_start_grow_with_the_search():
    assert population_size(8) == 4
    assert population_size(100) == 25
    assert population_size(10_000) == 50
    assert [startup_trials(n) for n in (8, 24, 100)] == [4, 6, 10]
    settings = SearchSettings(optimizer="tpe", max_trials=24)
    sampler = make_optimizer_setup(tiny_space(), settings).searcher._sampler
    assert sampler._n_startup_trials == 6


def test_smac_learns_from_results_and_keeps_them_across_pickling():
    space = tiny_space()
    searcher = SMACSearch(space, seed=0, max_trials=12)
    proposals = {f"t{i}": searcher.suggest(f"t{i}") for i in range(4)}
    for config in proposals.values():
        _check_condition(config)
    for index, trial_id in enumerate(proposals):
        result = None if index == 3 else {"validation_loss": 1.0 + index}
        searcher.on_trial_complete(trial_id, result, error=index == 3)

    restored = pickle.loads(pickle.dumps(searcher))

    assert restored.observations == searcher.observations
    assert [loss for _, loss in restored.observations] == [1.0, 2.0, 3.0, None]
    following = restored.suggest("t4")
    _check_condition(following)
    assert following not in list(proposals.values())
    assert restored._facade().runhistory.finished == 4


# ---------------------------------------------------------- short searches
@pytest.fixture(scope="module")
def digits():
    return load_dataset(
        "digits",
        max_train_samples=160,
        max_validation_samples=90,
        max_test_samples=90,
    )


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(PAPER_NAMES))
def test_each_optimiser_fills_a_library_that_selection_can_use(name, digits, tmp_path):
    space = tiny_space(block_type={"type": "categorical", "choices": ["v1", "next"]})
    settings = SearchSettings(
        optimizer=name,
        max_trials=4,
        max_epochs=2,
        grace_period=1,
        reduction_factor=2,
        max_concurrent_trials=2,
        seed=5,
    )

    summary = run_search(digits, space, tmp_path / "lib", settings)

    library = Library.open(tmp_path / "lib")
    entries = library.entries()
    usable = [e for e in entries if e.status in ("finished", "stopped")]
    assert summary.trials_started == 4 and summary.trials_failed == 0
    assert len(usable) == len(entries) >= 3
    assert summary.library_size == len(usable)
    keys = [model_id_for(e.config, e.info["seed"]) for e in entries]
    assert sorted(keys) == sorted(e.model_id for e in entries)
    for entry in entries:
        _check_condition(entry.config)
        assert entry.config == space.canonical(entry.config)
        assert 1 <= entry.epochs <= 2
        assert all(math.isfinite(loss) for loss in entry.learning_curve)
    largest = sum(e.flops for e in usable)
    report = select(library, [largest], cost_unit="flops", methods=["smobf"])
    assert report.rows and report.rows[0].cost <= largest


@pytest.mark.slow
def test_hyperband_continues_paused_trials_from_their_checkpoint(digits, tmp_path):
    settings = SearchSettings(
        optimizer="hyperband",
        max_trials=6,
        max_epochs=4,
        reduction_factor=2,
        max_concurrent_trials=2,
        seed=2,
    )

    summary = run_search(digits, tiny_space(), tmp_path / "lib", settings)

    # A paused trial started again is still one trial.
    assert summary.trials_started == 6
    entries = Library.open(tmp_path / "lib").entries()
    continued = [e for e in entries if e.info.get("continued_after_epoch")]
    assert continued, "no paused trial was resumed from its checkpoint"
    for entry in continued:
        # Training went on: the curve is whole, not restarted at epoch 1.
        assert (
            entry.epochs
            == len(entry.learning_curve)
            > entry.info["continued_after_epoch"]
        )


@pytest.mark.parametrize("name", ["hyperband", "bohb"])
def test_ad_hoc_ensembles_are_refused_with_optimisers_that_pause_trials(name):
    settings = SearchSettings(optimizer=name, ad_hoc="homogeneous")
    with pytest.raises(SearchError, match=f"--ad-hoc cannot be combined.*'{name}'"):
        settings.validate()
    SearchSettings(optimizer="tpe", ad_hoc="homogeneous").validate()


def test_the_cli_lists_every_optimiser_with_its_package():
    from typer.testing import CliRunner

    from deepens.cli import app

    result = CliRunner().invoke(app, ["optimizers"], env={"COLUMNS": "160"})

    assert result.exit_code == 0, result.output
    for name in PAPER_NAMES:
        assert f" {name} " in result.output
    assert "SMAC3" in result.output and "hpbandster" in result.output


def test_the_cli_refuses_an_unknown_optimiser_before_loading_data(tmp_path):
    from typer.testing import CliRunner

    from deepens.cli import app

    result = CliRunner().invoke(
        app,
        ["search", "--optimizer", "nsga", "--data", str(tmp_path / "missing")],
        env={"COLUMNS": "160"},
    )

    assert result.exit_code == 2
    assert "'nsga' is unknown" in result.output and "smac" in result.output


def test_smac_state_saved_by_ray_tune_restores_into_a_new_searcher(tmp_path):
    searcher = SMACSearch(tiny_space(), seed=3, max_trials=10)
    for index in range(3):
        searcher.suggest(f"t{index}")
        searcher.on_trial_complete(f"t{index}", {"validation_loss": 2.0 - index})
    searcher.suggest("t3")  # running when the driver died

    searcher.save(str(tmp_path / "searcher.pkl"))
    restored = SMACSearch(tiny_space(), seed=0, max_trials=1)
    restored.restore(str(tmp_path / "searcher.pkl"))

    assert restored.seed == 3 and restored.observations == searcher.observations
    assert set(restored.proposed) == {"t3"}
    restored.on_trial_complete("t3", {"validation_loss": 0.5})
    assert restored._facade().runhistory.finished == 4
    _check_condition(restored.suggest("t4"))


@pytest.mark.parametrize("name", ["tpe", "gp", "ga", "smac", "bohb"])
def test_searchers_with_their_own_space_search_a_heterogeneous_ensemble(name):
    from deepens.adhoc import heterogeneous_space

    space = heterogeneous_space(tiny_space(), 2)
    settings = SearchSettings(optimizer=name, max_trials=8, max_epochs=2)
    setup = make_optimizer_setup(space, settings)
    searcher = pickle.loads(pickle.dumps(setup.searcher))

    config = {**constant_values(space), **searcher.suggest("t0")}

    for member in ("member1", "member2"):
        own = {
            key.removeprefix(f"{member}_"): value
            for key, value in config.items()
            if key.startswith(f"{member}_")
        }
        _check_condition(own)
        assert "learning_rate" in own
