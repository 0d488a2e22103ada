"""One trial: train the network a configuration describes and add it to the library.

The function :func:`train_trial` runs inside a Ray Tune worker. After every
epoch it commits the model (weights, validation probabilities, learning curve)
to the library *before* reporting the validation loss, so a trial that the
scheduler stops at that report is already in the library as it was then.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import random
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from deepens.augment import Augmentation
from deepens.data import ImageDataset
from deepens.library import Library
from deepens.models import build_model, count_flops, count_parameters
from deepens.space import SearchSpace
from deepens.training import (
    TrainingDiverged,
    cosine_schedule,
    cross_entropy,
    make_optimizer,
    predict_probabilities,
    train_epoch,
)

_logger = logging.getLogger(__name__)

METRIC = "validation_loss"


class TrialFailed(RuntimeError):
    """A trial could not train; the library records it with the reason."""


@dataclass(frozen=True)
class TrialJob:
    """What every trial of one search shares (sent once to the Ray workers)."""

    library_path: str
    space: dict[str, Any]
    max_epochs: int
    threads: int = 1
    seed: int = 0
    mixed_precision: bool = False
    checkpoints: bool = False
    optimizer: str = ""


def model_id_for(config: Mapping[str, Any], seed: int) -> str:
    """A stable id from the canonical configuration and seed.

    Two proposals that would train the same network get the same id, which is
    how the library keeps no duplicates and a resumed search skips models it
    already has.
    """
    text = json.dumps(
        {"config": dict(config), "seed": seed}, sort_keys=True, default=str
    )
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def _seed_everything(seed: int) -> torch.Generator:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def _device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def train_trial(
    config: dict[str, Any], *, dataset: ImageDataset, job: TrialJob
) -> None:
    """Ray Tune function trainable: train, commit each epoch, report its loss."""
    from ray import tune

    space = SearchSpace.from_dict(job.space)
    canonical = space.canonical(config)
    seed = int(config.get("seed", job.seed))
    model_id = model_id_for(canonical, seed)
    library = Library.open(job.library_path)

    existing = library.get(model_id)
    if existing is not None and existing.status in ("finished", "stopped"):
        if existing.epochs >= job.max_epochs or existing.status == "stopped":
            # Already trained by an earlier trial or run: replay, do not retrain.
            _logger.debug("model %s already in library; replaying its curve", model_id)
            for epoch, loss in enumerate(existing.learning_curve, start=1):
                tune.report({METRIC: loss, "epoch": epoch, "model_id": model_id})
            return

    torch.set_num_threads(max(1, job.threads))
    generator = _seed_everything(seed)
    device = _device()
    try:
        _train(canonical, model_id, seed, dataset, job, library, device, generator)
    except (TrainingDiverged, torch.OutOfMemoryError) as error:
        reason = f"{type(error).__name__}: {error}"
        entry = library.get(model_id)
        library.write(
            model_id,
            config=canonical,
            status="failed",
            info={**(entry.info if entry else {}), "reason": reason, "seed": seed},
        )
        if device.type == "cuda":
            torch.cuda.empty_cache()
        raise TrialFailed(f"model {model_id} failed: {reason}") from None


def _train(
    config: dict[str, Any],
    model_id: str,
    seed: int,
    dataset: ImageDataset,
    job: TrialJob,
    library: Library,
    device: torch.device,
    generator: torch.Generator,
) -> None:
    from ray import tune

    height, width = dataset.image_size
    model = build_model(
        config, dataset.channels, dataset.num_classes, max(height, width)
    )
    model.to(device)
    parameters = count_parameters(model)
    flops = count_flops(model, dataset.channels, dataset.image_size)
    optimizer = make_optimizer(model, config)
    augmentation = Augmentation(config).to(device)
    batch_size = min(int(config["batch_size"]), len(dataset.train_images))
    steps_per_epoch = -(-len(dataset.train_images) // batch_size)
    scheduler = cosine_schedule(optimizer, steps_per_epoch * job.max_epochs)
    validation_labels = dataset.validation_labels.numpy()

    curve: list[float] = []
    continued: dict[str, int] = {}
    checkpoint = tune.get_checkpoint() if job.checkpoints else None
    if checkpoint is not None:
        # A scheduler paused this trial (Hyperband); continue where it stopped.
        with checkpoint.as_directory() as folder:
            state = torch.load(Path(folder) / _CHECKPOINT_FILE, weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        generator.set_state(state["generator"])
        curve = list(state["curve"])
        continued["continued_after_epoch"] = len(curve)
        _logger.debug("model %s continues after epoch %d", model_id, len(curve))

    for epoch in range(len(curve) + 1, job.max_epochs + 1):
        started = time.perf_counter()
        train_loss = train_epoch(
            model,
            optimizer,
            augmentation,
            dataset.train_images,
            dataset.train_labels,
            batch_size=batch_size,
            device=device,
            generator=generator,
            autocast=job.mixed_precision and device.type == "cuda",
            scheduler=scheduler,
        )
        probabilities = predict_probabilities(
            model, dataset.validation_images, device=device
        )
        loss = cross_entropy(probabilities, validation_labels)
        if not math.isfinite(loss):
            raise TrainingDiverged(f"validation loss is {loss} after epoch {epoch}")
        curve.append(loss)

        finished = epoch == job.max_epochs
        library.write(
            model_id,
            config=config,
            status="finished" if finished else "training",
            learning_curve=curve,
            state_dict={k: v.detach().cpu() for k, v in model.state_dict().items()},
            validation_probabilities=probabilities,
            parameters=parameters,
            flops=flops,
            info={
                "seed": seed,
                "train_loss": train_loss,
                "epoch_seconds": time.perf_counter() - started,
                "source": "search",
                "optimizer": job.optimizer,
                **continued,
            },
        )
        metrics = {METRIC: loss, "epoch": epoch, "model_id": model_id}
        if not job.checkpoints:
            tune.report(metrics)
            continue
        with tempfile.TemporaryDirectory() as folder:
            state = {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "generator": generator.get_state(),
                "curve": curve,
            }
            torch.save(state, Path(folder) / _CHECKPOINT_FILE)
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))


_CHECKPOINT_FILE = "trial.pt"


def trial_library_path(path: str | Path) -> str:
    """The library path as trials on any node should see it (absolute)."""
    return str(Path(path).resolve())
