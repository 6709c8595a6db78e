"""MedMNIST `.npz` files: where they live, downloading, validating, preprocessing, and the train/val split.

The core decides the data protocol once for both frameworks: pixels / 255 as float32, flattened; integer
labels; the validation rows (Keras `validation_split` semantics or MedMNIST's official val split).
Adapters receive `ExperimentData` and never re-derive any of it.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from ftmed_core.errors import DataError
from ftmed_core.medmnist_info import DatasetInfo, dataset_info, npz_filename

DATA_DIR_ENV = "FTMED_DATA_DIR"
SPLITS = ("train", "val", "test")
SYNTHETIC_KEY = "ftmed_synthetic"  # extra key in files made by `ftmed data synth`; medmnist ignores it


def default_data_dir() -> Path:
    """$FTMED_DATA_DIR, else medmnist's default root (~/.medmnist)."""
    env = os.environ.get(DATA_DIR_ENV)
    return Path(env).expanduser() if env else Path("~/.medmnist").expanduser()


def data_path(dataset: str, size: int, data_dir: str | os.PathLike | None = None) -> Path:
    root = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    return root / npz_filename(dataset, size)


def file_md5(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def manual_download_hint(info: DatasetInfo, size: int, path: Path) -> str:
    return (
        f"download {info.urls[size]} by hand (MD5 {info.md5s[size]}) and place it at {path}; "
        f"or work offline on synthetic data: `ftmed data synth --out DIR` then `--data-dir DIR`"
    )


def download(
    dataset: str,
    size: int,
    data_dir: str | os.PathLike | None = None,
    progress: Callable[[int, int | None], None] | None = None,
    timeout: float = 30.0,
) -> Path:
    """Fetch `{dataset}[_size].npz` from MedMNIST's Zenodo record into `data_dir`, checking its MD5.

    URL and MD5 come from medmnist's INFO. We stream with urllib rather than medmnist's own
    `Dataset.download()`, which goes through torchvision (and so torch) and swallows the reason of a
    failure; the file written is the same. The download goes to `*.part` and is renamed only once its MD5
    matches, so an interrupted download never looks like a dataset.
    """
    info = dataset_info(dataset)
    if size not in info.urls:
        raise DataError(f"{dataset} has no size {size}; available: {', '.join(map(str, info.urls))}")
    path = data_path(dataset, size, data_dir)
    url, expected = info.urls[size], info.md5s[size]
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"cannot create data directory {path.parent}: {exc.strerror or exc}") from None
    part = path.with_name(path.name + ".part")
    digest = hashlib.md5(usedforsecurity=False)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(part, "wb") as out:
            total = response.headers.get("Content-Length")
            total = int(total) if total else None
            done = 0
            while block := response.read(1 << 20):
                out.write(block)
                digest.update(block)
                done += len(block)
                if progress:
                    progress(done, total)
    except Exception as exc:  # offline, DNS, HTTP error, full disk: all end the same way for the user
        part.unlink(missing_ok=True)
        reason = getattr(exc, "reason", None) or exc
        raise DataError(
            f"could not download {path.name} ({reason}); {manual_download_hint(info, size, path)}"
        ) from None
    if digest.hexdigest() != expected:
        part.unlink(missing_ok=True)
        raise DataError(
            f"downloaded {path.name} has MD5 {digest.hexdigest()}, expected {expected}; "
            f"{manual_download_hint(info, size, path)}"
        )
    os.replace(part, path)
    return path


def ensure_data(
    dataset: str,
    size: int,
    data_dir: str | os.PathLike | None = None,
    allow_download: bool = True,
    progress: Callable[[int, int | None], None] | None = None,
) -> Path:
    """The path of the dataset file, downloading it first when it is missing (and allowed)."""
    info = dataset_info(dataset)
    if size not in info.urls:
        raise DataError(f"{dataset} has no size {size}; available: {', '.join(map(str, info.urls))}")
    path = data_path(dataset, size, data_dir)
    if path.is_file():
        return path
    if not allow_download:
        raise DataError(f"{path} does not exist; {manual_download_hint(info, size, path)}")
    return download(dataset, size, data_dir, progress=progress)


@dataclass(frozen=True)
class RawDataset:
    """The six arrays of a MedMNIST file, validated, plus where they came from."""

    info: DatasetInfo
    size: int
    images: dict  # split -> uint8 (N, H, W) or (N, H, W, C)
    labels: dict  # split -> int64 (N,)
    path: Path
    md5: str
    synthetic: dict | None  # the synthetic generator's parameters, None for real data

    @property
    def md5_verified(self) -> bool:
        return self.md5 == self.info.md5s.get(self.size)


