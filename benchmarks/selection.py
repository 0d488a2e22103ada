"""Benchmark of SMOBF ensemble selection on a synthetic library.

Builds a library of float16 validation predictions (by default 1,000 models,
2,000 samples, 100 classes) whose quality rises with cost and whose costs span
two orders of magnitude, then selects SMOBF ensembles for 8 budgets and prints,
side by side from this one run:

* total seconds (validation, pruning and selection for all budgets);
* microseconds per candidate ensemble scored;
* peak memory (tracemalloc during a second, traced run; process max RSS);
* the speed-up per candidate over two straightforward references that score a
  candidate from full (N, C) probability matrices, as common AutoML libraries
  do: "averaging" averages the members' and the candidate's full matrices, then
  takes the cross-entropy of the full log matrix; "running sum" (faster, the
  stronger baseline) keeps the ensemble's full sum and adds only the
  candidate's. The references are timed on a sample of candidates and
  extrapolated per candidate; their losses are checked against ours.

Run: ``python benchmarks/selection.py [--models M --samples N --classes C]``.
"""

from __future__ import annotations

import argparse
import resource
import time
import tracemalloc
from collections.abc import Sequence

import numpy as np

from deepens.selection import (
    PROBABILITY_FLOOR,
    SelectedEnsemble,
    prepare_library,
    select_ensembles,
    smobf,
)

TARGET_SECONDS = 2.0
TARGET_SPEEDUP = 100.0
REFERENCE_CANDIDATES = 48
REFERENCE_ENSEMBLE_SIZE = 5


def synthetic_library(
    models: int, samples: int, classes: int, temperature: float = 3.0, seed: int = 0
) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """Float16 softmax predictions of noisy logits around the truth.

    A model's cost is log-uniform on [0.01, 1] s; its signal strength grows with
    log cost plus noise, so costlier models tend to be better but not always.
    All models share part of their noise (correlated errors), as real networks
    trained on the same data do. The default temperature of 3 makes them
    overconfident, as trained networks are: most wrong-class probabilities are
    float16 subnormals (slow for numpy to convert, which the references and
    validation pay) and some true-class probabilities underflow to 0.
    """
    generator = np.random.default_rng(seed)
    labels = generator.integers(0, classes, size=samples)
    costs = 10.0 ** generator.uniform(-2.0, 0.0, size=models)
    strengths = 2.0 + 0.6 * (np.log10(costs) + 2.0) + generator.normal(0, 0.3, models)
    shared_noise = generator.standard_normal((samples, classes), dtype=np.float32)
    rows = np.arange(samples)
    predictions = []
    for strength in strengths:
        logits = generator.standard_normal((samples, classes), dtype=np.float32)
        logits += 0.5 * shared_noise
        logits[rows, labels] += np.float32(strength)
        logits *= np.float32(temperature)
        logits -= logits.max(axis=1, keepdims=True)
        np.exp(logits, out=logits)
        logits /= logits.sum(axis=1, keepdims=True)
        predictions.append(logits.astype(np.float16))
    return predictions, labels, costs


def reference_losses(
    predictions: Sequence[np.ndarray],
    labels: np.ndarray,
    members: Sequence[int],
    candidates: Sequence[int],
) -> tuple[list[float], float]:
    """Running-sum reference: the ensemble's full sum plus the candidate's matrix.

    Returns the losses and the seconds per candidate.
    """
    rows = np.arange(labels.shape[0])
    ensemble_sum = np.zeros(predictions[0].shape, dtype=np.float64)
    for member in members:
        ensemble_sum += predictions[member]
    losses = []
    start = time.perf_counter()
    for candidate in candidates:
        average = (ensemble_sum + predictions[candidate]) / (len(members) + 1)
        log_probabilities = np.log(np.clip(average, PROBABILITY_FLOOR, 1.0))
        losses.append(float(-log_probabilities[rows, labels].mean()))
    seconds = (time.perf_counter() - start) / len(candidates)
    return losses, seconds


