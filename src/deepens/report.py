"""Reports of a selection: JSON for programs, a Pareto plot for people."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from deepens.library import Library, loss_and_error
from deepens.workflow import EnsembleRow, SelectionReport

METHOD_COLOURS = {
    "smobf": "tab:blue",
    "greedy": "tab:orange",
    "greedy_replacement": "tab:green",
    "greedy_best": "tab:red",
    "single": "tab:purple",
    "adhoc": "tab:brown",
}


def write_json(report: SelectionReport, path: str | os.PathLike[str]) -> Path:
    """Write the report as JSON (atomically) and return the path."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.tmp")
    temporary.write_text(json.dumps(report.to_dict(), indent=1))
    os.replace(temporary, target)
    return target


METHOD_STYLES = {
    "smobf": ("o", "-", 3),
    "greedy": ("s", "--", 2),
}


def _error_key(report: SelectionReport) -> str:
    """Test error where every ensemble and model has one, else validation error."""
    rows_have_test = all(row.test_error is not None for row in report.rows)
    models_have_test = all(m.get("test_error") is not None for m in report.candidates)
    return "test_error" if rows_have_test and models_have_test else "validation_error"


def _point_labels(rows: list[EnsembleRow], error_key: str) -> dict[tuple, str]:
    """One label per distinct point: the budgets that chose it and its size.

    Several budgets often choose the same ensemble; one label listing them all
    stays readable where one label per budget would print on top of each other.
    """
    budgets: dict[tuple, list[float]] = {}
    sizes: dict[tuple, int] = {}
    for row in rows:
        point = (row.cost, getattr(row, error_key))
        budgets.setdefault(point, []).append(row.budget)
        sizes[point] = len(row.members)
    return {
        point: "B" + ", ".join(f"{b:.3g}" for b in sorted(values)) + f" #{sizes[point]}"
        for point, values in budgets.items()
    }


def plot_pareto(report: SelectionReport, path: str | os.PathLike[str]) -> Path:
    """Draw cost against error: every single model, and each method's ensembles.

    Each ensemble point is labelled ``B<budgets> #<members>``. Errors are on the
    test split (validation where the library has none), for models and
    ensembles alike, so the two can be compared.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator

    error_key = _error_key(report)
    figure, axes = plt.subplots(figsize=(8, 5.2), dpi=120)
    singles = [m for m in report.candidates if m.get("cost") is not None]
    axes.scatter(
        [m["cost"] for m in singles],
        [100 * (m.get(error_key) or float("nan")) for m in singles],
        s=14,
        c="silver",
        label="single models",
        zorder=1,
    )
    for method in dict.fromkeys(row.method for row in report.rows):
        rows = sorted(
            (r for r in report.rows if r.method == method), key=lambda r: r.cost
        )
        marker, line, order = METHOD_STYLES.get(method, ("^", ":", 2))
        colour = METHOD_COLOURS.get(method)
        axes.plot(
            [r.cost for r in rows],
            [100 * getattr(r, error_key) for r in rows],
            marker=marker,
            linestyle=line,
            color=colour,
            label=method,
            zorder=order,
            markersize=7 if method == "smobf" else 9,
            markerfacecolor=colour if method == "smobf" else "none",
        )
        for (cost, error), label in _point_labels(rows, error_key).items():
            axes.annotate(
                label,
                (cost, 100 * error),
                textcoords="offset points",
                xytext=(5, 6 if method == "smobf" else -12),
                fontsize=7,
                color=colour,
            )

    _focus_on_ensembles(axes, report, singles, error_key)
    axes.set_xscale("log")
    # Plain numbers (0.5, 2, 3e+07) on the log axis, including its minor ticks.
    plain = FuncFormatter(lambda value, _: f"{value:.3g}")
    axes.xaxis.set_major_formatter(plain)
    axes.xaxis.set_minor_locator(LogLocator(subs=(2.0, 3.0, 5.0)))
    axes.xaxis.set_minor_formatter(plain)
    axes.tick_params(axis="x", which="minor", labelsize=7)
    axes.set_xlabel(f"inference cost ({_unit_label(report.cost_unit)})")
    axes.set_ylabel(f"{error_key.replace('_', ' ')} (%)")
    axes.set_title(
        f"Ensembles per budget from a library of {report.library_size} models"
    )
    axes.grid(True, which="major", alpha=0.35)
    axes.legend(fontsize=8, loc="upper right")
    figure.text(
        0.01,
        0.01,
        "labels: B = the budget(s) that chose the ensemble, # = its members",
        fontsize=7,
        color="dimgray",
    )
    figure.tight_layout(rect=(0, 0.03, 1, 1))

    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(target)
    plt.close(figure)
    return target


def _focus_on_ensembles(
    axes: Any, report: SelectionReport, singles: list[dict[str, Any]], error_key: str
) -> None:
    """Zoom the error axis onto the ensembles; count the models left above it.

    Diverged or early-stopped models can sit at 50-90 % error and would squash
    the interesting range, the ensembles', into the bottom of the plot.
    """
    errors = [100 * getattr(row, error_key) for row in report.rows]
    if not errors:
        return
    top = min(100.0, 2.0 * max(errors) + 1.0)
    bottom = max(0.0, min(errors) - 0.25 * (top - min(errors)))
    axes.set_ylim(bottom, top)
    above = sum(1 for m in singles if (m.get(error_key) or 0) * 100 > top)
    if above:
        axes.text(
            0.01,
            0.98,
            f"{above} model(s) above {top:.0f} % not shown",
            transform=axes.transAxes,
            fontsize=7,
            color="dimgray",
            va="top",
        )


def _unit_label(cost_unit: str) -> str:
    return {
        "seconds": "seconds to predict 2,000 images",
        "flops": "FLOPs per image",
        "parameters": "parameters",
    }.get(cost_unit, cost_unit)


def summarise_optimizers(library: Library) -> list[dict[str, Any]]:
    """One row per optimiser that added models to the library.

    A library extended by several searches holds models from several
    optimisers; each row counts its trials by outcome and gives its best model
    by validation loss, with that model's test error where the library has
    test labels and the model test predictions. Imported models form a row of
    their own.
    """
    rows: dict[str, dict[str, Any]] = {}
    best: dict[str, Any] = {}
    for entry in library.entries():
        name = str(entry.info.get("optimizer") or entry.info.get("source") or "-")
        row = rows.setdefault(
            name,
            {
                "optimizer": name,
                "models": 0,
                "finished": 0,
                "stopped": 0,
                "failed": 0,
                "best_validation_loss": None,
                "best_test_error": None,
            },
        )
        if entry.status in ("finished", "stopped", "failed"):
            row[entry.status] += 1
        if entry.status in ("failed", "training"):
            continue
        row["models"] += 1
        if entry.learning_curve:
            loss = float(entry.learning_curve[-1])
        else:  # an imported model has no learning curve
            loss = loss_and_error(
                entry.validation_probabilities(), library.validation_labels
            )[0]
        if row["best_validation_loss"] is None or loss < row["best_validation_loss"]:
            row["best_validation_loss"] = loss
            best[name] = entry

    labels = library.test_labels
    for name, entry in best.items():
        probabilities = entry.test_probabilities()
        if labels is not None and probabilities is not None:
            rows[name]["best_test_error"] = loss_and_error(probabilities, labels)[1]
    return sorted(rows.values(), key=lambda row: str(row["optimizer"]))
