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
