"""MedMNIST `.npz` files: where they live, downloading, preprocessing, and the train/val split.

Reading and validating one file (its MD5, keys, shapes, labels) is `ftmed_core.datafile`, re-exported here.
The core decides the data protocol once for both frameworks: pixels / 255 as float32, flattened; integer
labels ((N,) class indices, or (N, L) 0/1 bits for multi-label ChestMNIST); the validation rows (Keras
`validation_split` semantics or MedMNIST's official val split).
Adapters receive `ExperimentData` and never re-derive any of it.

Memory: a file is unpacked once into memory-mappable `.npy` files (`ftmed_core.npy_cache`); splits are
views of those maps (`Split`), and pixels become float32 one batch at a time (`Split.rows`), bitwise
equal to converting the whole array, so peak memory does not grow with the images.
"""

from __future__ import annotations

import hashlib
import math
import os
import urllib.request
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np

from ftmed_core.datafile import (  # noqa: F401  (re-exported: callers import them from here)
    HASH_MEMO,
    SPLITS,
    SYNTHETIC_KEY,
    RawDataset,
    check_not_a_directory,
    checked_labels,
    file_md5,
    load_npz,
    manual_download_hint,
    memo_md5,
)
from ftmed_core.errors import DataError
from ftmed_core.npy_cache import fsync_dir
from ftmed_core.medmnist_info import dataset_info, npz_filename

DATA_DIR_ENV = "FTMED_DATA_DIR"


def default_data_dir() -> Path:
    """$FTMED_DATA_DIR, else medmnist's default root (~/.medmnist)."""
    env = os.environ.get(DATA_DIR_ENV)
    return Path(env).expanduser() if env else Path("~/.medmnist").expanduser()


def data_path(dataset: str, size: int, data_dir: str | os.PathLike | None = None) -> Path:
    root = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    return root / npz_filename(dataset, size)


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
            out.flush()
            os.fsync(out.fileno())  # on disk before the rename makes it look like a dataset
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
    fsync_dir(path.parent)
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
    check_not_a_directory(path)
    if not allow_download:
        raise DataError(f"{path} does not exist; {manual_download_hint(info, size, path)}")
    return download(dataset, size, data_dir, progress=progress)


def preprocess_images(images: np.ndarray) -> np.ndarray:
    """uint8 (N, ...) -> float32 (N, D): pixels / 255, flattened, exactly as the study (`astype/255`).

    Element-wise, so converting any subset of rows gives bitwise the values of converting the whole array.
    """
    images = np.asarray(images)
    flat = images.reshape(len(images), int(np.prod(images.shape[1:], dtype=np.int64)))
    out = np.empty(flat.shape, dtype=np.float32)
    # float32 division by 255 (not multiplication by 1/255, which rounds differently) as in the study.
    np.divide(flat, np.float32(255.0), out=out, dtype=np.float32)
    return out


def _reopen_split(path: str, start: int, stop: int, labels: np.ndarray) -> "Split":
    images = np.load(path, mmap_mode="r", allow_pickle=False)[start:stop]
    return Split(images, labels, origin=(path, start, stop))


