"""Build the library: run the hyperparameter search on Ray Tune.

Trials run on a local Ray by default, on a cluster when ``RAY_ADDRESS`` (or
``SearchSettings.ray_address``) names one. After the search, every new model is
measured one at a time (see :mod:`deepens.cost`), so that all costs of a
library are taken under the same conditions.

Each search has its own Tune experiment folder and a record in the library's
``searches.json`` (see :mod:`deepens.history`), so a search whose driver was
killed can be resumed with Ray Tune's restore; models already trained are
replayed by their trials rather than trained again.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from ray.tune import Callback

from deepens.adhoc import (
    adhoc_trial_setup,
    check_kind,
    check_members,
    close_interrupted_groups,
)
from deepens.claims import remove_claims_of_run
from deepens.data import ImageDataset
from deepens.errors import SearchError
from deepens.history import (
    SearchRecord,
    new_search_id,
    record_search,
    unfinished_search,
)
from deepens.library import Library, local_library_path
from deepens.optimizers import OPTIMIZERS, make_optimizer_setup
from deepens.space import SearchSpace
from deepens.trial import METRIC, TrialJob, train_trial, trial_library_path

_logger = logging.getLogger(__name__)

#: Where each search's Ray Tune experiment folder lives, inside the library.
TUNE_FOLDER = "tune"
#: Settings a resumed search may change: they do not change what is searched.
RESUMABLE_CHANGES = frozenset({"ray_address"})

#: Search events: ("start"|"result"|"complete"|"error", trial id, metrics).
SearchListener = Callable[[str, str, dict[str, Any]], None]


@dataclass
class SearchSettings:
    """How much to search and with what.

    Attributes
    ----------
    optimizer : str
        Which optimiser proposes configurations (see :mod:`deepens.optimizers`).
    max_trials : int
        Trials to start at most.
    time_budget_s : float or None
        Wall-time limit of the search; running trials stop when it is spent.
    max_epochs : int
        Epochs a trial trains at most: the resource of the schedulers.
    grace_period : int
        Epochs every trial trains before a scheduler may stop it.
    reduction_factor : int
        The schedulers' rung spacing: of each rung, 1 in ``reduction_factor``
        trials continues.
    cpus_per_trial, gpus_per_trial : float
        Resources each trial reserves; fractional GPUs share one device.
    max_concurrent_trials : int or None
        Trials running at once; None lets Ray fill the resources.
    seed : int
        Seeds the optimiser and every trial's initialisation.
    mixed_precision : bool
        Train in bfloat16 autocast on GPUs.
    ray_address : str or None
        A Ray cluster to use; defaults to the ``RAY_ADDRESS`` environment variable.
    ad_hoc : str or None
        ``"homogeneous"`` or ``"heterogeneous"`` to search ad-hoc ensembles, one
        per trial (see :mod:`deepens.adhoc`); None searches single networks.
        ``max_trials`` then counts ensembles.
    ad_hoc_members : int
        Members of each ad-hoc ensemble, from 2 to 8.
    """

    optimizer: str = "asha"
    max_trials: int = 20
    time_budget_s: float | None = None
    max_epochs: int = 4
    grace_period: int = 1
    reduction_factor: int = 3
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    max_concurrent_trials: int | None = None
    seed: int = 0
    mixed_precision: bool = False
    ray_address: str | None = field(
        default_factory=lambda: os.environ.get("RAY_ADDRESS")
    )
    ad_hoc: str | None = None
    ad_hoc_members: int = 4

    def validate(self) -> None:
        """Check every setting before anything starts; raise SearchError naming it.

        Messages name the setting as Python spells it and, in brackets, the
        command-line option that sets it.
        """

        if self.optimizer not in OPTIMIZERS:
            raise SearchError(
                f"optimizer {self.optimizer!r} is unknown; choose one of "
                f"{', '.join(OPTIMIZERS)}"
            )
        for name in ("max_trials", "max_epochs", "grace_period"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise SearchError(
                    f"{_named(name)} must be a whole number >= 1; got {value!r}"
                )
        if self.grace_period > self.max_epochs:
            raise SearchError(
                f"{_named('grace_period')} ({self.grace_period}) must not exceed "
                f"{_named('max_epochs')} ({self.max_epochs})"
            )
        limits = [
            (
                "reduction_factor",
                self.reduction_factor,
                self.reduction_factor < 2,
                ">= 2",
            ),
            (
                "time_budget_s",
                self.time_budget_s,
                self.time_budget_s is not None and self.time_budget_s <= 0,
                "> 0",
            ),
            ("cpus_per_trial", self.cpus_per_trial, self.cpus_per_trial <= 0, "> 0"),
            ("gpus_per_trial", self.gpus_per_trial, self.gpus_per_trial < 0, ">= 0"),
            (
                "max_concurrent_trials",
                self.max_concurrent_trials,
                self.max_concurrent_trials is not None
                and self.max_concurrent_trials < 1,
                ">= 1",
            ),
        ]
        for name, value, invalid, rule in limits:
            if invalid:
                raise SearchError(f"{_named(name)} must be {rule}; got {value}")
        check_members(self.ad_hoc_members)
        if self.ad_hoc is None and self.ad_hoc_members != 4:
            raise SearchError(
                f"ad_hoc_members (--ad-hoc-members) is {self.ad_hoc_members} but no "
                "ad-hoc search was asked for; add --ad-hoc homogeneous or "
                "--ad-hoc heterogeneous, or drop --ad-hoc-members"
            )
        if self.ad_hoc is not None:
            check_kind(self.ad_hoc)
            if OPTIMIZERS[self.optimizer].pauses_trials:
                raise SearchError(
                    f"--ad-hoc cannot be combined with optimizer {self.optimizer!r}: "
                    "it pauses trials, and an ad-hoc trial, which trains several "
                    "members, does not checkpoint; choose random, asha, tpe, gp, ga "
                    "or smac"
                )


_OPTIONS = {
    "time_budget_s": "--time-budget",
    "max_concurrent_trials": "--max-concurrent",
}


def _named(setting: str) -> str:
    """A setting's name with the CLI option that sets it, for error messages."""
    option = _OPTIONS.get(setting, "--" + setting.replace("_", "-"))
    return f"{setting} ({option})"


