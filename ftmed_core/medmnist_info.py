"""MedMNIST dataset metadata (class names, split sizes, URLs, MD5s), read from medmnist's own `INFO`.

`import medmnist` imports torch (its Dataset subclasses torch's), which the neutral core must not pull in
and which would make `ftmed --help` slow. medmnist keeps `INFO` in `medmnist/info.py`, a module that only
needs the standard library, so we load that one file by path without running the package's __init__.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from functools import lru_cache

from ftmed_core.errors import DataError

# The medmnist task names ftmed trains (how each is trained: `ftmed_core.tasks`).
SUPPORTED_TASKS = ("multi-class", "binary-class", "ordinal-regression", "multi-label, binary-class")


@lru_cache(maxsize=1)
def medmnist_info() -> dict:
    spec = importlib.util.find_spec("medmnist")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("the medmnist package is not installed; run `pip install medmnist`")
    path = os.path.join(list(spec.submodule_search_locations)[0], "info.py")
    module_spec = importlib.util.spec_from_file_location("_ftmed_medmnist_info", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.INFO


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    task: str
    n_channels: int
    class_names: tuple[str, ...]
    n_samples: dict
    urls: dict  # size -> url
    md5s: dict  # size -> md5

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    def filename(self, size: int) -> str:
        return npz_filename(self.name, size)


def npz_filename(dataset: str, size: int) -> str:
    return f"{dataset}.npz" if size == 28 else f"{dataset}_{size}.npz"


def dataset_names() -> tuple[str, ...]:
    """The 2D MedMNIST datasets ftmed can train on (every task type; 3D ones excluded)."""
    return tuple(
        name for name, info in medmnist_info().items()
        if not name.endswith("3d") and info["task"] in SUPPORTED_TASKS
    )


def all_2d_flags() -> tuple[str, ...]:
    """Every 2D MedMNIST flag, whatever its task (multi-label ChestMNIST included): what `data synth` makes."""
    return tuple(name for name in medmnist_info() if not name.endswith("3d"))


def dataset_info(name: str, trainable: bool = True) -> DatasetInfo:
    """The metadata of a 2D flag. With `trainable` (the default) only flags whose task ftmed trains are
    accepted; `trainable=False` accepts every 2D flag (file formats, synthetic data)."""
    info = medmnist_info()
    flags = dataset_names() if trainable else all_2d_flags()
    if name not in info:
        raise DataError(f"unknown dataset {name!r}; choose one of: {', '.join(flags)}")
    entry = info[name]
    if name.endswith("3d"):
        raise DataError(f"{name} is a 3D dataset; ftmed handles the 2D ones: {', '.join(flags)}")
    if trainable and entry["task"] not in SUPPORTED_TASKS:
        raise DataError(
            f"{name} is a {entry['task']!r} task; ftmed trains {', '.join(SUPPORTED_TASKS)}: "
            f"{', '.join(dataset_names())}"
        )
    labels = entry["label"]
    urls, md5s = {}, {}
    for size in (28, 64, 128, 224):
        suffix = "" if size == 28 else f"_{size}"
        if f"url{suffix}" in entry:
            urls[size] = entry[f"url{suffix}"]
            md5s[size] = entry[f"MD5{suffix}"]
    return DatasetInfo(
        name=name,
        task=entry["task"],
        n_channels=int(entry["n_channels"]),
        class_names=tuple(labels[str(i)] for i in range(len(labels))),
        n_samples=dict(entry["n_samples"]),
        urls=urls,
        md5s=md5s,
    )