def load_npz(path: str | os.PathLike, dataset: str, size: int) -> RawDataset:
    """Read and validate a MedMNIST-format file: keys, dtypes, shapes, label range, lengths."""
    path = Path(path)
    info = dataset_info(dataset)
    if not path.is_file():
        raise DataError(f"{path} does not exist; {manual_download_hint(info, size, path)}")
    images, labels = {}, {}
    try:
        with np.load(path, allow_pickle=False) as npz:
            keys = set(npz.files)
            missing = [f"{s}_{k}" for s in SPLITS for k in ("images", "labels") if f"{s}_{k}" not in keys]
            if missing:
                raise DataError(f"{path} is not a MedMNIST file: missing key(s) {', '.join(missing)}")
            for split in SPLITS:
                images[split] = npz[f"{split}_images"]
                labels[split] = npz[f"{split}_labels"]
            synthetic = json.loads(str(npz[SYNTHETIC_KEY])) if SYNTHETIC_KEY in keys else None
    except DataError:
        raise
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError) as exc:
        raise DataError(f"{path} is truncated or corrupt ({type(exc).__name__}: {exc}); "
                        f"delete it and download it again") from None

    expected_tail = (size, size) if info.n_channels == 1 else (size, size, info.n_channels)
    for split in SPLITS:
        img, lab = images[split], labels[split]
        if img.dtype != np.uint8:
            raise DataError(f"{path}: {split}_images must be uint8, got {img.dtype}")
        if img.ndim < 1 or tuple(img.shape[1:]) != expected_tail:
            raise DataError(
                f"{path}: {split}_images has shape {img.shape}, expected (N, {', '.join(map(str, expected_tail))}) "
                f"for {dataset} at size {size}"
            )
        if lab.ndim == 2 and lab.shape[1] == 1:
            lab = lab[:, 0]
        if lab.ndim != 1 or not np.issubdtype(lab.dtype, np.integer):
            raise DataError(
                f"{path}: {split}_labels must be integers shaped (N, 1) or (N,), got {lab.dtype} {lab.shape}"
            )
        if len(lab) != len(img):
            raise DataError(f"{path}: {split} has {len(img)} images but {len(lab)} labels")
        if len(img) == 0:
            raise DataError(f"{path}: the {split} split is empty")
        low, high = int(lab.min()), int(lab.max())
        if low < 0 or high >= info.n_classes:
            raise DataError(
                f"{path}: {split}_labels range over [{low}, {high}], but {dataset} has classes 0..{info.n_classes - 1}"
            )
        labels[split] = lab.astype(np.int64)
    return RawDataset(info, size, images, labels, path, file_md5(path), synthetic)


def preprocess_images(images: np.ndarray) -> np.ndarray:
    """uint8 (N, ...) -> float32 (N, D): pixels / 255, flattened, exactly as the study (`astype/255`)."""
    flat = images.reshape(len(images), -1)
    out = np.empty(flat.shape, dtype=np.float32)
    # float32 division by 255 (not multiplication by 1/255, which rounds differently) as in the study.
    np.divide(flat, np.float32(255.0), out=out, dtype=np.float32)
    return out


def one_hot(labels: np.ndarray, n_classes: int) -> np.ndarray:
    out = np.zeros((len(labels), n_classes), dtype=np.float32)
    out[np.arange(len(labels)), labels] = 1.0
    return out


def holdout_split_at(n_rows: int, val_fraction: float) -> int:
    """Keras `validation_split`: train on rows [0, split_at), validate on [split_at, N), before shuffling."""
    split_at = int(math.floor(n_rows * (1.0 - val_fraction)))
    if split_at == 0 or split_at == n_rows:
        raise DataError(f"{n_rows} training rows cannot be split with validation fraction {val_fraction}")
    return split_at


@dataclass(frozen=True)
class ExperimentData:
    """Preprocessed arrays for one experiment: what both frameworks train, validate and test on."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    n_classes: int
    class_names: tuple[str, ...]
    dataset: str
    size: int
    val_mode: str
    # Row indices into the file's train split (holdout) or its val split (official).
    train_rows: np.ndarray = field(repr=False)
    val_rows: np.ndarray = field(repr=False)
    source: dict = field(default_factory=dict)  # path, md5, md5_verified, synthetic

    @property
    def input_dim(self) -> int:
        return int(self.x_train.shape[1])

    @property
    def synthetic(self) -> bool:
        return bool(self.source.get("synthetic"))

    @property
    def label(self) -> str:
        """How to name this data in a title: never passes synthetic data off as the real dataset."""
        name = f"{self.dataset}" + ("" if self.size == 28 else f"_{self.size}")
        return f"SYNTHETIC {name}-shaped data" if self.synthetic else name


def prepare(raw: RawDataset, val_mode: str, val_fraction: float) -> ExperimentData:
    full_train = preprocess_images(raw.images["train"])
    y_full = raw.labels["train"]
    if val_mode == "holdout":
        split_at = holdout_split_at(len(full_train), val_fraction)
        train_rows = np.arange(split_at)
        val_rows = np.arange(split_at, len(full_train))
        x_train, y_train = full_train[:split_at], y_full[:split_at]
        x_val, y_val = full_train[split_at:], y_full[split_at:]
    elif val_mode == "official":
        train_rows = np.arange(len(full_train))
        val_rows = np.arange(len(raw.labels["val"]))
        x_train, y_train = full_train, y_full
        x_val, y_val = preprocess_images(raw.images["val"]), raw.labels["val"]
    else:
        raise DataError(f"unknown validation mode {val_mode!r}; choose one of: holdout, official")
    return ExperimentData(
        x_train=x_train, y_train=y_train, x_val=x_val, y_val=y_val,
        x_test=preprocess_images(raw.images["test"]), y_test=raw.labels["test"],
        n_classes=raw.info.n_classes, class_names=raw.info.class_names,
        dataset=raw.info.name, size=raw.size, val_mode=val_mode,
        train_rows=train_rows, val_rows=val_rows,
        source={
            "path": str(raw.path),
            "md5": raw.md5,
            "expected_md5": raw.info.md5s.get(raw.size),
            "md5_verified": raw.md5_verified,
            "synthetic": raw.synthetic,
        },
    )


def load_experiment_data(config, allow_download: bool = True, progress=None) -> ExperimentData:
    """Locate (downloading if needed), validate and preprocess the data a config asks for."""
    path = ensure_data(config.dataset, config.size, config.data_dir, allow_download, progress)
    raw = load_npz(path, config.dataset, config.size)
    return prepare(raw, config.val_mode, config.val_fraction)