@dataclass
class SearchSummary:
    """What a search did."""

    library_path: Path
    trials_started: int = 0
    trials_finished: int = 0
    trials_stopped: int = 0
    trials_failed: int = 0
    best_validation_loss: float | None = None
    library_size: int = 0
    settings: dict[str, Any] = field(default_factory=dict)
    search_id: str = ""
    resumed: bool = False
    completed: bool = False
    interrupted: bool = False


def init_ray(settings: SearchSettings) -> None:
    """Start (or connect to) Ray once per process."""
    # Ray Tune's newer console output ignores verbose=0 and draws tables on
    # stdout; deepens shows its own progress, so keep Ray's classic, quiet one.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    import ray

    if ray.is_initialized():
        return
    if settings.ray_address:
        _check_reachable(settings.ray_address)
        _logger.info("connecting to the Ray cluster at %s", settings.ray_address)
        ray.init(address=settings.ray_address, logging_level=logging.WARNING)
        return
    # Ray's start-up warnings (its token authentication notice, say) are not
    # something a deepens user acts on; errors still show.
    ray.init(
        num_cpus=os.cpu_count(),
        include_dashboard=False,
        logging_level=logging.ERROR,
        log_to_driver=False,
    )


def _check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """Fail fast when a cluster address answers nothing.

    ``ray.init`` would retry an unreachable address for a long time, with
    only its own warnings on the screen. ``auto`` and other forms without a
    host and port are left to Ray.
    """
    import socket

    target = address.removeprefix("ray://")
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        return
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as error:
        raise SearchError(
            f"cannot reach the Ray cluster at {address} (RAY_ADDRESS): {error}; "
            "check that its head node runs ('ray start --head' prints the "
            "address), or unset RAY_ADDRESS to search on this machine"
        ) from None


