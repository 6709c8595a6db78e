"""The atlas on a real two-node Ray cluster (this machine, CPU; the `cluster` fixture of conftest.py):
three SYNTHETIC data files — a colour multi-class one (bloodmnist), a grayscale binary one (pneumoniamnist)
and multi-label chestmnist — x 2 variants x both frameworks x 2 seeds as one Ray submission, the atlas
checked against the per-file tables."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from cli.main import app
from conftest import SHIPPED_TO_RAY
from ftmed_core.data import file_md5
from ftmed_core.synth import write_synthetic
from test_atlas_grid import _check_atlas_against_tables

FLAGS = {"bloodmnist": 0.01, "pneumoniamnist": 0.01, "chestmnist": 0.005}


@pytest.mark.slow
def test_atlas_on_a_two_node_ray_cluster(cluster, tmp_path):
    for flag, scale in FLAGS.items():
        SHIPPED_TO_RAY.append(file_md5(write_synthetic(tmp_path / "data", flag, 28, scale=scale)))
    runs = tmp_path / "runs"
    args = ["compare", "--datasets", ",".join(FLAGS), "--sizes", "28", "--variants", "baseline,sgd-momentum",
            "--frameworks", "lightning,keras", "--seeds", "0,1", "--epochs", "1", "--threads", "1",
            "--data-dir", str(tmp_path / "data"), "--runs-dir", str(runs), "--executor", "ray",
            "--address", cluster.address, "--atlas"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert result.output.count("runs planned on") == 1 and "24 runs planned on 3 data file(s)" in result.output
    assert result.output.count("Ray cluster: 2 node(s)") == 1  # one submission for the whole grid
    atlas = _check_atlas_against_tables(runs, 3)
    assert {(a["dataset"], a["variant"]) for a in atlas} == {(f, "sgd-momentum") for f in FLAGS}
    assert all(a["equivalence"] != "n/a" for a in atlas)
    result = CliRunner().invoke(app, ["report", str(runs)])  # `ftmed report` rebuilds the same atlas
    assert result.exit_code == 0, result.output
    assert _check_atlas_against_tables(runs, 3) == atlas
    result = CliRunner().invoke(app, args)  # resumable: nothing left to train
    assert result.exit_code == 0 and "(24 already finished)" in result.output, result.output
