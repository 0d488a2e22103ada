"""Ad-hoc ensembles: search whole ensembles of a fixed size, one per trial.

The paper contrasts post-hoc ensembles, selected from a library after the
search, with ad-hoc ones, whose hyperparameters the optimiser searches
directly (its Table 2):

* **homogeneous**: one network configuration, trained with ``K`` seeds. The
  optimiser searches the user's space unchanged.
* **heterogeneous**: one configuration per member. The optimiser searches
  :func:`heterogeneous_space`, the user's space with every parameter repeated
  per member under the prefix ``member<i>_``, conditions included, so every
  optimiser that reads a :class:`~deepens.space.SearchSpace` can search it.

One Ray Tune trial trains the whole ensemble, its members in lockstep one
epoch at a time, so a scheduler can stop an ensemble at a rung like any trial.
After each epoch every member is committed to the library as an ordinary entry
and the trial reports the validation loss of the weighted average whose
weights are the validation-best of the grid {1, 2, 4, 8} (normalised,
redundant weightings removed; :func:`deepens.combiners.best_grid_weights`).
The ensemble itself is recorded as an :class:`~deepens.library.AdHocGroup`, so
selection can pick it (method ``adhoc``) and SMOBF can reuse its members.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import torch

from deepens.augment import Augmentation
from deepens.combiners import MAX_GRID_MEMBERS, best_grid_weights, combine
from deepens.data import ImageDataset
from deepens.errors import LibraryError, SearchError
from deepens.library import AdHocGroup, Library, LibraryEntry, loss_and_error
from deepens.models import build_model, count_flops, count_parameters
from deepens.space import Parameter, SearchSpace
from deepens.training import (
    TrainingDiverged,
    cosine_schedule,
    cross_entropy,
    make_optimizer,
    predict_probabilities,
    train_epoch,
)
from deepens.trial import (
    METRIC,
    TrialFailed,
    TrialJob,
    _device,
    _seed_everything,
    is_out_of_memory,
    model_id_for,
)

if TYPE_CHECKING:
    from deepens.search import SearchSettings

_logger = logging.getLogger(__name__)

KINDS = ("homogeneous", "heterogeneous")
"""The kinds of ad-hoc ensemble."""

DEFAULT_MEMBERS = 4
"""Members of an ad-hoc ensemble, as in the paper."""

MIN_MEMBERS = 2


def check_kind(kind: str) -> None:
    """Raise :class:`SearchError` unless ``kind`` is one of :data:`KINDS`."""
    if kind not in KINDS:
        raise SearchError(
            f"ad_hoc (--ad-hoc) must be one of {', '.join(map(repr, KINDS))}; "
            f"got {kind!r}"
        )


def check_members(members: int) -> None:
    """Raise :class:`SearchError` unless ``members`` is a whole number from 2 to 8."""
    is_integer = isinstance(members, int) and not isinstance(members, bool)
    if not is_integer or not MIN_MEMBERS <= members <= MAX_GRID_MEMBERS:
        # The weight grid has 4**K points; beyond 8 members it is out of reach.
        raise SearchError(
            f"ad_hoc_members (--ad-hoc-members) must be a whole number from "
            f"{MIN_MEMBERS} to {MAX_GRID_MEMBERS}; got {members!r}"
        )


def check_ensemble(kind: str, members: int) -> None:
    """Raise :class:`SearchError` for an unknown kind or an unusable member count.

    The messages name the settings and their command-line options.
    """
    check_kind(kind)
    check_members(members)


def member_prefix(index: int) -> str:
    """Prefix of member ``index``'s parameters (1-based): ``member<index>_``."""
    return f"member{index}_"


def heterogeneous_space(space: SearchSpace, members: int) -> SearchSpace:
    """The user's space with every parameter repeated once per member.

    Member ``i``'s copy of ``learning_rate`` is ``member<i>_learning_rate``; a
    condition on ``block_type`` becomes one on the same member's
    ``member<i>_block_type``. Members are listed one after the other, so each
    condition still names a parameter listed before it.
    """
    check_ensemble("heterogeneous", members)
    parameters: dict[str, Parameter] = {}
    for index in range(1, members + 1):
        prefix = member_prefix(index)
        for name, parameter in space.parameters.items():
            condition = {
                prefix + other: allowed
                for other, allowed in parameter.condition.items()
            }
            parameters[prefix + name] = replace(
                parameter, name=prefix + name, condition=condition
            )
    return SearchSpace(
        f"{space.name}-heterogeneous-{members}",
        parameters,
        f"{members} members, each from: {space.description or space.name}",
    )


def ensemble_space(space: SearchSpace, kind: str, members: int) -> SearchSpace:
    """The space the optimiser searches for ad-hoc ensembles of ``kind``."""
    check_ensemble(kind, members)
    if kind == "homogeneous":
        return space
    return heterogeneous_space(space, members)


