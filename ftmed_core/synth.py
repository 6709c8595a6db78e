"""Synthetic MedMNIST-format files: same keys, dtypes and shapes as the real dataset, learnable labels.

For offline demos, tests and benchmarks. Each class has a smooth colour "texture" prototype; an image is
a random-strength mix of its class prototype, a distractor prototype of another class, and pixel noise,
and a share of the labels is flipped. A baseline MLP lands well above chance and well below 100 %.

The file carries an extra key (`ftmed_synthetic`, ignored by medmnist) with the generator's parameters,
so every record and table made from it is labelled synthetic.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np

from ftmed_core.data import SYNTHETIC_KEY, data_path
from ftmed_core.errors import DataError
from ftmed_core.medmnist_info import dataset_info
from ftmed_core.records import atomic_write_bytes


def split_sizes(dataset: str, scale: float) -> dict:
    info = dataset_info(dataset)
    return {split: max(9, int(round(n * scale))) for split, n in info.n_samples.items()}


def _images(rng, prototypes, labels, label_noise_classes, noise, chunk=8192):
    n = len(labels)
    shape = prototypes.shape[1:]
    out = np.empty((n, *shape), dtype=np.uint8)
    n_classes = len(prototypes)
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        lab = labels[start:stop]
        m = stop - start
        strength = rng.uniform(0.25, 1.0, size=(m,) + (1,) * len(shape)).astype(np.float32)
        distractor = (lab + rng.integers(1, n_classes, size=m)) % n_classes
        mix = strength * prototypes[lab] + 0.45 * prototypes[distractor]
        pixels = 128.0 + 48.0 * mix + noise * rng.standard_normal((m, *shape), dtype=np.float32)
        out[start:stop] = np.clip(pixels, 0, 255).astype(np.uint8)
    return out


def make_synthetic(dataset: str = "pathmnist", size: int = 28, scale: float = 1.0, seed: int = 0,
                   label_noise: float = 0.15, noise: float = 40.0) -> dict:
    """The arrays of a synthetic file, keyed like MedMNIST's `.npz`."""
    if not 0 < scale <= 1.0:
        raise DataError(f"scale must be in (0, 1], got {scale}")
    if not 0 <= label_noise < 1:
        raise DataError(f"label noise must be in [0, 1), got {label_noise}")
    info = dataset_info(dataset)
    rng = np.random.default_rng(seed)
    channels = info.n_channels
    coarse = max(2, size // 4)
    # Smooth prototypes: coarse noise upsampled, so that neighbouring pixels correlate like real images.
    base = rng.standard_normal((info.n_classes, coarse, coarse, channels)).astype(np.float32)
    reps = -(-size // coarse)
    prototypes = base.repeat(reps, axis=1).repeat(reps, axis=2)[:, :size, :size, :]
    if channels == 1:
        prototypes = prototypes[..., 0]
    sizes = split_sizes(dataset, scale)
    arrays = {}
    for split in ("train", "val", "test"):
        n = sizes[split]
        true = rng.integers(0, info.n_classes, size=n)
        arrays[f"{split}_images"] = _images(rng, prototypes, true, info.n_classes, noise)
        flip = rng.random(n) < label_noise
        labels = np.where(flip, rng.integers(0, info.n_classes, size=n), true)
        arrays[f"{split}_labels"] = labels.astype(np.uint8).reshape(-1, 1)
    params = {"generator": "ftmed.synth", "dataset_shape_of": dataset, "size": size, "scale": scale,
              "seed": seed, "label_noise": label_noise, "noise": noise, "split_sizes": sizes}
    arrays[SYNTHETIC_KEY] = np.array(json.dumps(params))
    return arrays


def write_synthetic(out_dir: str | Path, dataset: str = "pathmnist", size: int = 28, scale: float = 1.0,
                    seed: int = 0, overwrite: bool = False, **kwargs) -> Path:
    """Write `{dataset}[_size].npz` in `out_dir` (refusing to replace an existing file unless `overwrite`)."""
    path = data_path(dataset, size, out_dir)
    if path.exists() and not overwrite:
        raise DataError(f"{path} already exists; pass --overwrite to replace it")
    arrays = make_synthetic(dataset, size, scale, seed, **kwargs)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        atomic_write_bytes(path, buffer.getvalue())
    except OSError as exc:
        raise DataError(f"cannot write {path}: {exc.strerror or exc}") from None
    return path