def check_resources(settings: SearchSettings) -> None:
    """Fail before starting when a trial asks for more than the cluster has.

    Ray would otherwise keep such trials pending forever.
    """
    import ray

    resources = ray.cluster_resources()
    cpus = resources.get("CPU", 0)
    if settings.cpus_per_trial > cpus:
        raise SearchError(
            f"cpus_per_trial={settings.cpus_per_trial:g} (--cpus-per-trial) but the "
            f"Ray cluster has {cpus:g} CPU(s); lower it to at most {cpus:g}"
        )
    gpus = resources.get("GPU", 0)
    if settings.gpus_per_trial > gpus:
        raise SearchError(
            f"gpus_per_trial={settings.gpus_per_trial:g} (--gpus-per-trial) but the "
            f"Ray cluster has {gpus:g} GPU(s); use --gpus-per-trial 0 on this machine"
        )


def run_search(
    dataset: ImageDataset,
    space: SearchSpace,
    library_path: str | os.PathLike[str],
    settings: SearchSettings,
    *,
    listener: SearchListener | None = None,
    resume: bool = False,
    origin: Mapping[str, Any] | None = None,
) -> SearchSummary:
    """Run the search and fill the library at ``library_path``.

    Parameters
    ----------
    dataset : ImageDataset
        Train and validation splits train and score the trials; the test split is
        only predicted after the search, when each model is measured.
    space : SearchSpace
        Where the optimiser looks.
    library_path : path or file:// URI
        The library folder; created if missing, extended if it exists. Trials on
        other Ray nodes write to it, so on a cluster it must be storage every
        node mounts at the same path; object-store URIs are refused.
    settings : SearchSettings
        Effort and resources.
    listener : callable, optional
        Receives trial events, for progress displays.
    resume : bool
        Continue the library's latest unfinished search (after its driver was
        killed) instead of starting a new one. ``space`` and ``settings`` must
        be the recorded ones (see :func:`deepens.history.unfinished_search`),
        except ``ray_address``. Finished models are replayed, not trained again.
    origin : mapping, optional
        How the caller loaded the data, recorded with the search so that a
        resume can load it again (the CLI records its data options).

    Raises
    ------
    SearchError
        For invalid settings, a resume with nothing to resume or with other
        settings, or a Tune state that cannot be restored.
    """
    settings.validate()
    library_root = local_library_path(library_path)
    record = unfinished_search(library_root) if resume else None
    if record is not None:
        _check_same_search(record, space, settings)
    _check_batch_size(space, dataset)
    # Ray first: an unreachable cluster or a resource request it cannot meet
    # fails before anything is written.
    init_ray(settings)
    check_resources(settings)
    library = Library.create(
        library_root,
        class_names=dataset.class_names,
        validation_labels=dataset.validation_labels.numpy(),
        # No test split (dataset_from_arrays) means a library without test labels.
        test_labels=dataset.test_labels.numpy() if len(dataset.test_labels) else None,
        channels=dataset.channels,
        image_size=dataset.image_size,
        dataset=dataset.name,
    )

    run_id = uuid.uuid4().hex[:12]
    if record is None:
        record = SearchRecord(
            id=new_search_id(),
            tune_folder="",
            settings=asdict(settings),
            space=_as_json(space.to_dict()),
            optimizer_seed=_optimizer_seed(library, settings),
            origin=dict(origin or {}),
            started=time.time(),
        )
        record.tune_folder = f"{TUNE_FOLDER}/{record.id}"
    else:
        _logger.info("resuming search %s of %s", record.id, library.path)
    record.runs.append(run_id)
    record_search(library.path, record)

    summary = SearchSummary(
        library_path=library.path,
        settings=asdict(settings),
        search_id=record.id,
        resumed=resume,
    )
    tuner = _make_tuner(
        dataset, space, settings, library, record, run_id, summary, listener, resume
    )
    with _quiet_ray_tune(), _watch_interrupt() as interrupt:
        results = tuner.fit()

    summary.interrupted = interrupt.happened
    summary.completed = not summary.interrupted and _completed(results, settings)
    if summary.completed:
        record.completed, record.completed_at = True, time.time()
        record_search(library.path, record)
    _close_interrupted_entries(library)
    close_interrupted_groups(library)
    remove_claims_of_run(library.path, run_id)
    summary.library_size = len(library.entries(("finished", "stopped")))
    return summary


