"""Synthetic MedMNIST-format files: same keys, dtypes and shapes as the real dataset, learnable labels.

For offline demos, tests and benchmarks. Each class has a smooth colour "texture" prototype; an image is
a random-strength mix of its class prototype, a distractor prototype of another class, and pixel noise,
and a share of the labels is flipped. A baseline MLP lands well above chance and well below 100 %.

The file carries an extra key (`ftmed_synthetic`, ignored by medmnist) with the generator's parameters,
so every record and table made from it is labelled synthetic.
"""

from __future__ import annotations

import itertools
import json
import zipfile
from pathlib import Path

import numpy as np

from ftmed_core.data import SYNTHETIC_KEY, data_path
from ftmed_core.errors import DataError
from ftmed_core.medmnist_info import dataset_info
from ftmed_core.records import atomic_write


def split_sizes(dataset: str, scale: float) -> dict:
    """Each split's row count in a synthetic file: the real split's scaled by `scale`, at least 9 rows."""
    info = dataset_info(dataset, trainable=False)
    return {split: max(9, int(round(n * scale))) for split, n in info.n_samples.items()}


# Float working set of one generated chunk; at 28 px this keeps the 8,192-row chunks the generator has
# always used (so small files are unchanged), at 224 px it is a few hundred rows.
_CHUNK_FLOAT_BYTES = 1 << 27


