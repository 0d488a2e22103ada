"""Inference cost of a model: seconds to predict 2,000 images.

The paper's budget unit is the time a model takes to predict 2,000 images on
the target device. It is measured after a warm-up pass, with the device
synchronised around each timed pass, as the median of several repeats, and for
every model under the same conditions: one model at a time, with the same
number of CPU threads, never while trials train. FLOPs and parameter counts are
the deterministic alternatives (see :mod:`deepens.models`).
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import nn

from deepens.data import ImageDataset
from deepens.library import Library
from deepens.models import load_model
from deepens.training import predict_probabilities

_logger = logging.getLogger(__name__)

COST_IMAGES = 2000


@contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run a block with a fixed number of intra-op CPU threads, then restore."""
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_seconds(
    model: nn.Module,
    channels: int,
    image_size: tuple[int, int],
    *,
    device: torch.device | str = "cpu",
    images: int = COST_IMAGES,
    repeats: int = 5,
    warmup: int = 1,
    threads: int | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> float:
    """Median wall time, in seconds, for ``model`` to predict ``images`` images.

    The input is a fixed pseudo-random uint8 batch of the model's input shape,
    put through the same path as real prediction (transfer, scaling, softmax).

    Parameters
    ----------
    model : nn.Module
        The network, already on ``device``.
    channels, image_size : int, tuple of int
        The input shape.
    device : str or torch.device
        Where the model runs; CUDA timings synchronise around each pass.
    images : int
        How many images one timed pass predicts (2,000 in the paper).
    repeats, warmup : int
        Timed passes (the median is returned) and untimed passes before them.
    threads : int, optional
        CPU threads to time with; the same for every model of a library.
    clock : callable
        The timer, replaceable in tests.
    """
    if repeats < 1 or warmup < 0 or images < 1:
        raise ValueError(
            "repeats must be >= 1, warmup >= 0 and images >= 1; "
            f"got repeats={repeats}, "
            f"warmup={warmup}, images={images}"
        )
    device = torch.device(device)
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randint(0, 256, (images, channels, *image_size), generator=generator)
    inputs = inputs.to(torch.uint8)

    timings = []
    with torch_threads(threads):
        for _ in range(warmup):
            predict_probabilities(model, inputs, device=device)
        _synchronize(device)
        for _ in range(repeats):
            _synchronize(device)
            start = clock()
            predict_probabilities(model, inputs, device=device)
            _synchronize(device)
            timings.append(clock() - start)
    seconds = statistics.median(timings)
    _logger.debug("measured %.4f s per %d images (runs: %s)", seconds, images, timings)
    return seconds


def measure_library(
    library: Library,
    dataset: ImageDataset,
    *,
    device: torch.device | str = "cpu",
    threads: int | None = None,
    repeats: int = 3,
    listener: Callable[[int, int, str], None] | None = None,
) -> int:
    """Measure every trained entry that lacks a cost or test probabilities.

    One model at a time, on ``device`` with ``threads`` CPU threads: its cost in
    seconds for 2,000 images and its class probabilities on the test split,
    when the data set has one. Returns how many entries were measured.
    """
    # Without a test split (dataset_from_arrays) there is only a cost to measure.
    has_test = len(dataset.test_images) > 0
    pending = [
        entry
        for entry in library.entries(("finished", "stopped"))
        if entry.has_weights
        and (entry.cost_seconds is None or (has_test and "test" not in entry.files))
    ]
    height, width = dataset.image_size
    for position, entry in enumerate(pending, start=1):
        weights = entry.weights_path()
        if weights is None:
            continue
        with torch_threads(threads):
            model = load_model(
                entry.config,
                weights,
                in_channels=dataset.channels,
                num_classes=dataset.num_classes,
                image_size=max(height, width),
                device=device,
            )
            # Predicting the test split first doubles as the timing's warm-up:
            # same model, same path, allocator and caches already primed.
            test = (
                predict_probabilities(model, dataset.test_images, device=device)
                if has_test
                else None
            )
            seconds = measure_seconds(
                model,
                dataset.channels,
                dataset.image_size,
                device=device,
                repeats=repeats,
                warmup=0 if len(dataset.test_images) >= COST_IMAGES else 1,
            )
        library.write(
            entry.model_id,
            config=entry.config,
            status=entry.status,
            test_probabilities=test,
            cost_seconds=seconds,
            info={**entry.info, "cost_device": str(device), "cost_threads": threads},
        )
        _logger.debug("model %s costs %.4f s per 2000 images", entry.model_id, seconds)
        if listener is not None:
            listener(position, len(pending), entry.model_id)
    return len(pending)
