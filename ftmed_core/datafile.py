"""Reading one MedMNIST `.npz` file: its MD5 (with the hash memo), and validation of its arrays and labels.

`ftmed_core.data` locates and downloads files and turns a validated file into an experiment's splits; this
module owns what a file must contain to be accepted (`load_npz`, `checked_labels`) and how it is hashed
(`file_md5`, `memo_md5`). `ftmed_core.data` re-exports every public name here.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ftmed_core.errors import DataError
from ftmed_core.medmnist_info import DatasetInfo, dataset_info
from ftmed_core.tasks import MULTI_LABEL, trained_as

SPLITS = ("train", "val", "test")
SYNTHETIC_KEY = "ftmed_synthetic"  # extra key in files made by `ftmed data synth`; medmnist ignores it


def check_not_a_directory(path: Path) -> None:
    """DataError when a directory (or anything else that is not a file) stands where the data file belongs."""
    if path.is_dir():
        raise DataError(f"{path} is a directory, not a MedMNIST .npz file; move it away (then ftmed data download "
                        f"or ftmed data synth), or pass --data-dir the folder that holds the file")
    if path.exists() and not path.is_file():
        raise DataError(f"{path} is not a regular file; remove it or pass --data-dir another folder")


def manual_download_hint(info: DatasetInfo, size: int, path: Path) -> str:
    return (
        f"download {info.urls[size]} by hand (MD5 {info.md5s[size]}) and place it at {path}; "
        f"or work offline on synthetic data: `ftmed data synth --out DIR` then `--data-dir DIR`"
    )


def file_md5(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


HASH_MEMO = "md5-memo.json"
# A file modified within this many seconds of being hashed may change again without its mtime moving
# (coarse timestamps): its hash is not memoised yet (git's "racily clean" rule).
_RACY_SECONDS = 2.0


def _identity(stat: os.stat_result) -> dict:
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "inode": stat.st_ino, "device": stat.st_dev}


def memo_md5(path: str | os.PathLike) -> str:
    """The MD5 of `path`, hashed only when the file's identity changed since it was last hashed.

    The memo (`md5-memo.json`, beside the file's `.npy` cache) maps the resolved path to
    (size, mtime_ns, inode, device) and the MD5 found for them. Any change of those re-hashes: an edit
    in place moves the mtime, a replacement (download, `data synth --overwrite`, `cp`) brings a new inode.
    What it cannot see is a rewrite that keeps size, inode and restores the mtime to the nanosecond
    (`os.utime` after an in-place edit); a file hashed while still being written, or within
    `_RACY_SECONDS` of its last change, is not memoised. The memo is a speed-up only: unreadable or
    unwritable, it is ignored and the file hashed.
    """
    from ftmed_core.npy_cache import cache_root
    from ftmed_core.records import atomic_write_text

    path = Path(path).resolve()
    memo_path = cache_root(path) / HASH_MEMO
    before = _identity(path.stat())
    try:
        memo = json.loads(memo_path.read_text())
        entry = memo.get(str(path)) if isinstance(memo, dict) else None
        if isinstance(entry, dict) and {k: entry.get(k) for k in before} == before and entry.get("md5"):
            return str(entry["md5"])
    except (OSError, ValueError):
        memo = {}
    md5 = file_md5(path)
    stat = path.stat()
    if _identity(stat) != before or time.time() - stat.st_mtime < _RACY_SECONDS:
        return md5
    memo = memo if isinstance(memo, dict) else {}
    memo[str(path)] = {**before, "md5": md5}
    try:
        memo_path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(memo_path, json.dumps(memo, indent=1))
    except OSError:
        pass
    return md5


@dataclass(frozen=True)
class RawDataset:
    """The six arrays of a MedMNIST file, validated, plus where they came from.

    Images are read-only memory maps of the file's `.npy` cache (`ftmed_core.npy_cache`): nothing is read
    until used. Labels are small and held in memory as int64: (N,) class indices, or (N, L) 0/1 label bits
    for a multi-label task (`checked_labels`).
    """

    info: DatasetInfo
    size: int
    images: dict  # split -> uint8 (N, H, W) or (N, H, W, C), memory-mapped
    labels: dict  # split -> int64 (N,) class indices, or (N, L) 0/1 bits for a multi-label task
    path: Path
    md5: str
    synthetic: dict | None  # the synthetic generator's parameters, None for real data
    cache: Path | None = None  # the folder of `.npy` files the images are mapped from

    @property
    def md5_verified(self) -> bool:
        return self.md5 == self.info.md5s.get(self.size)


def load_npz(path: str | os.PathLike, dataset: str, size: int, hash_memo: bool = True) -> RawDataset:
    """Validate a MedMNIST-format file (keys, dtypes, shapes, labels, lengths) and map its images.

    The file is unpacked once into a cache of `.npy` files checked against its MD5 (`npy_cache.unpacked`);
    the images are memory-mapped from there, so memory does not grow with the file. The MD5 comes from
    the hash memo (`memo_md5`) unless `hash_memo` is False (then the whole file is hashed).
    """
    from ftmed_core.npy_cache import discard, unpacked

    path = Path(path)
    info = dataset_info(dataset)
    if size not in info.urls:
        raise DataError(f"{dataset} has no size {size}; available: {', '.join(map(str, info.urls))}")
    check_not_a_directory(path)
    if not path.is_file():
        raise DataError(f"{path} does not exist; {manual_download_hint(info, size, path)}")
    try:
        md5 = memo_md5(path) if hash_memo else file_md5(path)
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from None
    if not zipfile.is_zipfile(path):
        raise DataError(f"{path} is truncated or corrupt (not a zip archive); delete it and download it again")
    folder, manifest = unpacked(path, md5)
    try:
        return _validated(path, dataset, size, info, md5, folder, manifest)
    except DataError:
        discard(path, md5)  # an invalid file leaves no unpacked copy behind
        raise


def _validated(path: Path, dataset: str, size: int, info, md5: str, folder: Path, manifest: dict) -> RawDataset:
    """`load_npz`'s checks of the unpacked arrays; DataError naming the first problem."""
    from ftmed_core.npy_cache import open_array

    keys = set(manifest["arrays"])
    missing = [f"{s}_{k}" for s in SPLITS for k in ("images", "labels") if f"{s}_{k}" not in keys]
    if missing:
        raise DataError(f"{path} is not a MedMNIST file: missing key(s) {', '.join(missing)}")
    images = {split: open_array(folder, f"{split}_images") for split in SPLITS}
    labels = {split: open_array(folder, f"{split}_labels", mmap=False) for split in SPLITS}
    synthetic = None
    if SYNTHETIC_KEY in keys:
        try:
            synthetic = json.loads(str(open_array(folder, SYNTHETIC_KEY, mmap=False)))
        except ValueError:
            raise DataError(f"{path}: the {SYNTHETIC_KEY} entry is not valid JSON") from None

    expected_tail = (size, size) if info.n_channels == 1 else (size, size, info.n_channels)
    for split in SPLITS:
        img = images[split]
        if img.dtype != np.uint8:
            raise DataError(f"{path}: {split}_images must be uint8, got {img.dtype}")
        if img.ndim < 1 or tuple(img.shape[1:]) != expected_tail:
            raise DataError(
                f"{path}: {split}_images has shape {img.shape}, expected (N, {', '.join(map(str, expected_tail))}) "
                f"for {dataset} at size {size}"
            )
        if len(labels[split]) != len(img):
            raise DataError(f"{path}: {split} has {len(img)} images but {len(labels[split])} labels")
        if len(img) == 0:
            raise DataError(f"{path}: the {split} split is empty")
        labels[split] = checked_labels(labels[split], info, f"{path}: {split}_labels")
    return RawDataset(info, size, images, labels, path, md5, synthetic, cache=folder)


def checked_labels(labels: np.ndarray, info: DatasetInfo, where: str) -> np.ndarray:
    """A split's labels as the study uses them (int64), or DataError naming `where` and what is wrong.

    Multi-class, binary and ordinal tasks (trained as multi-class, `ftmed_core.tasks`): integers shaped
    (N, 1) (MedMNIST's layout) or (N,), each in 0..n_classes-1 -> (N,) class indices. A multi-label task:
    integers shaped (N, L) with L the task's label count, each 0 or 1 -> (N, L) label bits, kept as such.
    """
    labels = np.asarray(labels)
    if not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"{where} must be integers, got {labels.dtype} {labels.shape}")
    if trained_as(info.task) == MULTI_LABEL:
        if labels.ndim != 2 or labels.shape[1] != info.n_classes:
            raise DataError(f"{where} must be (N, {info.n_classes}) label bits for {info.name} "
                            f"({info.task}), got shape {labels.shape}")
        if labels.size and (labels.min() < 0 or labels.max() > 1):
            raise DataError(f"{where} must be 0 or 1 (one bit per finding), got values in "
                            f"[{int(labels.min())}, {int(labels.max())}]")
        return labels.astype(np.int64)
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 1:
        raise DataError(f"{where} must be integers shaped (N, 1) or (N,), got {labels.dtype} {labels.shape}")
    if labels.size:
        low, high = int(labels.min()), int(labels.max())
        if low < 0 or high >= info.n_classes:
            raise DataError(f"{where} range over [{low}, {high}], but {info.name} has classes 0..{info.n_classes - 1}")
    return labels.astype(np.int64)
