import itertools

import pytest
import torch

from deepens.cost import measure_seconds, torch_threads
from deepens.models import build_model


def _model():
    config = {
        "block_type": "v1",
        "activation": "relu",
        "stem_filters": 4,
        "filter_multiplier": 4,
        "blocks_stage1": 1,
        "blocks_stage2": 0,
        "blocks_stage3": 0,
        "blocks_stage4": 0,
    }
    return build_model(config, 1, 3, 8)


def test_cost_is_the_median_of_the_timed_repeats_after_warmup():
    # Each timed pass reads the clock twice; durations 5, 1, 3 -> median 3.
    ticks = iter([0, 5, 10, 11, 20, 23])

    seconds = measure_seconds(
        _model(), 1, (8, 8), images=16, repeats=3, warmup=2, clock=lambda: next(ticks)
    )

    assert seconds == 3


def test_cost_grows_with_the_number_of_images():
    model = _model()

    few = measure_seconds(model, 1, (8, 8), images=50, repeats=3)
    many = measure_seconds(model, 1, (8, 8), images=5000, repeats=3)

    assert many > few > 0


def test_threads_are_restored_after_measuring():
    before = torch.get_num_threads()

    with torch_threads(1):
        inside = torch.get_num_threads()

    assert inside == 1 and torch.get_num_threads() == before


@pytest.mark.parametrize("arguments", [{"repeats": 0}, {"warmup": -1}, {"images": 0}])
def test_bad_measurement_settings_are_rejected(arguments):
    with pytest.raises(ValueError, match="repeats must be"):
        measure_seconds(_model(), 1, (8, 8), **arguments)


def test_measurement_uses_the_counted_clock_calls_only():
    counter = itertools.count()

    measure_seconds(
        _model(),
        1,
        (8, 8),
        images=4,
        repeats=4,
        warmup=1,
        clock=lambda: float(next(counter)),
    )

    assert next(counter) == 8