def averaging_reference_seconds(
    predictions: Sequence[np.ndarray],
    labels: np.ndarray,
    members: Sequence[int],
    candidates: Sequence[int],
) -> float:
    """Averaging reference: average all members' full matrices per candidate."""
    rows = np.arange(labels.shape[0])
    start = time.perf_counter()
    for candidate in candidates:
        ensemble = [*members, candidate]
        average = sum(predictions[m].astype(np.float64) for m in ensemble)
        average /= len(ensemble)
        log_probabilities = np.log(np.clip(average, PROBABILITY_FLOOR, 1.0))
        float(-log_probabilities[rows, labels].mean())
    return (time.perf_counter() - start) / len(candidates)


def agreement(
    predictions: Sequence[np.ndarray],
    labels: np.ndarray,
    costs: np.ndarray,
    members: Sequence[int],
    candidates: Sequence[int],
) -> float:
    """Largest gap between our and the reference's loss of the same ensembles.

    We renormalise each stored row to sum to 1 (undoing float16 rounding) and
    the reference does not, so both get float64 copies whose rows sum to 1.
    """
    chosen = sorted(set(members) | set(candidates))
    exact = {index: predictions[index].astype(np.float64) for index in chosen}
    exact = {i: array / array.sum(axis=1, keepdims=True) for i, array in exact.items()}
    reference, _ = reference_losses(
        [exact.get(index, predictions[0]) for index in range(len(predictions))],
        labels,
        members,
        candidates,
    )
    library = prepare_library(
        [exact[index] for index in chosen], labels, costs[chosen], pruning_fraction=1
    )
    position = {index: place for place, index in enumerate(chosen)}
    counts = library.pick_counts([position[member] for member in members])
    places = np.array([position[candidate] for candidate in candidates])
    ours = library.evaluator("cross_entropy").candidate_errors(counts, places)
    return float(np.max(np.abs(np.array(reference) - ours)))


def budgets_for(kept_costs: np.ndarray) -> list[float]:
    """8 budgets from the cheapest to 20x the median pruned model's cost."""
    cheapest = float(kept_costs.min())
    return list(np.geomspace(cheapest, 20.0 * float(np.median(kept_costs)), 8))


def run_selection(
    predictions: Sequence[np.ndarray],
    labels: np.ndarray,
    costs: np.ndarray,
    budgets: Sequence[float],
) -> tuple[dict[str, float], list[SelectedEnsemble]]:
    """Prepare and select for all budgets; return timings, counts and ensembles."""
    start = time.perf_counter()
    library = prepare_library(predictions, labels, costs)
    prepared = time.perf_counter()
    with library:
        ensembles = [smobf(library, budget) for budget in budgets]
        figures = dict(library.scoring_counts())
    end = time.perf_counter()
    figures.update(
        total_seconds=end - start,
        prepare_seconds=prepared - start,
        select_seconds=end - prepared,
    )
    return figures, ensembles


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=1000)
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument(
        "--temperature",
        type=float,
        default=3.0,
        help="logit scale; 1 gives few float16 subnormals (a harder reference)",
    )
    arguments = parser.parse_args()

    start = time.perf_counter()
    predictions, labels, costs = synthetic_library(
        arguments.models, arguments.samples, arguments.classes, arguments.temperature
    )
    print(
        f"library: {arguments.models} models x {arguments.samples} samples x "
        f"{arguments.classes} classes, float16, temperature "
        f"{arguments.temperature:g} "
        f"({sum(p.nbytes for p in predictions) / 2**20:.0f} MiB), "
        f"costs {costs.min():.3g}-{costs.max():.3g} s; "
        f"built in {time.perf_counter() - start:.1f} s"
    )

    # Warm-up (imports, page cache) and the budget range from the pruned library.
    with prepare_library(predictions, labels, costs) as warm:
        budgets = budgets_for(warm.costs)
        kept = len(warm.model_indices)
    print(f"budgets (s): {', '.join(f'{budget:.3g}' for budget in budgets)}")

    figures, ensembles = run_selection(predictions, labels, costs, budgets)
    tracemalloc.start()
    run_selection(predictions, labels, costs, budgets)
    _, peak_bytes = tracemalloc.get_traced_memory()
    tracemalloc.stop()

    # The one-call API on the same inputs must agree with the loop above.
    result = select_ensembles(predictions, labels, costs, budgets)
    agree = all(
        result.ensembles[float(budget)].members == ensemble.members
        for budget, ensemble in zip(budgets, ensembles, strict=True)
    )

    members = list(ensembles[-1].members[:REFERENCE_ENSEMBLE_SIZE])
    sample = [index for index in result.pruned if index not in members]
    sample = sample[:REFERENCE_CANDIDATES]
    _, reference_seconds = reference_losses(predictions, labels, members, sample)
    averaging_seconds = averaging_reference_seconds(
        predictions, labels, members, sample
    )
    disagreement = agreement(predictions, labels, costs, members, sample)
    report(
        figures,
        ensembles,
        budgets,
        (kept, len(predictions)),
        {"averaging": averaging_seconds, "running sum": reference_seconds},
    )
    print(f"same ensembles as select_ensembles:   {agree}")
    print(f"max |reference loss - our loss|:      {disagreement:.2e}")
    max_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak traced memory, prepare+select:   {peak_bytes / 2**20:.1f} MiB")
    print(f"process max RSS (library included):   {max_rss:.0f} MiB")
    print()
    summary(figures, reference_seconds, averaging_seconds)


