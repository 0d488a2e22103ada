"""The ``deepens`` command line: search, select, run (both) and predict."""

from __future__ import annotations

import csv
import functools
import json
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from deepens.errors import BudgetError, DeepensError
from deepens.space import SearchSpace

app = typer.Typer(
    help=(
        "AutoML for ensembles of deep image classifiers under an inference budget: "
        "search builds a library of trained ResNets, select builds the best ensemble "
        "for each budget from it, run does both, predict uses a saved ensemble."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
space_app = typer.Typer(help="Inspect search-space presets.", no_args_is_help=True)
app.add_typer(space_app, name="space")

console = Console(stderr=True)
out = Console()
_logger = logging.getLogger("deepens.cli")

# ---------------------------------------------------------------- options
Data = Annotated[
    str,
    typer.Option(
        "--data",
        help="'digits' (scikit-learn's, the default), 'fashion-mnist' (Debian's "
        "dataset-fashion-mnist package), a folder of MNIST-style IDX files, a folder "
        "with one subfolder per class, or an .npz file with arrays x and y.",
        rich_help_panel="Data",
    ),
]
Output = Annotated[
    Path,
    typer.Option(
        "--output", "-o", help="Run folder: holds library/, ensembles/, reports."
    ),
]
Seed = Annotated[
    int,
    typer.Option(
        help="Seeds the splits, the optimiser and the trials.", rich_help_panel="Data"
    ),
]
ValidationFraction = Annotated[
    float,
    typer.Option(
        help="Share of the training images held out for validation.",
        rich_help_panel="Data",
    ),
]
TestFraction = Annotated[
    float,
    typer.Option(
        help="Share held out for test, when the data set has no test split.",
        rich_help_panel="Data",
    ),
]
MaxTrain = Annotated[
    int | None,
    typer.Option(
        help="Train on at most this many images (stratified sample).",
        rich_help_panel="Data",
    ),
]
MaxValidation = Annotated[
    int | None,
    typer.Option(help="Validate on at most this many images.", rich_help_panel="Data"),
]
MaxTest = Annotated[
    int | None,
    typer.Option(help="Test on at most this many images.", rich_help_panel="Data"),
]
ImageSize = Annotated[
    int | None,
    typer.Option(
        help="Resize image-folder images to this square size (default: the "
        "most common size).",
        rich_help_panel="Data",
    ),
]
Space = Annotated[
    str,
    typer.Option(
        help="Search space: preset 'small' (CPU-sized) or 'paper' "
        "(Table 3), or a JSON file (see 'deepens space show').",
        rich_help_panel="Search",
    ),
]
Optimizer = Annotated[
    str,
    typer.Option(
        help=(
            "Hyperparameter optimiser: asha (default), random, hyperband, bohb, "
            "tpe, gp, ga or smac. 'deepens optimizers' describes each."
        ),
        rich_help_panel="Search",
    ),
]
MaxTrials = Annotated[
    int,
    typer.Option(
        help="Trials to start at most (with --ad-hoc, ensembles).",
        rich_help_panel="Search",
    ),
]
AdHoc = Annotated[
    str | None,
    typer.Option(
        "--ad-hoc",
        help="Search whole ensembles, one per trial, instead of single networks: "
        "homogeneous (one configuration trained with a seed per member) or "
        "heterogeneous (a configuration per member). Members join the library; "
        "selection method adhoc picks the best ensemble per budget.",
        rich_help_panel="Search",
    ),
]
AdHocMembers = Annotated[
    int,
    typer.Option(
        help="Members of each ad-hoc ensemble (2 to 8); weights come from the "
        "{1, 2, 4, 8} grid chosen on validation data.",
        rich_help_panel="Search",
    ),
]
TimeBudget = Annotated[
    float | None,
    typer.Option(
        "--time-budget",
        help="Stop the search after this many seconds.",
        rich_help_panel="Search",
    ),
]
MaxEpochs = Annotated[
    int, typer.Option(help="Epochs a trial trains at most.", rich_help_panel="Search")
]
GracePeriod = Annotated[
    int,
    typer.Option(
        help="Epochs before the scheduler may stop a trial.", rich_help_panel="Search"
    ),
]
ReductionFactor = Annotated[
    int,
    typer.Option(
        help="Scheduler's reduction factor: 1 in N trials goes on.",
        rich_help_panel="Search",
    ),
]
CpusPerTrial = Annotated[
    float, typer.Option(help="CPUs each trial reserves.", rich_help_panel="Resources")
]
GpusPerTrial = Annotated[
    float,
    typer.Option(
        help="GPUs each trial reserves; fractions share a GPU.",
        rich_help_panel="Resources",
    ),
]
MaxConcurrent = Annotated[
    int | None,
    typer.Option(
        help="Trials running at once (default: as resources allow).",
        rich_help_panel="Resources",
    ),
]
MixedPrecision = Annotated[
    bool,
    typer.Option(
        help="Train with bfloat16 autocast on GPUs.", rich_help_panel="Search"
    ),
]
Budgets = Annotated[
    list[float] | None,
    typer.Option(
        "--budget",
        "-b",
        help="Inference budget in the cost unit; repeat for several. Default: four "
        "budgets from the cheapest model to the whole pruned library.",
        rich_help_panel="Selection",
    ),
]
CostUnit = Annotated[
    str,
    typer.Option(
        help="Budget unit: seconds (to predict 2,000 images), flops or parameters.",
        rich_help_panel="Selection",
    ),
]
EnsembleSize = Annotated[
    int,
    typer.Option(
        help="Members of the fixed-size forward-greedy baseline.",
        rich_help_panel="Selection",
    ),
]
Pruning = Annotated[
    float,
    typer.Option(
        help="Share of the library (best first) SMOBF chooses from.",
        rich_help_panel="Selection",
    ),
]
Methods = Annotated[
    list[str] | None,
    typer.Option(
        "--method",
        help="Selection method, repeat for several: smobf, greedy (fixed size), "
        "greedy_replacement, greedy_best (best point of the trajectory), single "
        "(best single model), adhoc (best ensemble of an --ad-hoc search). "
        "Default: smobf and greedy, plus adhoc when the library holds ad-hoc "
        "ensembles.",
        rich_help_panel="Selection",
    ),
]
Metric = Annotated[
    str,
    typer.Option(
        help="Selection's error metric: cross_entropy, error_rate, or macro_f1 "
        "(1 - macro F1, for unbalanced classes).",
        rich_help_panel="Selection",
    ),
]
Combiner = Annotated[
    str,
    typer.Option(
        help="How members are combined: average (default), weighted (weights from "
        "{1, 2, 4, 8} chosen on validation data) or vote (majority).",
        rich_help_panel="Selection",
    ),
]
SelectionDevice = Annotated[
    str,
    typer.Option(
        help="Where selection scores candidate ensembles: cpu (numpy) or cuda.",
        rich_help_panel="Resources",
    ),
]
Shards = Annotated[
    int,
    typer.Option(
        help="Split validation samples over this many Ray workers during selection "
        "(for predictions too large for one process).",
        rich_help_panel="Resources",
    ),
]
Device = Annotated[
    str,
    typer.Option(
        help="Device to measure costs and predict on: cpu, cuda or auto.",
        rich_help_panel="Resources",
    ),
]
CostThreads = Annotated[
    int,
    typer.Option(
        help="CPU threads when measuring costs (the same for every model).",
        rich_help_panel="Resources",
    ),
]
Resume = Annotated[
    bool,
    typer.Option(
        "--resume",
        help="Continue the latest unfinished search of OUTPUT/library (its driver "
        "was killed) with its recorded settings and data options: finished models "
        "are kept, interrupted trials restart. Options that would change the "
        "search are refused.",
        rich_help_panel="Search",
    ),
]
Verbose = Annotated[bool, typer.Option("--verbose", "-v", help="Show debug logs.")]

#: Command options recorded with a search, and the setting each one sets.
_SETTING_OPTIONS = {
    "optimizer": "optimizer",
    "max_trials": "max_trials",
    "time_budget": "time_budget_s",
    "max_epochs": "max_epochs",
    "grace_period": "grace_period",
    "reduction_factor": "reduction_factor",
    "cpus_per_trial": "cpus_per_trial",
    "gpus_per_trial": "gpus_per_trial",
    "max_concurrent": "max_concurrent_trials",
    "mixed_precision": "mixed_precision",
    "seed": "seed",
    "ad_hoc": "ad_hoc",
    "ad_hoc_members": "ad_hoc_members",
}
#: Options that load the data, recorded so that --resume loads the same data.
_DATA_OPTIONS = (
    "data",
    "seed",
    "validation_fraction",
    "test_fraction",
    "max_train_samples",
    "max_validation_samples",
    "max_test_samples",
    "image_size",
)


def _setup_logging(verbose: bool) -> None:
    handler = RichHandler(console=console, show_path=False, show_time=False)
    logging.basicConfig(
        level=logging.WARNING, format="%(message)s", handlers=[handler], force=True
    )
    logging.getLogger("deepens").setLevel(logging.DEBUG if verbose else logging.INFO)


def _device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name not in ("cpu", "cuda"):
        raise DeepensError(f"--device must be cpu, cuda or auto; got {name!r}")
    if name == "cuda" and not torch.cuda.is_available():
        raise DeepensError(
            "--device cuda asked for, but no CUDA GPU is visible; use cpu"
        )
    return name


def _fail(error: Exception) -> None:
    console.print(f"[bold red]error:[/] {error}", soft_wrap=True)
    raise typer.Exit(code=2)


def _reports_errors(command: Callable[..., None]) -> Callable[..., None]:
    """Turn any error of a command into one line on stderr and an exit code.

    Errors deepens raises for input it cannot use exit with 2; anything else
    (a bug, a full disk) exits with 1 and says how to see the traceback.
    """

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        try:
            command(*args, **kwargs)
        except (typer.Exit, KeyboardInterrupt):
            raise
        except DeepensError as error:
            _fail(error)
        except Exception as error:
            if logging.getLogger("deepens").isEnabledFor(logging.DEBUG):
                raise
            first_line = (str(error).strip().splitlines() or [""])[0]
            console.print(
                f"[bold red]error:[/] {type(error).__name__}: {first_line} "
                "(run again with --verbose to see the traceback)",
                soft_wrap=True,
            )
            raise typer.Exit(code=1) from None

    return wrapper


# -------------------------------------------------------------- progress
class SearchDisplay:
    """A rich progress bar of trials with running counts."""

    def __init__(self, max_trials: int) -> None:
        self.progress = Progress(
            TextColumn("[bold]search"),
            BarColumn(bar_width=16),
            TextColumn("{task.completed}/{task.total}"),
            TextColumn("{task.fields[status]}"),
            TimeElapsedColumn(),
            console=console,
        )
        self.task = self.progress.add_task("search", total=max_trials, status="")
        self.counts = {"running": 0, "finished": 0, "stopped": 0, "failed": 0}
        self.best: float | None = None
        self.models: set[str] = set()

    def __call__(self, event: str, trial_id: str, metrics: dict[str, Any]) -> None:
        if event == "start":
            self.counts["running"] += 1
        elif event == "result":
            loss = metrics.get("validation_loss")
            if loss is not None and (self.best is None or loss < self.best):
                self.best = float(loss)
            if metrics.get("model_id"):
                self.models.add(str(metrics["model_id"]))
            # An ad-hoc trial trains (or replays) several members at once.
            self.models.update(str(m) for m in metrics.get("model_ids") or ())
        else:
            self.counts["running"] -= 1
            self.counts[str(metrics.get("outcome", "failed"))] += 1
            self.progress.advance(self.task)
        best = "-" if self.best is None else f"{self.best:.3f}"
        counts = self.counts
        status = (
            f"run {counts['running']} done {counts['finished']} "
            f"stop {counts['stopped']} fail {counts['failed']} | "
            f"best {best} | library {len(self.models)}"
        )
        self.progress.update(self.task, status=status)


# -------------------------------------------------------------- commands
def _load_data(
    data: str,
    seed: int,
    validation_fraction: float,
    test_fraction: float,
    max_train: int | None,
    max_validation: int | None,
    max_test: int | None,
    image_size: int | None,
) -> Any:
    from deepens.data import load_dataset

    with console.status(f"loading {data}"):
        dataset = load_dataset(
            data,
            validation_fraction=validation_fraction,
            test_fraction=test_fraction,
            seed=seed,
            max_train_samples=max_train,
            max_validation_samples=max_validation,
            max_test_samples=max_test,
            image_size=image_size,
        )
    if dataset.skipped_files:
        # The loader logs each skipped file; this is the summary a user acts on.
        console.print(
            f"[yellow]skipped {len(dataset.skipped_files)} unreadable or non-image "
            "file(s), listed above[/]"
        )
    return dataset


def _search(
    dataset: Any,
    output: Path,
    space: Any,
    settings: Any,
    resume: bool,
    origin: dict[str, Any],
) -> Any:
    from deepens.library import Library
    from deepens.search import run_search

    display = SearchDisplay(settings.max_trials)
    started = time.perf_counter()
    with display.progress:
        summary = run_search(
            dataset,
            space,
            output / "library",
            settings,
            listener=display,
            resume=resume,
            origin=origin,
        )
    console.print(
        f"search{' (resumed)' if resume else ''}: {summary.trials_started} trials in "
        f"{time.perf_counter() - started:.0f} s "
        f"({summary.trials_finished} finished, {summary.trials_stopped} stopped early, "
        f"{summary.trials_failed} failed)"
    )
    if summary.interrupted:
        # Ctrl-C means stop: no measuring or selection on a half-built library.
        console.print(
            f"[yellow]search {summary.search_id} interrupted; its models are kept. "
            f"Continue it with 'deepens search --resume --output {output}' "
            f"(or 'deepens run --resume ...')[/]"
        )
        raise typer.Exit(130)
    if not summary.completed:
        console.print(
            f"[yellow]search {summary.search_id} did not complete; continue it with "
            f"'deepens search --resume --output {output}'[/]"
        )
    return summary, Library.open(output / "library")


def _measure(library: Any, dataset: Any, device: str, threads: int) -> None:
    from deepens.cost import measure_library

    with Progress(
        TextColumn("[bold]measuring costs"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} models"),
        console=console,
    ) as progress:
        task = progress.add_task("measure", total=len(library.entries()))

        def listener(position: int, total: int, model_id: str) -> None:
            progress.update(task, completed=position, total=total)

        count = measure_library(
            library, dataset, device=device, threads=threads, listener=listener
        )
    console.print(f"measured {count} model(s) on {device} with {threads} thread(s)")


def _select_and_report(library: Any, output: Path, **selection: Any) -> None:
    """Select for every budget, print the table, write the JSON and the plot."""
    from deepens.report import plot_pareto, write_json
    from deepens.workflow import ADHOC, DEFAULT_METHODS, select

    if not selection.get("methods"):
        searched = library.groups(("finished", "stopped"))
        selection["methods"] = [*DEFAULT_METHODS, *([ADHOC] if searched else [])]
    report = select(library, output=output, **selection)
    _print_report(report)
    json_path = write_json(report, output / "results.json")
    plot_path = plot_pareto(report, output / "pareto.png")
    saved = [row.saved_to for row in report.rows if row.saved_to]
    where = f"; ensembles under {output}/ensembles"
    if not saved:
        where = " (no ensemble folders: imported models have no weights)"
    console.print(f"wrote {json_path} and {plot_path}{where}")


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}"


def _print_report(report: Any) -> None:
    from rich import box

    best = report.best_single
    table = Table(
        title=f"Ensembles per budget ({report.cost_unit}; errors in %), library of "
        f"{report.library_size} models",
        box=box.SIMPLE_HEAD,
        padding=(0, 1),
        pad_edge=False,
    )
    columns = ("budget", "method", "n", "cost", "val loss", "val err", "test err")
    for column in columns:
        table.add_column(
            column, justify="left" if column == "method" else "right", no_wrap=True
        )
    for row in sorted(report.rows, key=lambda r: (r.budget, r.method)):
        table.add_row(
            f"{row.budget:.4g}",
            row.method,
            str(len(row.members)),
            f"{row.cost:.4g}",
            f"{row.validation_loss:.4f}",
            _percent(row.validation_error),
            _percent(row.test_error),
        )
    out.print(table)
    out.print(
        f"best single model {best['model_id']}: cost {best['cost']:.4g}, "
        f"validation loss {best['validation_loss']:.4f}, "
        f"test error {_percent(best.get('test_error'))} %"
    )


def _print_optimizer_summary(library: Any) -> None:
    """The library by optimiser: what each search added and its best model."""
    from rich import box

    from deepens.report import summarise_optimizers

    rows = summarise_optimizers(library)
    table = Table(
        title="Library by optimiser (errors in %)",
        box=box.SIMPLE_HEAD,
        padding=(0, 1),
        pad_edge=False,
    )
    columns = ("optimizer", "models", "finished", "stopped", "failed")
    for column in columns + ("best val loss", "its test err"):
        table.add_column(column, justify="left" if column == "optimizer" else "right")
    for row in rows:
        loss = row["best_validation_loss"]
        table.add_row(
            *(str(row[column]) for column in columns),
            "-" if loss is None else f"{loss:.4f}",
            _percent(row["best_test_error"]),
        )
    out.print(table)


def _settings(**values: Any) -> Any:
    from deepens.search import SearchSettings

    settings = SearchSettings(
        **{
            k: v
            for k, v in values.items()
            if v is not None
            or k in ("time_budget_s", "max_concurrent_trials", "ad_hoc")
        }
    )
    settings.validate()
    return settings


def _build_library(options: dict[str, Any]) -> Any:
    """Search and measure, from a command's options (its parameters by name).

    Everything the user typed is checked before the data is loaded, and the data
    before the search starts, so a mistake costs seconds, not a search. With
    ``--resume`` the recorded search's options replace the defaults.
    """
    space = None
    if options["resume"]:
        options, space = _resumed_options(options)
    settings = _settings(
        optimizer=options["optimizer"],
        max_trials=options["max_trials"],
        time_budget_s=options["time_budget"],
        max_epochs=options["max_epochs"],
        grace_period=options["grace_period"],
        reduction_factor=options["reduction_factor"],
        cpus_per_trial=options["cpus_per_trial"],
        gpus_per_trial=options["gpus_per_trial"],
        max_concurrent_trials=options["max_concurrent"],
        seed=options["seed"],
        mixed_precision=options["mixed_precision"],
        ad_hoc=options["ad_hoc"],
        ad_hoc_members=options["ad_hoc_members"],
    )
    if options["cost_threads"] < 1:
        raise DeepensError(
            f"--cost-threads must be at least 1; got {options['cost_threads']}"
        )
    device = _device(options["device"])
    space = space or SearchSpace.load(options["space"])
    origin = {name: options[name] for name in _DATA_OPTIONS}
    dataset = _load_data(*origin.values())
    summary, library = _search(
        dataset, options["output"], space, settings, options["resume"], origin
    )
    _measure(library, dataset, device, options["cost_threads"])
    _print_optimizer_summary(library)
    if not library.entries(("finished", "stopped")):
        raise DeepensError(
            f"the search trained no model ({summary.trials_started} trial(s) started, "
            f"{summary.trials_failed} failed); raise --time-budget or --max-trials, "
            "or see the warnings above for why trials failed"
        )
    return library


def _resumed_options(options: dict[str, Any]) -> tuple[dict[str, Any], Any]:
    """The options of the search being resumed, and its space.

    An option typed on the command line must agree with the recorded one: a
    resumed search that searched differently would not be the same search.
    """
    from deepens.history import unfinished_search

    record = unfinished_search(options["output"] / "library")
    recorded = {
        option: record.settings.get(setting)
        for option, setting in _SETTING_OPTIONS.items()
        if setting in record.settings
    }
    recorded.update({k: v for k, v in record.origin.items() if k in _DATA_OPTIONS})
    space = record.search_space()
    context: typer.Context = options["context"]
    for name in [*recorded, "space"]:
        source = context.get_parameter_source(name)
        if source is None or source.name == "DEFAULT":
            continue
        typed = options[name]
        was: Any = recorded.get(name, "another space")
        if name == "space":
            differs = SearchSpace.load(typed).to_dict() != space.to_dict()
        else:
            differs = typed != was
        if differs:
            raise DeepensError(
                f"--{name.replace('_', '-')} {typed} differs from search {record.id} "
                f"being resumed ({was}); a resumed search keeps its recorded "
                "options: drop it, or run without --resume for a new search"
            )
    return {**options, **recorded}, space


def _local_output(output: Path) -> Path:
    """The run folder as a local path (a file:// URI is accepted)."""
    from deepens.library import local_library_path

    return local_library_path(output)


@app.command()
@_reports_errors
def run(
    context: typer.Context,
    data: Data = "digits",
    output: Output = Path("runs/digits"),
    space: Space = "small",
    optimizer: Optimizer = "asha",
    max_trials: MaxTrials = 12,
    ad_hoc: AdHoc = None,
    ad_hoc_members: AdHocMembers = 4,
    time_budget: TimeBudget = None,
    max_epochs: MaxEpochs = 4,
    grace_period: GracePeriod = 1,
    reduction_factor: ReductionFactor = 2,
    cpus_per_trial: CpusPerTrial = 1.0,
    gpus_per_trial: GpusPerTrial = 0.0,
    max_concurrent: MaxConcurrent = None,
    mixed_precision: MixedPrecision = False,
    resume: Resume = False,
    budget: Budgets = None,
    cost_unit: CostUnit = "seconds",
    method: Methods = None,
    ensemble_size: EnsembleSize = 5,
    pruning_fraction: Pruning = 0.2,
    metric: Metric = "cross_entropy",
    combiner: Combiner = "average",
    selection_device: SelectionDevice = "cpu",
    shards: Shards = 1,
    device: Device = "auto",
    cost_threads: CostThreads = 1,
    seed: Seed = 0,
    validation_fraction: ValidationFraction = 0.15,
    test_fraction: TestFraction = 0.2,
    max_train_samples: MaxTrain = None,
    max_validation_samples: MaxValidation = None,
    max_test_samples: MaxTest = None,
    image_size: ImageSize = None,
    verbose: Verbose = False,
) -> None:
    """Search, measure, select and report in one go.

    Trains a library of networks with the chosen optimiser on Ray Tune, measures
    each model's inference cost, then builds the SMOBF ensemble (and the
    fixed-size greedy baseline) for each budget. Writes OUTPUT/library,
    OUTPUT/ensembles, OUTPUT/results.json and OUTPUT/pareto.png.
    """
    _setup_logging(verbose)
    output = _local_output(output)
    library = _build_library(dict(locals()))
    try:
        _select_and_report(
            library,
            output,
            budgets=budget,
            cost_unit=cost_unit,
            methods=method,
            ensemble_size=ensemble_size,
            pruning_fraction=pruning_fraction,
            metric=metric,
            combiner=combiner,
            selection_device=selection_device,
            shards=shards,
        )
    except BudgetError as error:
        raise BudgetError(
            f"{error}. The library at {library.path} is kept: choose budgets "
            f"without training with 'deepens select --output {output} --budget ...'"
        ) from None


@app.command()
@_reports_errors
def search(
    context: typer.Context,
    data: Data = "digits",
    output: Output = Path("runs/digits"),
    space: Space = "small",
    optimizer: Optimizer = "asha",
    max_trials: MaxTrials = 12,
    ad_hoc: AdHoc = None,
    ad_hoc_members: AdHocMembers = 4,
    time_budget: TimeBudget = None,
    max_epochs: MaxEpochs = 4,
    grace_period: GracePeriod = 1,
    reduction_factor: ReductionFactor = 2,
    cpus_per_trial: CpusPerTrial = 1.0,
    gpus_per_trial: GpusPerTrial = 0.0,
    max_concurrent: MaxConcurrent = None,
    mixed_precision: MixedPrecision = False,
    resume: Resume = False,
    device: Device = "auto",
    cost_threads: CostThreads = 1,
    seed: Seed = 0,
    validation_fraction: ValidationFraction = 0.15,
    test_fraction: TestFraction = 0.2,
    max_train_samples: MaxTrain = None,
    max_validation_samples: MaxValidation = None,
    max_test_samples: MaxTest = None,
    image_size: ImageSize = None,
    verbose: Verbose = False,
) -> None:
    """Build (or extend) the library at OUTPUT/library, and measure its models.

    After a crash, '--resume' continues the search where it stopped.
    """
    _setup_logging(verbose)
    output = _local_output(output)
    library = _build_library(dict(locals()))
    console.print(
        f"library: {len(library.entries(('finished', 'stopped')))} models "
        f"at {library.path}"
    )


@app.command()
@_reports_errors
def select(
    output: Output = Path("runs/digits"),
    library: Annotated[
        Path | None,
        typer.Option(help="Library folder (default: OUTPUT/library)."),
    ] = None,
    budget: Budgets = None,
    cost_unit: CostUnit = "seconds",
    method: Methods = None,
    ensemble_size: EnsembleSize = 5,
    pruning_fraction: Pruning = 0.2,
    metric: Metric = "cross_entropy",
    combiner: Combiner = "average",
    selection_device: SelectionDevice = "cpu",
    shards: Shards = 1,
    verbose: Verbose = False,
) -> None:
    """Build ensembles for new budgets from an existing library, without training."""
    from deepens.library import Library

    _setup_logging(verbose)
    opened = Library.open(library or output / "library")
    _select_and_report(
        opened,
        output,
        budgets=budget,
        cost_unit=cost_unit,
        methods=method,
        ensemble_size=ensemble_size,
        pruning_fraction=pruning_fraction,
        metric=metric,
        combiner=combiner,
        selection_device=selection_device,
        shards=shards,
    )


@app.command("import")
@_reports_errors
def import_(
    manifest: Annotated[
        Path,
        typer.Argument(
            help="JSON manifest: validation_labels, optional test_labels and "
            "class_names, and models, each with validation/test .npy files (or a "
            "predictions .npz) and a cost, flops or parameters."
        ),
    ],
    output: Output = Path("runs/imported"),
    verbose: Verbose = False,
) -> None:
    """Bring your own library: import cached predictions of networks trained
    elsewhere into OUTPUT/library, then ensemble them with 'deepens select'.

    Example manifest entry: {"name": "resnet50", "validation": "r50_val.npy",
    "test": "r50_test.npy", "cost": 1.9}. Paths are relative to the manifest.
    """
    from deepens.importing import import_predictions

    _setup_logging(verbose)
    library = import_predictions(manifest, output / "library")
    console.print(
        f"library: {len(library.entries())} models at {library.path}; next: "
        f"deepens select --output {output} --budget ..."
    )


@app.command()
@_reports_errors
def predict(
    ensemble: Annotated[Path, typer.Argument(help="A saved ensemble folder.")],
    inputs: Annotated[
        Path,
        typer.Argument(
            help="An image file, a folder of images (subfolders included), or an "
            ".npz with an array x."
        ),
    ],
    output: Annotated[
        Path, typer.Option("--output", "-o", help="CSV file to write.")
    ] = Path("predictions.csv"),
    device: Device = "auto",
    verbose: Verbose = False,
) -> None:
    """Predict each input's class and class probabilities, written as CSV."""
    from deepens.data import load_prediction_inputs
    from deepens.ensemble import Ensemble

    _setup_logging(verbose)
    if output.is_dir():
        raise DeepensError(f"--output {output} is a folder; give a CSV file name")
    loaded = Ensemble.load(ensemble)
    images, names = load_prediction_inputs(
        inputs, channels=loaded.channels, image_size=loaded.image_size
    )
    probabilities = loaded.predict_proba(images, device=_device(device))

    output.parent.mkdir(parents=True, exist_ok=True)
    with open(output, "w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(["input", "predicted_class", *loaded.class_names])
        for name, row in zip(names, probabilities, strict=True):
            writer.writerow(
                [
                    name,
                    loaded.class_names[int(row.argmax())],
                    *(f"{p:.6f}" for p in row),
                ]
            )
    console.print(f"wrote {len(names)} prediction(s) to {output}")


@app.command()
@_reports_errors
def optimizers() -> None:
    """List the optimisers --optimizer accepts and the package behind each."""
    from rich import box

    from deepens.optimizers import OPTIMIZERS

    table = Table(box=box.SIMPLE_HEAD, padding=(0, 1), pad_edge=False)
    for column in ("name", "what it does", "package", "stops trials early"):
        table.add_column(column)
    for info in OPTIMIZERS.values():
        table.add_row(
            info.name,
            info.description,
            info.package,
            "yes" if info.uses_schedule else "no",
        )
    out.print(table)


@space_app.command("show")
@_reports_errors
def space_show(
    name: Annotated[
        str, typer.Argument(help="A preset (small, paper) or a JSON file.")
    ],
) -> None:
    """Print a search space as JSON, to copy, edit and pass to --space."""
    from deepens.space import SearchSpace

    out.print_json(json.dumps(SearchSpace.load(name).to_dict()))


def _show_version(value: bool) -> None:
    if value:
        from deepens import __version__

        out.print(f"deepens {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_show_version, is_eager=True, help="Show the version."
        ),
    ] = False,
) -> None:
    """AutoML for ensembles of deep image classifiers under an inference budget."""


def main() -> None:
    """Entry point of the ``deepens`` console script."""
    try:
        app()
    except KeyboardInterrupt:
        console.print("interrupted; the library keeps every model committed so far")
        sys.exit(130)


if __name__ == "__main__":
    main()
