"""One trial: train the network a configuration describes and add it to the library.

The function :func:`train_trial` runs inside a Ray Tune worker. After every
epoch it commits the model (weights, validation probabilities, learning curve)
to the library *before* reporting the validation loss, so a trial that the
scheduler stops at that report is already in the library as it was then.

Before training, a trial claims its model (see :mod:`deepens.claims`), so two
trials proposing the same configuration never both train it: the second waits
and replays the first's entry. Each training started is recorded in the entry's
``info["attempts"]`` with the run, host and Ray node it ran on.
"""

from __future__ import annotations

import gc
import hashlib
import json
import logging
import math
import random
import socket
import tempfile
import time
import traceback
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from deepens.augment import Augmentation
from deepens.claims import Claimant, ModelClaim
from deepens.data import ImageDataset
from deepens.library import Library, LibraryEntry
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
    """What every trial of one search shares (sent once to the Ray workers).

    ``search_id`` names the search (its record in ``searches.json``) and
    ``run_id`` the driver process running it now: a resumed search keeps its
    search id and gets a new run id, which is how its trials know the claims
    of the killed run are stale.
    """

    library_path: str
    space: dict[str, Any]
    max_epochs: int
    threads: int = 1
    seed: int = 0
    mixed_precision: bool = False
    checkpoints: bool = False
    optimizer: str = ""
    search_id: str = ""
    run_id: str = ""


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
    """Ray Tune function trainable: train, commit each epoch, report its loss.

    A model the library already holds is replayed (its learning curve reported
    again) instead of trained; a model another live trial is training is waited
    for, then replayed. Only the trial holding the model's claim trains it.
    """
    space = SearchSpace.from_dict(job.space)
    canonical = space.canonical(config)
    seed = int(config.get("seed", job.seed))
    model_id = model_id_for(canonical, seed)
    library = Library.open(job.library_path)

    if _replayed(library.get(model_id), job):
        return
    claim = ModelClaim(
        job.library_path, model_id, Claimant.here(job.search_id, job.run_id)
    )
    claim.acquire()
    try:
        # Another trial may have trained it while this one waited for the claim.
        existing = library.get(model_id)
        if _replayed(existing, job):
            return
        failure = _train_claimed(canonical, model_id, seed, dataset, job, library)
    finally:
        claim.release()
    if failure is not None:
        raise TrialFailed(f"model {model_id} failed: {failure}")


def _replayed(entry: LibraryEntry | None, job: TrialJob) -> bool:
    """Report an entry the library holds instead of training it again.

    Finished and stopped entries replay their learning curve; an entry that
    failed in this same search (a resumed search meeting it again) fails again
    without training. Returns whether the entry was replayed.
    """
    from ray import tune

    if entry is None:
        return False
    if entry.status == "failed" and entry.info.get("search") == job.search_id:
        raise TrialFailed(
            f"model {entry.model_id} failed: {entry.info.get('reason', 'unknown')}"
        )
    if entry.status == "stopped" or (
        entry.status == "finished" and entry.epochs >= job.max_epochs
    ):
        _logger.debug("model %s is in the library; replaying it", entry.model_id)
        for epoch, loss in enumerate(entry.learning_curve, start=1):
            tune.report({METRIC: loss, "epoch": epoch, "model_id": entry.model_id})
        return True
    return False


def _train_claimed(
    config: dict[str, Any],
    model_id: str,
    seed: int,
    dataset: ImageDataset,
    job: TrialJob,
    library: Library,
) -> str | None:
    """Train a claimed model; return why it failed, or None.

    A failure (divergence, out of memory) is recorded in the library as a
    failed entry with its reason, after the memory the trial held is freed.
    """
    torch.set_num_threads(max(1, job.threads))
    generator = _seed_everything(seed)
    device = _device()
    previous = library.get(model_id)
    where = _where()
    info = {
        "seed": seed,
        "source": "search",
        "search": job.search_id,
        **where,
        # One record per training actually started; replays add none.
        "attempts": [
            *(previous.info.get("attempts", []) if previous else []),
            {"run": job.run_id, "started": time.time(), **where},
        ],
    }
    failure = None
    try:
        _train(config, model_id, dataset, job, library, device, generator, info)
    except (TrainingDiverged, MemoryError, RuntimeError) as error:
        if not isinstance(error, TrainingDiverged) and not is_out_of_memory(error):
            raise
        failure = f"{type(error).__name__}: {error}"
        # The traceback's frames hold the model, optimiser and batches; whoever
        # still holds the error must not keep them alive.
        traceback.clear_frames(error.__traceback__)
    if failure is None:
        return None

    _free_memory(device)
    entry = library.get(model_id)
    library.write(
        model_id,
        config=config,
        status="failed",
        info={**(entry.info if entry else {}), **info, "reason": failure},
    )
    _logger.debug("model %s failed: %s", model_id, failure)
    return failure


def is_out_of_memory(error: BaseException) -> bool:
    """Whether an error says memory ran out (CUDA, or the CPU allocator)."""
    if isinstance(error, torch.OutOfMemoryError | MemoryError):
        return True
    message = str(error).lower()
    return any(
        phrase in message
        for phrase in ("out of memory", "can't allocate memory", "cannot allocate")
    )


def _free_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _where() -> dict[str, Any]:
    """The host and Ray node this trial runs on."""
    import ray

    node_id = None
    if ray.is_initialized():
        node_id = ray.get_runtime_context().get_node_id()
    return {"hostname": socket.gethostname(), "node_id": node_id}


def _train(
    config: dict[str, Any],
    model_id: str,
    dataset: ImageDataset,
    job: TrialJob,
    library: Library,
    device: torch.device,
    generator: torch.Generator,
    info: dict[str, Any],
) -> None:

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

    curve = _restore_checkpoint(model, optimizer, scheduler, generator, job)
    continued = {"continued_after_epoch": len(curve)} if curve else {}

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
                **info,
                "train_loss": train_loss,
                "epoch_seconds": time.perf_counter() - started,
                "optimizer": job.optimizer,
                **continued,
            },
        )
        try:
            _report(
                job,
                loss,
                epoch,
                model_id,
                model,
                optimizer,
                scheduler,
                generator,
                curve,
            )
        except SystemExit:
            # Ray Tune ends a trial its scheduler stops (or the time budget
            # ends) by raising SystemExit in report. Say so in the library now,
            # so that a trial waiting for this model replays it. A scheduler
            # that pauses trials raises it too, and the trial continues later
            # from its checkpoint: its entry stays in training.
            if not finished and not job.checkpoints:
                library.write(model_id, config=config, status="stopped")
            raise


def _restore_checkpoint(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    generator: torch.Generator,
    job: TrialJob,
) -> list[float]:
    """Continue a trial a scheduler paused (Hyperband); return its curve so far."""
    from ray import tune

    checkpoint = tune.get_checkpoint() if job.checkpoints else None
    if checkpoint is None:
        return []
    with checkpoint.as_directory() as folder:
        state = torch.load(Path(folder) / _CHECKPOINT_FILE, weights_only=False)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    generator.set_state(state["generator"])
    _logger.debug("trial continues after epoch %d", len(state["curve"]))
    return list(state["curve"])


def _report(
    job: TrialJob,
    loss: float,
    epoch: int,
    model_id: str,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    generator: torch.Generator,
    curve: list[float],
) -> None:
    """Report an epoch's loss, with a checkpoint when the scheduler pauses trials."""
    from ray import tune

    metrics = {METRIC: loss, "epoch": epoch, "model_id": model_id}
    if not job.checkpoints:
        tune.report(metrics)
        return
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
