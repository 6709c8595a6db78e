"""The atlas on a real two-node Ray cluster (this machine, CPU): two SYNTHETIC data files (a colour
multi-class one and a grayscale binary one) x 2 variants x both frameworks x 2 seeds, checked against the
per-file tables. (Multi-label ChestMNIST joins once the training loop takes multi-label files.)"""

from __future__ import annotations

import os

import pytest
from typer.testing import CliRunner

from cli.main import app
from ftmed_core.synth import write_synthetic
from test_atlas_grid import _check_atlas_against_tables


@pytest.fixture(scope="module")
def cluster():
    """Head + one worker node, 1 CPU each."""
    pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    node = {"num_cpus": 1, "object_store_memory": 200 << 20}
    cluster = Cluster(initialize_head=True, head_node_args={**node, "include_dashboard": False})
    cluster.add_node(**node)
    cluster.wait_for_nodes()
    yield cluster
    cluster.shutdown()


@pytest.mark.slow
def test_atlas_on_a_two_node_ray_cluster(cluster, tmp_path):
    for flag in ("bloodmnist", "pneumoniamnist"):
        write_synthetic(tmp_path / "data", flag, 28, scale=0.01)
    runs = tmp_path / "runs"
    result = CliRunner().invoke(app, [
        "compare", "--datasets", "bloodmnist,pneumoniamnist", "--sizes", "28", "--variants", "baseline,sgd-momentum",
        "--frameworks", "lightning,keras", "--seeds", "0,1", "--epochs", "1", "--threads", "1",
        "--data-dir", str(tmp_path / "data"), "--runs-dir", str(runs), "--executor", "ray",
        "--address", cluster.address, "--atlas"])
    assert result.exit_code == 0, result.output
    atlas = _check_atlas_against_tables(runs, 2)
    assert len(atlas) == 2 and all(a["equivalence"] != "n/a" for a in atlas)
    result = CliRunner().invoke(app, ["report", str(runs)])  # `ftmed report` rebuilds the same atlas
    assert result.exit_code == 0, result.output
    assert _check_atlas_against_tables(runs, 2) == atlas
