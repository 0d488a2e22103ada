"""The main job on Fashion-MNIST, end to end, with the README's settings.

Run it as ``python benchmarks/main_job.py`` (it needs Debian's
``dataset-fashion-mnist`` package). It runs ``deepens run`` once and prints what
issue "The main job, end to end" asks for: wall time against the 15-minute
target, library size, budgets answered, and the largest-budget SMOBF ensemble's
test error beside the best single model's (the model with the lowest validation
loss), as a ratio measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

README_SETTINGS = [
    "--data", "fashion-mnist",
    "--max-train-samples", "6000",
    "--max-validation-samples", "2000",
    "--max-trials", "18",
    "--max-epochs", "5",
    "--grace-period", "2",
    "--reduction-factor", "2",
    "--time-budget", "480",
    "--cost-threads", "2",
]  # fmt: skip
TARGET_SECONDS = 15 * 60


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=Path("runs/benchmark-fashion"))
    arguments = parser.parse_args()
    shutil.rmtree(arguments.output, ignore_errors=True)

    command = [sys.executable, "-m", "deepens.cli", "run", "--output"]
    command += [str(arguments.output), *README_SETTINGS]
    started = time.perf_counter()
    completed = subprocess.run(command, check=False)
    seconds = time.perf_counter() - started
    if completed.returncode != 0:
        print(f"deepens run failed with exit code {completed.returncode}")
        return completed.returncode

    report = json.loads((arguments.output / "results.json").read_text())
    smobf = [row for row in report["ensembles"] if row["method"] == "smobf"]
    largest = max(smobf, key=lambda row: row["budget"])
    single = report["best_single_model"]
    print()
    share = seconds / TARGET_SECONDS
    print(f"wall time            {seconds:8.1f} s  ({share:.2f} of the 15 min target)")
    print(f"library              {report['library_size']:8d} models")
    print(f"budgets answered     {len(smobf):8d}")
    print(f"best single model    {100 * single['test_error']:8.2f} % test error")
    print(
        f"SMOBF, budget {largest['budget']:.3g} s {100 * largest['test_error']:8.2f} % "
        f"test error, {len(largest['members'])} members, cost {largest['cost']:.3g} s"
    )
    print(f"error ratio          {largest['test_error'] / single['test_error']:8.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