def _check_batch_size(space: SearchSpace, dataset: ImageDataset) -> None:
    batch_size = space.parameters["batch_size"]
    batch_low = int(
        batch_size.low if batch_size.low is not None else min(batch_size.choices)
    )
    if batch_low > len(dataset.train_images):
        raise SearchError(
            f"the space's smallest batch_size ({batch_low}) exceeds the training set "
            f"({len(dataset.train_images)} images); lower batch_size in the space"
        )


def _check_same_search(
    record: SearchRecord, space: SearchSpace, settings: SearchSettings
) -> None:
    """A resumed search must run with its recorded space and settings."""
    recorded = record.settings
    given = asdict(settings)
    changed = [
        f"{_named(name)} {given[name]!r} (recorded {recorded.get(name)!r})"
        for name in given
        if name not in RESUMABLE_CHANGES and given[name] != recorded.get(name)
    ]
    if _as_json(space.to_dict()) != record.space:
        changed.append("the search space")
    if changed:
        raise SearchError(
            f"search {record.id} cannot resume with other settings: "
            f"{'; '.join(changed)}. Resume with its recorded settings, or start a "
            "new search without resume"
        )


def _optimizer_seed(library: Library, settings: SearchSettings) -> int:
    """The optimiser's seed for a new search of ``library``.

    Extending a library: the same seed would propose the configurations it
    already holds, so the optimiser's seed also depends on what is there.
    """
    existing = len(library.entries())
    if not existing:
        return settings.seed
    seed = int(np.random.SeedSequence([settings.seed, existing]).generate_state(1)[0])
    _logger.info("extending a library of %d models; optimiser seed %d", existing, seed)
    return seed


def _make_tuner(
    dataset: ImageDataset,
    space: SearchSpace,
    settings: SearchSettings,
    library: Library,
    record: SearchRecord,
    run_id: str,
    summary: SearchSummary,
    listener: SearchListener | None,
    resume: bool,
) -> Any:
    """A Tuner for a new search, or one restored from the search's Tune state."""
    from ray import tune

    info = OPTIMIZERS[settings.optimizer]
    job = TrialJob(
        library_path=trial_library_path(library.path),
        space=space.to_dict(),
        max_epochs=settings.max_epochs,
        threads=max(1, int(settings.cpus_per_trial)),
        seed=settings.seed,
        mixed_precision=settings.mixed_precision,
        # Schedulers that pause trials resume them from a checkpoint.
        checkpoints=info.pauses_trials,
        optimizer=settings.optimizer,
        search_id=record.id,
        run_id=run_id,
    )
    searched: SearchSpace = space
    trial_function: Callable[..., None] = train_trial
    trial_job: Any = job
    if settings.ad_hoc is not None:
        searched, trial_function, trial_job = adhoc_trial_setup(space, settings, job)
    setup = make_optimizer_setup(
        searched, replace(settings, seed=record.optimizer_seed)
    )
    trainable = tune.with_resources(
        tune.with_parameters(trial_function, dataset=dataset, job=trial_job),
        {"cpu": settings.cpus_per_trial, "gpu": settings.gpus_per_trial},
    )
    tracker = _TrialTracker(summary, listener)
    experiment = record.tune_path(library.path).resolve()
    if resume and tune.Tuner.can_restore(str(experiment)):
        return _restore_tuner(experiment, trainable, setup.param_space, tracker)
    if resume:
        # The driver died before Ray Tune saved anything: start the search again
        # with the same optimiser seed; the trials already done are replayed.
        _logger.info("no Tune state in %s; restarting search %s", experiment, record.id)
    return tune.Tuner(
        trainable,
        param_space=setup.param_space,
        tune_config=tune.TuneConfig(
            metric=METRIC,
            mode="min",
            search_alg=setup.searcher,
            scheduler=setup.scheduler,
            num_samples=settings.max_trials,
            time_budget_s=settings.time_budget_s,
            max_concurrent_trials=(
                None if info.pauses_trials else settings.max_concurrent_trials
            ),
        ),
        run_config=tune.RunConfig(
            name=experiment.name,
            storage_path=str(experiment.parent),
            verbose=0,
            callbacks=[tracker],
            failure_config=tune.FailureConfig(max_failures=0, fail_fast=False),
            # Only schedulers that pause trials need their checkpoints; the
            # library keeps every epoch's model anyway.
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
        ),
    )


