"""MedMNIST `.npz` files: where they live, downloading, validating, preprocessing, and the train/val split.

The core decides the data protocol once for both frameworks: pixels / 255 as float32, flattened; integer
labels; the validation rows (Keras `validation_split` semantics or MedMNIST's official val split).
Adapters receive `ExperimentData` and never re-derive any of it.

Memory: a file is unpacked once into memory-mappable `.npy` files (`ftmed_core.npy_cache`); splits are
views of those maps (`Split`), and pixels become float32 one batch at a time (`Split.rows`), bitwise
equal to converting the whole array, so peak memory does not grow with the images.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
import urllib.request
import zipfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np

from ftmed_core.errors import DataError
from ftmed_core.npy_cache import fsync_dir
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


def check_not_a_directory(path: Path) -> None:
    """DataError when a directory (or anything else that is not a file) stands where the data file belongs."""
    if path.is_dir():
        raise DataError(f"{path} is a directory, not a MedMNIST .npz file; move it away (then ftmed data download "
                        f"or ftmed data synth), or pass --data-dir the folder that holds the file")
    if path.exists() and not path.is_file():
        raise DataError(f"{path} is not a regular file; remove it or pass --data-dir another folder")


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


@dataclass(frozen=True)
class RawDataset:
    """The six arrays of a MedMNIST file, validated, plus where they came from.

    Images are read-only memory maps of the file's `.npy` cache (`ftmed_core.npy_cache`): nothing is read
    until used. Labels are small and held in memory as int64 (N,).
    """

    info: DatasetInfo
    size: int
    images: dict  # split -> uint8 (N, H, W) or (N, H, W, C), memory-mapped
    labels: dict  # split -> int64 (N,)
    path: Path
    md5: str
    synthetic: dict | None  # the synthetic generator's parameters, None for real data
    cache: Path | None = None  # the folder of `.npy` files the images are mapped from

    @property
    def md5_verified(self) -> bool:
        return self.md5 == self.info.md5s.get(self.size)


def load_npz(path: str | os.PathLike, dataset: str, size: int, hash_memo: bool = True) -> RawDataset:
    """Validate a MedMNIST-format file (keys, dtypes, shapes, label range, lengths) and map its images.

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
    return RawDataset(info, size, images, labels, path, md5, synthetic, cache=folder)


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
    hand-made data, float32 (N, D) already preprocessed and used as is. `labels` int64 (N,).
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
        """(x float32 (m, D), y int64 (m,)) per batch: consecutive slices of `order` (file order if None)
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