def _chunk_rows(row_shape: tuple) -> int:
    return int(min(8192, max(1, _CHUNK_FLOAT_BYTES // (4 * int(np.prod(row_shape))))))


def _image_chunks(rng, prototypes, labels, noise):
    """The images of `labels`, generated and yielded a chunk at a time (uint8)."""
    n = len(labels)
    shape = prototypes.shape[1:]
    n_classes = len(prototypes)
    chunk = _chunk_rows(shape)
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        lab = labels[start:stop]
        m = stop - start
        strength = rng.uniform(0.25, 1.0, size=(m,) + (1,) * len(shape)).astype(np.float32)
        distractor = (lab + rng.integers(1, n_classes, size=m)) % n_classes
        mix = strength * prototypes[lab] + 0.45 * prototypes[distractor]
        pixels = 128.0 + 48.0 * mix + noise * rng.standard_normal((m, *shape), dtype=np.float32)
        yield np.clip(pixels, 0, 255).astype(np.uint8)


def _multi_label_chunks(rng, prototypes, labels, noise):
    """The images of a multi-label `labels` matrix (N, L): each present finding adds its prototype."""
    n = len(labels)
    shape = prototypes.shape[1:]
    chunk = _chunk_rows(shape)
    flat = prototypes.reshape(len(prototypes), -1)
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        lab = labels[start:stop].astype(np.float32)
        m = stop - start
        strength = rng.uniform(0.5, 1.0, size=(m, 1)).astype(np.float32)
        # Normal images (no finding) are plain noise around grey; k findings mix k prototypes, scaled so
        # the image's contrast does not grow with k.
        mix = (lab @ flat) / np.sqrt(np.maximum(lab.sum(axis=1, keepdims=True), 1.0)) * strength
        pixels = 128.0 + 48.0 * mix.reshape((m, *shape)) + noise * rng.standard_normal((m, *shape), dtype=np.float32)
        yield np.clip(pixels, 0, 255).astype(np.uint8)


def _members(dataset: str, size: int, scale: float, seed: int, label_noise: float = 0.15, noise: float = 40.0):
    """(key, shape, dtype, chunks) of each array of the file, in file order.

    Random draws happen while the chunks are consumed, so the members must be consumed in this order
    (images before labels of a split): generation is streamed, never the whole file in memory.
    """
    if not 0 < scale <= 1.0:
        raise DataError(f"scale must be in (0, 1], got {scale}")
    if not 0 <= label_noise < 1:
        raise DataError(f"label noise must be in [0, 1), got {label_noise}")
    info = dataset_info(dataset, trainable=False)
    if size not in info.urls:
        raise DataError(f"{dataset} has no size {size}; available: {', '.join(map(str, info.urls))}")
    multi_label = info.task.startswith("multi-label")
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
    if multi_label:
        yield from _multi_label_members(rng, info, prototypes, sizes, label_noise, noise)
    for split in ("train", "val", "test") if not multi_label else ():
        n = sizes[split]
        true = rng.integers(0, info.n_classes, size=n)
        yield f"{split}_images", (n, *prototypes.shape[1:]), np.uint8, _image_chunks(rng, prototypes, true, noise)

        def labels(n=n, true=true):
            flip = rng.random(n) < label_noise
            yield np.where(flip, rng.integers(0, info.n_classes, size=n), true).astype(np.uint8).reshape(-1, 1)

        yield f"{split}_labels", (n, 1), np.uint8, labels()
    params = {"generator": "ftmed.synth", "dataset_shape_of": dataset, "task": info.task, "size": size, "scale": scale,
              "seed": seed, "label_noise": label_noise, "noise": noise, "split_sizes": sizes}
    text = np.array(json.dumps(params))
    yield SYNTHETIC_KEY, text.shape, text.dtype, iter([text])


def _multi_label_members(rng, info, prototypes, sizes, label_noise, noise):
    """The split members of a multi-label file: labels (N, L) uint8 in {0, 1}, as MedMNIST stores them.

    Each finding has its own prevalence (5-30 %) and prototype; a share `label_noise / 4` of the label
    bits is flipped (a flipped bit is rarer than a flipped class: there are L of them per image).
    """
    prevalence = rng.uniform(0.05, 0.3, size=info.n_classes)
    for split in ("train", "val", "test"):
        n = sizes[split]
        true = (rng.random((n, info.n_classes)) < prevalence).astype(np.uint8)
        yield f"{split}_images", (n, *prototypes.shape[1:]), np.uint8, _multi_label_chunks(rng, prototypes, true, noise)

        def labels(n=n, true=true):
            flip = rng.random(true.shape) < label_noise / 4
            yield np.where(flip, 1 - true, true).astype(np.uint8)

        yield f"{split}_labels", (n, info.n_classes), np.uint8, labels()


def make_synthetic(dataset: str = "pathmnist", size: int = 28, scale: float = 1.0, seed: int = 0,
                   label_noise: float = 0.15, noise: float = 40.0) -> dict:
    """The arrays of a synthetic file, keyed like MedMNIST's `.npz` (in memory: for small files)."""
    arrays = {}
    for key, shape, dtype, chunks in _members(dataset, size, scale, seed, label_noise, noise):
        parts = list(chunks)
        arrays[key] = parts[0] if len(parts) == 1 else np.concatenate(parts)
    return arrays


def write_synthetic(out_dir: str | Path, dataset: str = "pathmnist", size: int = 28, scale: float = 1.0,
                    seed: int = 0, overwrite: bool = False, **kwargs) -> Path:
    """Write `{dataset}[_size].npz` in `out_dir` (refusing to replace an existing file unless `overwrite`).

    Streamed: each array goes into the archive a generated chunk at a time (memory stays at one chunk,
    ~0.5 GB at most, whatever the size), the same bytes `np.savez` would store. Written to a temporary
    file, fsynced, then renamed: an interrupted write never looks like a dataset.
    """
    path = data_path(dataset, size, out_dir)
    if path.exists() and not overwrite:
        raise DataError(f"{path} already exists; pass --overwrite to replace it")
    members = _members(dataset, size, scale, seed, **kwargs)  # validates the arguments before any writing
    first = next(members)
    def write(handle) -> None:
        with zipfile.ZipFile(handle, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
            for key, shape, dtype, chunks in itertools.chain([first], members):
                with archive.open(f"{key}.npy", "w", force_zip64=True) as member:
                    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)),
                              "fortran_order": False, "shape": tuple(shape)}
                    np.lib.format.write_array_header_1_0(member, header)
                    for chunk in chunks:
                        member.write(np.ascontiguousarray(chunk).tobytes())

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, write)
    except OSError as exc:
        raise DataError(f"cannot write {path}: {exc.strerror or exc}") from None
    return path