def _restore_tuner(
    experiment: Path,
    trainable: Any,
    param_space: dict[str, Any],
    tracker: _TrialTracker,
) -> Any:
    """Ray Tune's own restore: finished trials stay, unfinished ones restart.

    Errored trials stay failed (their models are failed entries already).
    """
    from ray import tune

    try:
        tuner = tune.Tuner.restore(
            str(experiment),
            trainable,
            resume_unfinished=True,
            resume_errored=False,
            restart_errored=False,
            param_space=param_space,
        )
    except Exception as error:
        raise SearchError(
            f"the Tune state of this search in {experiment} cannot be restored "
            f"({type(error).__name__}: {_last_line(error)}); start a new search "
            "without resume (the library keeps its models)"
        ) from None
    # The restored run configuration carries the tracker pickled by the killed
    # driver, without a listener and with its own counts: point it at this run's.
    # Ray Tune has no public accessor for it.
    local_tuner = getattr(tuner, "_local_tuner", None)
    callbacks = local_tuner.get_run_config().callbacks if local_tuner else None
    for callback in callbacks or []:
        if isinstance(callback, _TrialTracker):
            callback.summary, callback.listener = tracker.summary, tracker.listener
            callback.started = set()
    return tuner


def _completed(results: Any, settings: SearchSettings) -> bool:
    """Whether every trial of the search ended (an interrupt leaves some running)."""
    ended = results.num_terminated + results.num_errors == len(results)
    started_all = len(results) >= settings.max_trials
    return bool(ended and (started_all or settings.time_budget_s is not None))


def _as_json(document: Mapping[str, Any]) -> Any:
    """``document`` as it reads back from JSON (tuples become lists)."""
    return json.loads(json.dumps(document))


@dataclass
class _Interrupt:
    happened: bool = False


@contextmanager
def _watch_interrupt() -> Iterator[_Interrupt]:
    """Tell whether Ctrl-C (SIGINT) ended the search.

    Ray Tune answers the first Ctrl-C by ending the run gracefully, and puts
    back the SIGINT handler it found when it started; it reports the interrupt
    only in a log line. So a marker handler is installed before the run: if it
    is the handler in place when the run returns, Ray Tune was interrupted
    (a run that ends by itself leaves Ray Tune's own handler in place).
    """
    interrupt = _Interrupt()
    if threading.current_thread() is not threading.main_thread():
        yield interrupt
        return
    previous = signal.getsignal(signal.SIGINT)

    def marker(signum: int, frame: Any) -> None:
        interrupt.happened = True
        signal.signal(signal.SIGINT, previous)
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, marker)
    try:
        yield interrupt
        if signal.getsignal(signal.SIGINT) is marker:
            interrupt.happened = True
    finally:
        signal.signal(signal.SIGINT, previous)


