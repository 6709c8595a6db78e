"""Shared fixtures: small MedMNIST-format files generated on the fly (tests never touch the network)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from ftmed_core.config import ExperimentConfig
from ftmed_core.synth import write_synthetic

# Tests must not write to the real ~/.medmnist or depend on what is there.
os.environ.setdefault("FTMED_DATA_DIR", str(Path(__file__).parent / ".no-default-data-dir"))


def write_npz(path: Path, **arrays) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    return path


def tiny_arrays(n_train=60, n_val=20, n_test=30, size=28, channels=3, n_classes=9, seed=0) -> dict:
    """Random arrays in MedMNIST's exact format (uint8 images, (N, 1) uint8 labels)."""
    rng = np.random.default_rng(seed)
    shape = (size, size) if channels == 1 else (size, size, channels)
    arrays = {}
    for split, n in (("train", n_train), ("val", n_val), ("test", n_test)):
        arrays[f"{split}_images"] = rng.integers(0, 256, size=(n, *shape), dtype=np.uint8)
        arrays[f"{split}_labels"] = rng.integers(0, n_classes, size=(n, 1)).astype(np.uint8)
    return arrays


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory) -> Path:
    """A learnable synthetic PathMNIST-format file at 3% scale (2,700 train / 215 test rows)."""
    out = tmp_path_factory.mktemp("synth")
    write_synthetic(out, "pathmnist", 28, scale=0.03, seed=0)
    return out


@pytest.fixture(scope="session")
def tiny_synth_dir(tmp_path_factory) -> Path:
    """A very small synthetic file (1% scale) for end-to-end CLI runs."""
    out = tmp_path_factory.mktemp("tinysynth")
    write_synthetic(out, "pathmnist", 28, scale=0.01, seed=1)
    return out


@pytest.fixture
def small_config(synth_dir) -> ExperimentConfig:
    """The baseline on the synthetic file, 2 epochs: learns well above chance in seconds."""
    return ExperimentConfig(data_dir=str(synth_dir), epochs=2)


SHIPPED_TO_RAY: list = []  # MD5s of data files tests shipped to the `cluster` (removed from its caches after)


@pytest.fixture(scope="module")
def cluster():
    """A real Ray cluster started from this process: head + one worker node, 1 CPU each (a module's tests
    share it). Afterwards the nodes' copies of the data files in SHIPPED_TO_RAY are removed (a shared /tmp
    here, node-local on a real cluster), and the cache folder if nothing else is cached there."""
    import contextlib
    import shutil
    import tempfile

    pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    from ftmed.executors import DATA_CACHE

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    node = {"num_cpus": 1, "object_store_memory": 200 << 20}
    cluster = Cluster(initialize_head=True, head_node_args={**node, "include_dashboard": False})
    cluster.add_node(**node)
    cluster.wait_for_nodes()
    yield cluster
    cluster.shutdown()
    for md5 in SHIPPED_TO_RAY:
        shutil.rmtree(Path(tempfile.gettempdir()) / DATA_CACHE / md5, ignore_errors=True)
    with contextlib.suppress(OSError):
        (Path(tempfile.gettempdir()) / DATA_CACHE).rmdir()