def member_configs(
    space: SearchSpace, kind: str, members: int, config: Mapping[str, Any]
) -> list[dict[str, Any]]:
    """The canonical configuration of each member of a proposed ensemble.

    Parameters
    ----------
    space : SearchSpace
        The user's space (not the heterogeneous one).
    kind, members : str, int
        The ensemble's kind and size.
    config : mapping
        What the optimiser proposed in :func:`ensemble_space`.
    """
    check_ensemble(kind, members)
    if kind == "homogeneous":
        return [space.canonical(config)] * members
    configs = []
    for index in range(1, members + 1):
        prefix = member_prefix(index)
        own = {
            name[len(prefix) :]: value
            for name, value in config.items()
            if name.startswith(prefix)
        }
        configs.append(space.canonical(own))
    return configs


def member_seeds(seed: int, members: int) -> list[int]:
    """One seed per member; distinct, so no two members share a model id."""
    return [seed + index for index in range(members)]


def group_id_for(kind: str, model_ids: Sequence[str]) -> str:
    """A stable id of an ad-hoc ensemble from its kind and its members."""
    text = json.dumps({"kind": kind, "members": list(model_ids)})
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def weighted_scores(
    library: Library, members: Sequence[LibraryEntry]
) -> tuple[list[float], float, float]:
    """Grid weights, validation loss and error of the members' weighted average.

    Uses the validation probabilities as stored (float16), the same ones
    selection later reads, so the recorded loss is the one selection sees.
    """
    probabilities = [member.validation_probabilities() for member in members]
    labels = library.validation_labels
    weights = best_grid_weights(probabilities, labels, num_classes=library.num_classes)
    loss, error = loss_and_error(combine(probabilities, weights=weights), labels)
    return [float(weight) for weight in weights], loss, error


def close_interrupted_groups(library: Library) -> None:
    """Ensembles still marked as training were stopped early by the scheduler."""
    for group in library.groups(("training",)):
        library.write_group(replace(group, status="stopped"))


# ------------------------------------------------------------------ trials
@dataclass(frozen=True)
class AdHocJob:
    """What every ad-hoc trial of one search shares (sent once to the workers)."""

    trial: TrialJob
    kind: str
    members: int


def adhoc_trial_setup(
    space: SearchSpace, settings: SearchSettings, job: TrialJob
) -> tuple[SearchSpace, Callable[..., None], AdHocJob]:
    """The space to search, the trainable and its job for an ad-hoc search."""
    kind = str(settings.ad_hoc)
    searched = ensemble_space(space, kind, settings.ad_hoc_members)
    return searched, train_adhoc_trial, AdHocJob(job, kind, settings.ad_hoc_members)


