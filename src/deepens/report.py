"""Reports of a selection: JSON for programs, a Pareto plot for people."""

from __future__ import annotations

import json
import os
from pathlib import Path

from deepens.workflow import SelectionReport

METHOD_COLOURS = {
    "smobf": "tab:blue",
    "greedy": "tab:orange",
    "greedy_replacement": "tab:green",
    "greedy_best": "tab:red",
    "single": "tab:purple",
}


def write_json(report: SelectionReport, path: str | os.PathLike[str]) -> Path:
    """Write the report as JSON (atomically) and return the path."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.tmp")
    temporary.write_text(json.dumps(report.to_dict(), indent=1))
    os.replace(temporary, target)
    return target


def plot_pareto(report: SelectionReport, path: str | os.PathLike[str]) -> Path:
    """Draw cost against test error: single models, and each method's ensembles.

    Each ensemble is labelled with its budget and size, as ``B<budget> #<size>``.
    Falls back to validation error where a library has no test split.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7.5, 5), dpi=120)
    singles = [m for m in report.candidates if m.get("cost") is not None]
    error_key = (
        "test_error"
        if all(r.test_error is not None for r in report.rows)
        else ("validation_error")
    )
    single_errors = [m.get("validation_error") for m in singles]
    axes.scatter(
        [m["cost"] for m in singles],
        [100 * e if e is not None else float("nan") for e in single_errors],
        s=12,
        c="lightgrey",
        label="single models (validation error)",
    )
    for method in dict.fromkeys(r.method for r in report.rows):
        rows = sorted(
            (r for r in report.rows if r.method == method), key=lambda r: r.budget
        )
        costs = [r.cost for r in rows]
        errors = [100 * getattr(r, error_key) for r in rows]
        colour = METHOD_COLOURS.get(method, None)
        axes.plot(costs, errors, "o-", color=colour, label=method)
        for row, cost, error in zip(rows, costs, errors, strict=True):
            axes.annotate(
                f"B{row.budget:.3g} #{len(row.members)}",
                (cost, error),
                textcoords="offset points",
                xytext=(4, 4),
                fontsize=7,
                color=colour,
            )

    axes.set_xscale("log")
    axes.set_xlabel(f"inference cost ({report.cost_unit})")
    axes.set_ylabel(f"{error_key.replace('_', ' ')} (%)")
    axes.set_title("Ensembles by budget: cost against error")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()

    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(target)
    plt.close(figure)
    return target