@contextmanager
def _quiet_ray_tune() -> Iterator[None]:
    """Keep Ray Tune's own warnings and tracebacks off the user's screen.

    Ray logs each failed trial's full traceback and, after an interrupt, how to
    resume with its own API; the tracker logs one line per failed trial with the
    reason and where the trace is, which is what a deepens user can act on.
    ``--verbose`` leaves Ray's output as it is.
    """
    if logging.getLogger("deepens").isEnabledFor(logging.DEBUG):
        yield
        return
    loggers = [logging.getLogger("ray.tune"), logging.getLogger("ray.train")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def _close_interrupted_entries(library: Library) -> None:
    """Entries still marked as training belong to trials that were stopped early."""
    for entry in library.entries(("training",)):
        library.write(entry.model_id, config=entry.config, status="stopped")


class _TrialTracker(Callback):  # type: ignore[misc]
    """Counts trial outcomes and forwards events to a listener."""

    def __init__(self, summary: SearchSummary, listener: SearchListener | None) -> None:
        self.summary = summary
        self.listener = listener
        self.last_epoch: dict[str, int] = {}
        #: Trials seen starting: Hyperband and BOHB pause trials and start them
        #: again, which is one trial, not two.
        self.started: set[str] = set()

    def __getstate__(self) -> dict[str, Any]:
        # Ray Tune pickles its callbacks with the experiment state; a listener
        # (a progress display, say) holds locks and belongs to this process only.
        return {**self.__dict__, "listener": None}

    def _emit(self, event: str, trial: Any, metrics: dict[str, Any]) -> None:
        if self.listener is not None:
            self.listener(event, trial.trial_id, metrics)

    def on_trial_start(
        self, iteration: int, trials: list, trial: Any, **info: Any
    ) -> None:
        if trial.trial_id in self.started:
            return
        self.started.add(trial.trial_id)
        self.summary.trials_started += 1
        self._emit("start", trial, {"config": dict(trial.config)})

    def on_trial_result(
        self, iteration: int, trials: list, trial: Any, result: dict, **info: Any
    ) -> None:
        loss = result.get(METRIC)
        if loss is not None and (
            self.summary.best_validation_loss is None
            or loss < self.summary.best_validation_loss
        ):
            self.summary.best_validation_loss = float(loss)
        self.last_epoch[trial.trial_id] = int(result.get("epoch", 0))
        metrics = {k: result.get(k) for k in (METRIC, "epoch", "model_id")}
        # An ad-hoc trial reports its ensemble and members instead of one model.
        metrics.update(
            {k: result[k] for k in ("ad_hoc_group", "model_ids") if k in result}
        )
        self._emit("result", trial, metrics)

    def on_trial_complete(
        self, iteration: int, trials: list, trial: Any, **info: Any
    ) -> None:
        max_epochs = self.summary.settings.get("max_epochs", 0)
        if self.last_epoch.get(trial.trial_id, 0) >= max_epochs:
            self.summary.trials_finished += 1
            self._emit("complete", trial, {"outcome": "finished"})
        else:
            self.summary.trials_stopped += 1
            self._emit("complete", trial, {"outcome": "stopped"})

    def on_trial_error(
        self, iteration: int, trials: list, trial: Any, **info: Any
    ) -> None:
        self.summary.trials_failed += 1
        reason = _last_line(trial.get_error())
        _logger.warning(
            "trial %s failed (%s); the search goes on. Full trace: %s",
            trial.trial_id,
            reason,
            trial.error_file,
        )
        self._emit("error", trial, {"outcome": "failed", "reason": reason})


def _last_line(trace: Any) -> str:
    """The exception line of a trace: what a user needs to read first."""
    lines = [line.strip() for line in str(trace or "").splitlines() if line.strip()]
    return lines[-1] if lines else "unknown error"