class _MemberTraining:
    """One member's network, optimiser and schedule, trained an epoch at a time."""

    def __init__(
        self,
        config: dict[str, Any],
        seed: int,
        dataset: ImageDataset,
        job: TrialJob,
        device: torch.device,
    ) -> None:
        self.config = config
        self.seed = seed
        self.dataset = dataset
        self.device = device
        self.autocast = job.mixed_precision and device.type == "cuda"
        self.search_optimizer = job.optimizer
        self.generator = _seed_everything(seed)

        height, width = dataset.image_size
        self.model = build_model(
            config, dataset.channels, dataset.num_classes, max(height, width)
        ).to(device)
        self.parameters = count_parameters(self.model)
        self.flops = count_flops(self.model, dataset.channels, dataset.image_size)
        self.optimizer = make_optimizer(self.model, config)
        self.augmentation = Augmentation(config).to(device)
        self.batch_size = min(int(config["batch_size"]), len(dataset.train_images))
        steps_per_epoch = -(-len(dataset.train_images) // self.batch_size)
        self.scheduler = cosine_schedule(
            self.optimizer, steps_per_epoch * job.max_epochs
        )
        self.max_epochs = job.max_epochs
        self.curve: list[float] = []

    def train_epoch(self) -> tuple[float, Any]:
        """Train one epoch; return the training loss and validation probabilities."""
        train_loss = train_epoch(
            self.model,
            self.optimizer,
            self.augmentation,
            self.dataset.train_images,
            self.dataset.train_labels,
            batch_size=self.batch_size,
            device=self.device,
            generator=self.generator,
            autocast=self.autocast,
            scheduler=self.scheduler,
        )
        probabilities = predict_probabilities(
            self.model, self.dataset.validation_images, device=self.device
        )
        loss = cross_entropy(probabilities, self.dataset.validation_labels.numpy())
        if not math.isfinite(loss):
            raise TrainingDiverged(
                f"validation loss is {loss} after epoch {len(self.curve) + 1}"
            )
        self.curve.append(loss)
        return train_loss, probabilities


def _is_trained(entry: LibraryEntry | None, max_epochs: int) -> bool:
    """Whether an entry is complete, so it is replayed rather than retrained."""
    return (
        entry is not None
        and entry.status in ("finished", "stopped")
        and (entry.epochs >= max_epochs or entry.status == "stopped")
    )


def train_adhoc_trial(
    config: dict[str, Any], *, dataset: ImageDataset, job: AdHocJob
) -> None:
    """Ray Tune function trainable: train an ensemble's members in lockstep.

    After each epoch, every member being trained is committed to the library,
    then the ensemble's record, then the weighted ensemble's validation loss is
    reported. Members already in the library are replayed, not retrained: their
    final predictions take part in every epoch's ensemble.
    """
    from ray import tune

    space = SearchSpace.from_dict(job.trial.space)
    configs = member_configs(space, job.kind, job.members, config)
    seeds = member_seeds(job.trial.seed, job.members)
    model_ids = [model_id_for(c, s) for c, s in zip(configs, seeds, strict=True)]
    group_id = group_id_for(job.kind, model_ids)
    library = Library.open(job.trial.library_path)
    max_epochs = job.trial.max_epochs

    previous = library.get_group(group_id)
    if previous is not None and previous.status in ("finished", "stopped"):
        if previous.epochs >= max_epochs or previous.status == "stopped":
            _logger.debug("ad-hoc ensemble %s already in library; replaying", group_id)
            for epoch, loss in enumerate(previous.learning_curve, start=1):
                tune.report(_result(loss, epoch, group_id, model_ids))
            return

    torch.set_num_threads(max(1, job.trial.threads))
    device = _device()
    pending = [
        index
        for index, model_id in enumerate(model_ids)
        if not _is_trained(library.get(model_id), max_epochs)
    ]
    _logger.debug(
        "ad-hoc ensemble %s: training members %s, replaying %d",
        group_id,
        [index + 1 for index in pending],
        job.members - len(pending),
    )
    group = AdHocGroup(
        group_id=group_id,
        kind=job.kind,
        members=model_ids,
        weights=[1.0 / job.members] * job.members,
        status="training",
        info={
            "seeds": seeds,
            "config": _searched_config(space, job, config),
            "replayed": [model_ids[i] for i in range(job.members) if i not in pending],
        },
    )
    trainings: dict[int, _MemberTraining] = {}
    current = 0
    try:
        for index in pending:
            current = index
            trainings[index] = _MemberTraining(
                configs[index], seeds[index], dataset, job.trial, device
            )
        for epoch in range(1, max_epochs + 1):
            for index, training in trainings.items():
                current = index
                _commit_member(library, training, model_ids[index], group, index, epoch)
            weights, loss, error = weighted_scores(
                library, _entries(library, model_ids)
            )
            group = replace(
                group,
                weights=weights,
                validation_loss=loss,
                validation_error=error,
                learning_curve=[*group.learning_curve, loss],
                status="finished" if epoch == max_epochs else "training",
            )
            library.write_group(group)
            tune.report(_result(loss, epoch, group_id, model_ids))
    except (TrainingDiverged, MemoryError, RuntimeError) as error:
        if not isinstance(error, TrainingDiverged) and not is_out_of_memory(error):
            raise
        reason = f"member {current + 1} ({model_ids[current]}): {error}"
        _record_failure(library, group, configs[current], model_ids[current], reason)
        if device.type == "cuda":
            torch.cuda.empty_cache()
        raise TrialFailed(f"ad-hoc ensemble {group_id} failed: {reason}") from None


def _entries(library: Library, model_ids: Sequence[str]) -> list[LibraryEntry]:
    entries = []
    for model_id in model_ids:
        entry = library.get(model_id)
        if entry is None:
            raise LibraryError(f"member '{model_id}' vanished from {library.path}")
        entries.append(entry)
    return entries


def _searched_config(
    space: SearchSpace, job: AdHocJob, config: Mapping[str, Any]
) -> dict[str, Any]:
    """The proposal in canonical form: what the optimiser searched."""
    return ensemble_space(space, job.kind, job.members).canonical(config)


def _result(
    loss: float, epoch: int, group_id: str, model_ids: list[str]
) -> dict[str, Any]:
    return {
        METRIC: loss,
        "epoch": epoch,
        "ad_hoc_group": group_id,
        "model_ids": model_ids,
    }


def _commit_member(
    library: Library,
    training: _MemberTraining,
    model_id: str,
    group: AdHocGroup,
    index: int,
    epoch: int,
) -> None:
    """Train member ``index`` one epoch and commit it as an ordinary entry."""
    started = time.perf_counter()
    train_loss, probabilities = training.train_epoch()
    model = training.model
    library.write(
        model_id,
        config=training.config,
        status="finished" if epoch == training.max_epochs else "training",
        learning_curve=training.curve,
        state_dict={k: v.detach().cpu() for k, v in model.state_dict().items()},
        validation_probabilities=probabilities,
        parameters=training.parameters,
        flops=training.flops,
        info={
            "seed": training.seed,
            "train_loss": train_loss,
            "epoch_seconds": time.perf_counter() - started,
            "source": "ad-hoc",
            "optimizer": training.search_optimizer,
            "ad_hoc_group": group.group_id,
            "ad_hoc_kind": group.kind,
            "ad_hoc_member": index + 1,
        },
    )


def _record_failure(
    library: Library,
    group: AdHocGroup,
    config: dict[str, Any],
    model_id: str,
    reason: str,
) -> None:
    entry = library.get(model_id)
    library.write(
        model_id,
        config=config,
        status="failed",
        info={**(entry.info if entry else {}), "reason": reason},
    )
    library.write_group(
        replace(group, status="failed", info={**group.info, "reason": reason})
    )
