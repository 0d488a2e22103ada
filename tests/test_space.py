import json

import numpy as np
import pytest

from deepens.errors import SpaceError
from deepens.space import REQUIRED, SearchSpace


def _document(**overrides):
    document = SearchSpace.load("small").to_dict()
    document["parameters"].update(overrides)
    return document


@pytest.mark.parametrize("preset", ["paper", "small"])
def test_presets_load_and_round_trip(preset):
    space = SearchSpace.load(preset)

    again = SearchSpace.from_dict(space.to_dict())

    assert again.to_dict() == space.to_dict()
    assert set(REQUIRED) <= set(space.parameters)


def test_paper_preset_matches_table_3():
    space = SearchSpace.load("paper").parameters

    assert (space["learning_rate"].low, space["learning_rate"].high) == (0.001, 0.01)
    assert space["learning_rate"].log
    assert (space["batch_size"].low, space["batch_size"].high) == (8, 48)
    assert space["block_type"].choices == ("v1", "v2", "next")
    assert space["activation"].choices == ("tanh", "relu", "elu")
    assert (space["blocks_stage3"].low, space["blocks_stage3"].high) == (1, 11)
    assert space["rotation"].high == 90
    assert space["shear"].high == 0.3


def test_sampling_respects_bounds_types_and_conditions():
    space = SearchSpace.load("paper")
    rng = np.random.default_rng(1)

    configs = [space.sample(rng) for _ in range(300)]

    for config in configs:
        assert 0.001 <= config["learning_rate"] <= 0.01
        assert isinstance(config["batch_size"], int) and 8 <= config["batch_size"] <= 48
        assert ("cardinality" in config) == (config["block_type"] == "next")
    rates = np.log10([c["learning_rate"] for c in configs])
    # Log-uniform: about half the draws fall below the geometric middle, 10**-2.5.
    assert 0.35 < np.mean(rates < -2.5) < 0.65


def test_canonical_drops_inactive_parameters_and_rounds_integers():
    space = SearchSpace.load("small")
    config = space.sample(np.random.default_rng(0))
    config.update(block_type="v1", cardinality=3, batch_size=40.6)

    canonical = space.canonical(config)

    assert "cardinality" not in canonical
    assert canonical["batch_size"] == 41


def test_space_file_round_trip(tmp_path):
    path = tmp_path / "space.json"
    path.write_text(json.dumps(_document(batch_size={"type": "fixed", "value": 16})))

    space = SearchSpace.load(path)

    assert space.sample(np.random.default_rng(0))["batch_size"] == 16


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"learning_rat": {"type": "float", "low": 0.1, "high": 0.2}}, "learning_rat"),
        (
            {"l2": {"type": "float", "low": 0.5, "high": 0.1}},
            "'l2' has low 0.5 above high",
        ),
        ({"l2": {"type": "floot", "low": 0, "high": 1}}, "allowed types"),
        ({"learning_rate": {"type": "float", "low": 0, "high": 1, "log": True}}, "log"),
        ({"activation": {"type": "categorical", "choices": ["gelu"]}}, "gelu"),
        ({"batch_size": {"type": "int", "low": 1.5, "high": 4}}, "whole-number"),
        (
            {
                "cardinality": {
                    "type": "int",
                    "low": 2,
                    "high": 4,
                    "condition": {"block_type": ["v9"]},
                }
            },
            "v9",
        ),
    ],
)
def test_invalid_spaces_name_the_problem(overrides, message):
    with pytest.raises(SpaceError, match=message):
        SearchSpace.from_dict(_document(**overrides))


def test_unknown_preset_or_missing_file():
    with pytest.raises(SpaceError, match="neither a preset"):
        SearchSpace.load("tiny")


def test_unreadable_space_file(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text("{not json")

    with pytest.raises(SpaceError, match="not a readable JSON"):
        SearchSpace.load(path)
