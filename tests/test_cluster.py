"""A search on a local two-node Ray cluster spreads its trials over both nodes.

The cluster runs in a child process: the test process may hold a Ray session of
its own (``init_ray`` starts one per process), and Ray connects a process to one
cluster only. The child gets a private Ray temp folder, because a test cluster
advertises its address there and any ``ray.init()`` on the machine reading the
default one would connect to it.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from sessions import kill_session

from deepens.library import Library

pytestmark = pytest.mark.slow

SOURCE = Path(__file__).resolve().parents[1] / "src"

SCRIPT = """
import json, sys
import ray
from ray.cluster_utils import Cluster
from deepens.data import load_dataset
from deepens.search import SearchSettings, run_search
from deepens.space import SearchSpace

document = SearchSpace.load("small").to_dict()
document["parameters"].update(
    stem_filters=4, filter_multiplier=4, blocks_stage1=1, blocks_stage2=0,
    blocks_stage3=0, blocks_stage4=0,
)
dataset = load_dataset(
    "digits", max_train_samples=120, max_validation_samples=60, max_test_samples=60
)
cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
try:
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    settings = SearchSettings(
        optimizer="random", max_trials=4, max_epochs=1, max_concurrent_trials=2,
        ray_address=cluster.address,
    )
    summary = run_search(
        dataset, SearchSpace.from_dict(document), "file://" + sys.argv[1], settings
    )
    nodes = sorted(node["NodeID"] for node in ray.nodes() if node["Alive"])
    print(json.dumps({"nodes": nodes, "library_size": summary.library_size}))
finally:
    ray.shutdown()
    cluster.shutdown()
"""


def test_trials_spread_over_the_nodes_of_a_cluster(tmp_path):
    ray_folder = tempfile.mkdtemp(prefix="dray", dir="/tmp")  # short: socket paths
    environment = {
        **os.environ,
        "PYTHONPATH": str(SOURCE),
        "RAY_TMPDIR": ray_folder,
        "RAY_AIR_NEW_OUTPUT": "0",
    }
    environment.pop("RAY_ADDRESS", None)
    try:
        child = subprocess.Popen(
            [sys.executable, "-c", SCRIPT, str(tmp_path / "library")],
            env=environment,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        try:
            printed, errors = child.communicate(timeout=400)
        finally:
            kill_session(child.pid)
    finally:
        shutil.rmtree(ray_folder, ignore_errors=True)

    assert child.returncode == 0, errors[-3000:]
    reported = json.loads(printed.strip().splitlines()[-1])
    entries = Library.open(tmp_path / "library").entries()
    assert reported["library_size"] == len(entries) == 4
    assert len(reported["nodes"]) == 2
    assert {entry.info["node_id"] for entry in entries} == set(reported["nodes"])
    assert all(entry.info["hostname"] for entry in entries)