@dataclass(frozen=True, eq=False)
class Split:
    """One split's rows as stored, converted to the study's float32 only a batch at a time.

    `images` is uint8 (N, H, W[, C]) — usually a read-only memory map of the cache, or a view of one
    (the holdout split is two row ranges of the file's train split, no copy) — or, for references and
    hand-made data, float32 (N, D) already preprocessed and used as is. `labels` int64 (N,), or (N, L) label bits.
    `origin` = (`.npy` path, first row, end row) lets a pickled Split (a spawned DDP worker) map the same
    file again instead of carrying the pixels.
    """

    images: np.ndarray
    labels: np.ndarray
    origin: tuple | None = None

    def __post_init__(self):
        if self.images.dtype not in (np.uint8, np.float32):
            raise DataError(f"split images must be uint8 pixels or float32 features, got {self.images.dtype}")
        if self.images.dtype == np.float32 and self.images.ndim != 2:
            raise DataError(f"float32 split images must be (N, D), got shape {self.images.shape}")
        if len(self.images) != len(self.labels):
            raise DataError(f"split has {len(self.images)} images but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.labels)

    def __reduce__(self):
        if self.origin is not None:
            return _reopen_split, (*self.origin, self.labels)
        return Split, (np.asarray(self.images), self.labels)

    @property
    def input_dim(self) -> int:
        return int(np.prod(self.images.shape[1:], dtype=np.int64))

    @property
    def stored_dtype(self) -> np.dtype:
        return self.images.dtype

    def raw_rows(self, rows: slice | np.ndarray) -> np.ndarray:
        """Rows as stored, flattened to (m, D), in their own writable memory, in the order of `rows`.

        An index array is read in ascending order (one forward pass over the mapped file) and put back in
        the asked order.
        """
        if isinstance(rows, slice):
            return np.array(self.images[rows]).reshape(-1, self.input_dim)
        rows = np.asarray(rows, dtype=np.int64)
        ascending = np.argsort(rows, kind="stable")
        gathered = np.asarray(self.images[rows[ascending]]).reshape(len(rows), self.input_dim)
        out = np.empty_like(gathered)
        out[ascending] = gathered
        return out

    def rows(self, rows: slice | np.ndarray) -> np.ndarray:
        """Rows as the study's float32 (m, D): pixels / 255 (bitwise what whole-array preprocessing gives)."""
        raw = self.raw_rows(rows)
        return raw if raw.dtype == np.float32 else preprocess_images(raw)

    def batches(self, batch_size: int, order: np.ndarray | None = None):
        """(x float32 (m, D), y int64 (m,) or (m, L)) per batch: consecutive slices of `order` (file order if None)
        of `batch_size` rows, the last partial batch kept. A plain iterator any framework can wrap."""
        from ftmed_core.protocol import batch_bounds

        for start, stop in batch_bounds(len(self) if order is None else len(order), batch_size):
            rows = slice(start, stop) if order is None else order[start:stop]
            yield self.rows(rows), self.labels[rows]

    def to_float32(self) -> np.ndarray:
        """The whole split as float32 (N, D): N x D x 4 bytes. For small data, tests and references only."""
        return self.rows(slice(None))


EVAL_BATCH_BYTES = 1 << 28  # float32 bytes of one evaluation batch


def eval_batch_rows(input_dim: int, preferred: int) -> int:
    """Rows per evaluation batch: `preferred`, fewer when that many float32 rows would pass
    `EVAL_BATCH_BYTES` (at 224 px a 4,096-row batch is 2.5 GB). At 28 px the preferred sizes stand, so
    evaluation batches, and with them the logits, are those of the in-memory path."""
    return int(max(1, min(preferred, EVAL_BATCH_BYTES // (4 * max(1, input_dim)))))


def one_hot(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Keras's targets, float32 (N, n_classes): class indices (N,) one-hot; multi-label bits (N, L) as they are."""
    labels = np.asarray(labels)
    if labels.ndim == 2:
        if labels.shape[1] != n_classes:
            raise DataError(f"multi-label targets have {labels.shape[1]} labels, the head has {n_classes}")
        return labels.astype(np.float32)
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
    """One experiment's splits: what both frameworks train, validate and test on.

    Each split keeps the images as stored (uint8, memory-mapped) and is converted a batch at a time
    (`Split.rows`); `x_train`/`x_val`/`x_test` materialise a whole split as float32 and exist for small
    data, tests and references only — the training paths never use them.
    """

    train: Split
    val: Split
    test: Split
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
        return self.train.input_dim

    y_train = property(lambda self: self.train.labels)
    y_val = property(lambda self: self.val.labels)
    y_test = property(lambda self: self.test.labels)
    x_train = property(lambda self: self.train.to_float32(), doc="The train split as float32 (whole copy).")
    x_val = property(lambda self: self.val.to_float32(), doc="The val split as float32 (whole copy).")
    x_test = property(lambda self: self.test.to_float32(), doc="The test split as float32 (whole copy).")

    def in_memory(self) -> "ExperimentData":
        """The same experiment with every split preprocessed to float32 in memory (the pre-cache path)."""
        return replace(self, **{name: Split(getattr(self, name).to_float32(), getattr(self, name).labels)
                                for name in ("train", "val", "test")})

    @property
    def synthetic(self) -> bool:
        return bool(self.source.get("synthetic"))

    @property
    def label(self) -> str:
        """How to name this data in a title: never passes synthetic data off as the real dataset."""
        name = f"{self.dataset}" + ("" if self.size == 28 else f"_{self.size}")
        return f"SYNTHETIC {name}-shaped data" if self.synthetic else name


def _split(raw: RawDataset, name: str, start: int | None = None, stop: int | None = None) -> Split:
    images, labels = raw.images[name], raw.labels[name]
    n = len(labels)
    start, stop = start or 0, n if stop is None else stop
    origin = (str(raw.cache / f"{name}_images.npy"), start, stop) if raw.cache is not None else None
    return Split(images[start:stop], labels[start:stop], origin=origin)


def prepare(raw: RawDataset, val_mode: str, val_fraction: float) -> ExperimentData:
    """The experiment's splits as views of the file's arrays (no pixel is copied or converted here)."""
    n_train = len(raw.labels["train"])
    if val_mode == "holdout":
        split_at = holdout_split_at(n_train, val_fraction)
        train_rows = np.arange(split_at)
        val_rows = np.arange(split_at, n_train)
        train, val = _split(raw, "train", 0, split_at), _split(raw, "train", split_at, n_train)
    elif val_mode == "official":
        train_rows = np.arange(n_train)
        val_rows = np.arange(len(raw.labels["val"]))
        train, val = _split(raw, "train"), _split(raw, "val")
    else:
        raise DataError(f"unknown validation mode {val_mode!r}; choose one of: holdout, official")
    return ExperimentData(
        train=train, val=val, test=_split(raw, "test"),
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
