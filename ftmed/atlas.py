"""The study over several data files: datasets x sizes, each file's grid run into one runs folder.

`parse_datasets` / `parse_sizes` read the `--datasets` / `--sizes` specs; `missing_files` lists every file
the grid needs that is not on disk (with where to get it), and `compare_grid` refuses to start — one line
naming every missing file, its URL, MD5 and target path — before anything trains. Then every
(dataset, size) runs `ftmed.compare` into the same runs folder: resumable (finished runs are kept), each
file's table as `compare` writes it (a folder holding several data files gets one table per file).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from ftmed_core.data import data_path
from ftmed_core.errors import ConfigError, DataError
from ftmed_core.medmnist_info import dataset_info, dataset_names

ALL_2D = "all-2d"
SIZES = (28, 64, 128, 224)


def parse_datasets(spec: str | Iterable[str]) -> list[str]:
    """"all-2d" (every 2D flag ftmed trains) or names, comma-separated or a list; unknown names raise
    DataError naming the accepted ones."""
    names = [s.strip() for s in spec.split(",")] if isinstance(spec, str) else [str(s).strip() for s in spec]
    names = [n for n in names if n]
    if names == [ALL_2D]:
        return list(dataset_names())
    if not names:
        raise ConfigError(f"--datasets is empty; give flags like pathmnist,bloodmnist or {ALL_2D}")
    for name in names:
        dataset_info(name)  # one line naming the accepted flags
    return list(dict.fromkeys(names))


def parse_sizes(spec: str | int | Iterable[int]) -> list[int]:
    """Image sizes from "28,64" or a list; each must be one of 28, 64, 128, 224."""
    items = [spec] if isinstance(spec, int) else spec.split(",") if isinstance(spec, str) else list(spec)
    sizes = []
    for item in items:
        try:
            size = int(str(item).strip())
        except ValueError:
            raise ConfigError(f"--sizes takes integers from {SIZES}, got {item!r}") from None
        if size not in SIZES:
            raise ConfigError(f"size {size} is not a MedMNIST size; choose from {', '.join(map(str, SIZES))}")
        sizes.append(size)
    if not sizes:
        raise ConfigError(f"--sizes is empty; choose from {', '.join(map(str, SIZES))}")
    return list(dict.fromkeys(sizes))


def missing_files(datasets: Iterable[str], sizes: Iterable[int], data_dir: str | Path | None = None) -> list[dict]:
    """{dataset, size, path, url, md5} of every grid file not on disk, in grid order."""
    out = []
    for dataset in datasets:
        info = dataset_info(dataset)
        for size in sizes:
            path = data_path(dataset, size, data_dir)
            if not path.is_file():
                out.append({"dataset": dataset, "size": size, "path": path, "url": info.urls[size],
                            "md5": info.md5s[size]})
    return out


def missing_message(missing: list[dict]) -> str:
    """One line: every missing file with its URL, MD5 and target path."""
    items = "; ".join(f"{m['url']} (MD5 {m['md5']}) -> {m['path']}" for m in missing)
    return (f"{len(missing)} data file(s) missing, nothing trained: {items} "
            f"(download them, `ftmed data download`, or `ftmed data synth --flag FLAG --size N` for offline work)")


def compare_grid(datasets, sizes, data_dir: str | Path | None = None, **compare_kwargs) -> dict:
    """Run `ftmed.compare` for every (dataset, size) into one runs folder; {(dataset, size): Comparison}.

    Every data file must be present (DataError listing all missing ones, before any run); the other
    keyword arguments are `ftmed.compare`'s, the same for every file.
    """
    from ftmed.api import compare

    datasets, sizes = parse_datasets(datasets), parse_sizes(sizes)
    missing = missing_files(datasets, sizes, data_dir)
    if missing:
        raise DataError(missing_message(missing))
    return {(dataset, size): compare(dataset=dataset, size=size, data_dir=data_dir, **compare_kwargs)
            for dataset in datasets for size in sizes}