def report(
    figures: dict[str, float],
    ensembles: Sequence[SelectedEnsemble],
    budgets: Sequence[float],
    library_size: tuple[int, int],
    reference_seconds: dict[str, float],
) -> None:
    """Print the ensembles found and the side-by-side timings."""
    kept, models = library_size
    print()
    print(f"SMOBF, W = (0.1, 0.01, 0.001), X = 0.2: {kept} of {models} models kept")
    for budget, ensemble in zip(budgets, ensembles, strict=True):
        print(
            f"  budget {budget:7.3f} s -> {len(ensemble.members):2d} members, "
            f"cost {ensemble.cost:6.3f} s, loss {ensemble.validation_loss:.4f}, "
            f"error {ensemble.validation_error:.3f}, w = {ensemble.trade_off}"
        )
    computed = max(figures["computed"], 1)
    ours = {
        "scoring only": figures["scoring_seconds"] / computed * 1e6,
        "all selection work": figures["select_seconds"] / computed * 1e6,
    }
    print()
    print("microseconds per candidate ensemble scored, ours vs reference (ratio)")
    header = "".join(f"{name:>24}" for name in reference_seconds)
    print(f"{'ours':>30}{header}")
    for label, microseconds in ours.items():
        cells = "".join(
            f"{seconds * 1e6:12.1f} ({seconds * 1e6 / microseconds:6.0f}x)"
            for seconds in reference_seconds.values()
        )
        print(f"{label:>18}{microseconds:12.2f}{cells}")
    print(
        f"seconds: {figures['total_seconds']:.3f} total = "
        f"{figures['prepare_seconds']:.3f} validate and prune + "
        f"{figures['select_seconds']:.3f} select, for 8 budgets x 3 weights"
    )
    running_total = reference_seconds["running sum"] * figures["requested"]
    print(
        f"candidate ensembles: {figures['requested']:.0f} considered, "
        f"{figures['computed']:.0f} computed (the rest are steps shared by budgets "
        f"and weights, cached); the running-sum reference would spend "
        f"{running_total:.1f} s scoring all considered ones"
    )


def summary(
    figures: dict[str, float], reference_seconds: float, averaging_seconds: float
) -> None:
    """One line: are the targets met?"""
    seconds = figures["total_seconds"]
    ours = figures["scoring_seconds"] / max(figures["computed"], 1)
    speedup = reference_seconds / ours
    print(
        f"summary: {seconds:.2f} s for 8 budgets "
        f"({'meets' if seconds <= TARGET_SECONDS else 'MISSES'} the "
        f"{TARGET_SECONDS:g} s target); per candidate {speedup:.0f}x faster than "
        f"the running-sum reference and {averaging_seconds / ours:.0f}x faster "
        f"than the averaging one "
        f"({'meets' if speedup >= TARGET_SPEEDUP else 'MISSES'} the "
        f"{TARGET_SPEEDUP:g}x target against the stronger)"
    )


if __name__ == "__main__":
    main()
