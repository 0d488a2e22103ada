"""The paper's Table 1 in small: each optimiser builds a library in the same wall time.

Run it as ``python benchmarks/optimizers.py`` (it needs Debian's
``dataset-fashion-mnist`` package). For every optimiser in turn it searches a
slice of Fashion-MNIST for the same wall-time budget, measures the new models
(test predictions and inference time), and selects SMOBF ensembles at two
FLOP budgets shared by all optimisers, so the libraries are compared on the
same terms. It prints, per optimiser, the library size, the best single
model's test error (lowest validation loss) and the SMOBF ensembles' test
errors, and writes them as JSON.

FLOPs rather than seconds set the budgets: they do not depend on what else the
machine was doing while each library was measured.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from deepens.cost import measure_library
from deepens.data import load_dataset
from deepens.library import Library
from deepens.optimizers import OPTIMIZERS
from deepens.search import SearchSettings, run_search
from deepens.space import SearchSpace
from deepens.workflow import select


def _search_all(arguments: argparse.Namespace) -> dict[str, dict[str, Any]]:
    dataset = load_dataset(
        arguments.data,
        max_train_samples=arguments.max_train_samples,
        max_validation_samples=arguments.max_validation_samples,
        max_test_samples=arguments.max_test_samples,
        seed=arguments.seed,
    )
    space = SearchSpace.load(arguments.space)
    runs: dict[str, dict[str, Any]] = {}
    for name in arguments.optimizers:
        folder = arguments.output / name
        shutil.rmtree(folder, ignore_errors=True)
        settings = SearchSettings(
            optimizer=name,
            max_trials=arguments.max_trials,
            time_budget_s=arguments.wall_seconds,
            max_epochs=arguments.max_epochs,
            grace_period=arguments.grace_period,
            reduction_factor=arguments.reduction_factor,
            max_concurrent_trials=2,
            seed=arguments.seed,
        )
        started = time.perf_counter()
        summary = run_search(dataset, space, folder, settings)
        searched = time.perf_counter() - started
        library = Library.open(folder)
        measure_library(library, dataset, device="cpu", threads=arguments.cost_threads)
        runs[name] = {
            "search_seconds": searched,
            "trials_started": summary.trials_started,
            "trials_failed": summary.trials_failed,
        }
        started_trials = summary.trials_started
        print(f"{name}: {started_trials} trials in {searched:.0f} s", flush=True)
    return runs


def _score(arguments: argparse.Namespace, runs: dict[str, dict[str, Any]]) -> None:
    libraries = {name: Library.open(arguments.output / name) for name in runs}
    flops = [
        float(entry.flops)
        for library in libraries.values()
        for entry in library.entries(("finished", "stopped"))
        if entry.flops
    ]
    # Shared budgets: most single models fit the small one; the large one has
    # room for about four of them.
    small = float(np.percentile(flops, 75))
    budgets = [small, 4 * small]
    for name, library in libraries.items():
        report = select(
            library,
            budgets,
            cost_unit="flops",
            methods=["smobf"],
            pruning_fraction=arguments.pruning_fraction,
        )
        rows = {row.budget: row for row in report.rows}
        runs[name].update(
            library_size=report.library_size,
            best_single_test_error=report.best_single["test_error"],
            smobf={
                f"{budget:.4g}": None
                if budget not in rows
                else {
                    "test_error": rows[budget].test_error,
                    "members": len(rows[budget].members),
                }
                for budget in budgets
            },
        )
    runs["_budgets_flops"] = {"small": budgets[0], "large": budgets[1]}


def _print(runs: dict[str, Any], wall_seconds: float) -> None:
    budgets = runs["_budgets_flops"]
    print()
    print(
        f"same wall budget per optimiser: {wall_seconds:.0f} s; SMOBF "
        "budgets "
        f"{budgets['small'] / 1e6:.1f} and {budgets['large'] / 1e6:.1f} MFLOPs"
    )
    header = "optimizer   trials  library  best single  SMOBF small     SMOBF large"
    print(header)
    for name, run in runs.items():
        if name.startswith("_"):
            continue
        cells = []
        for value in run["smobf"].values():
            cells.append(
                "      -       "
                if value is None
                else f"{100 * value['test_error']:6.2f} % ({value['members']})"
            )
        print(
            f"{name:10s} {run['trials_started']:6d} {run['library_size']:8d} "
            f"{100 * run['best_single_test_error']:9.2f} %  {cells[0]}  {cells[1]}"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="fashion-mnist")
    parser.add_argument("--space", default="small")
    parser.add_argument("--output", type=Path, default=Path("runs/bench-optimizers"))
    parser.add_argument("--optimizers", nargs="+", default=list(OPTIMIZERS))
    parser.add_argument("--wall-seconds", type=float, default=240.0)
    parser.add_argument("--max-trials", type=int, default=24)
    parser.add_argument("--max-epochs", type=int, default=3)
    parser.add_argument("--grace-period", type=int, default=1)
    parser.add_argument("--reduction-factor", type=int, default=2)
    parser.add_argument("--max-train-samples", type=int, default=4000)
    parser.add_argument("--max-validation-samples", type=int, default=1000)
    parser.add_argument("--max-test-samples", type=int, default=5000)
    parser.add_argument("--cost-threads", type=int, default=2)
    # A library of about 20 models: keep half, not the paper's 20 % of hundreds.
    parser.add_argument("--pruning-fraction", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=0)
    arguments = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    runs = _search_all(arguments)
    _score(arguments, runs)
    _print(runs, arguments.wall_seconds)
    path = arguments.output / "optimizers.json"
    path.write_text(json.dumps(runs, indent=1))
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
