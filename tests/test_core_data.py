"""The data layer: MedMNIST format compatibility, validation errors, preprocessing, splits, download."""

from __future__ import annotations

import hashlib
import zipfile

import numpy as np
import pytest

from conftest import tiny_arrays, write_npz
from ftmed_core import data as data_mod
from ftmed_core.data import (
    data_path,
    download,
    ensure_data,
    holdout_split_at,
    load_npz,
    one_hot,
    prepare,
    preprocess_images,
)
from ftmed_core.errors import DataError
from ftmed_core.medmnist_info import dataset_info, dataset_names
from ftmed_core.synth import make_synthetic, write_synthetic


def test_pathmnist_metadata_comes_from_medmnist():
    info = dataset_info("pathmnist")
    assert info.n_classes == 9 and info.n_channels == 3
    assert info.n_samples == {"train": 89996, "val": 10004, "test": 7180}
    assert info.md5s[28] == "a8b06965200029087d5bd730944a56c1"
    assert "zenodo" in info.urls[28]
    assert "pathmnist" in dataset_names() and "chestmnist" in dataset_names()  # every 2D task trains


def test_generated_file_loads_through_ftmed_and_medmnist(tmp_path):
    import medmnist

    write_synthetic(tmp_path, "pathmnist", 28, scale=0.01, seed=3)
    raw = load_npz(data_path("pathmnist", 28, tmp_path), "pathmnist", 28)
    for split in ("train", "val", "test"):
        ds = medmnist.PathMNIST(split=split, root=str(tmp_path))
        np.testing.assert_array_equal(ds.imgs, raw.images[split])
        np.testing.assert_array_equal(ds.labels[:, 0], raw.labels[split])
        image, target = ds.imgs[0], ds.labels[0]
        assert image.shape == (28, 28, 3) and target.shape == (1,)
    assert raw.synthetic["generator"] == "ftmed.synth"
    assert not raw.md5_verified


def test_grayscale_dataset_shapes(tmp_path):
    arrays = tiny_arrays(channels=1, n_classes=2)
    write_npz(tmp_path / "pneumoniamnist.npz", **arrays)
    raw = load_npz(tmp_path / "pneumoniamnist.npz", "pneumoniamnist", 28)
    data = prepare(raw, "official", 0.2)
    assert data.input_dim == 784 and data.n_classes == 2


def test_input_width_follows_size(tmp_path):
    write_npz(tmp_path / "pathmnist_64.npz", **tiny_arrays(size=64, n_train=10, n_val=5, n_test=5))
    data = prepare(load_npz(tmp_path / "pathmnist_64.npz", "pathmnist", 64), "holdout", 0.2)
    assert data.input_dim == 64 * 64 * 3


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda a: a.pop("test_labels"), "missing key(s) test_labels"),
        (lambda a: a.__setitem__("train_images", a["train_images"].astype(np.float32)), "must be uint8"),
        (lambda a: a.__setitem__("train_images", a["train_images"][:, :, :, :1]), "expected (N, 28, 28, 3)"),
        (lambda a: a.__setitem__("val_labels", a["val_labels"] + 9), "but pathmnist has classes 0..8"),
        (lambda a: a.__setitem__("test_labels", a["test_labels"][:-1]), "30 images but 29 labels"),
        (lambda a: a.__setitem__("train_labels", a["train_labels"].astype(np.float32)), "must be integers"),
        (lambda a: a.update(val_images=a["val_images"][:0], val_labels=a["val_labels"][:0]),
         "the val split is empty"),
    ],
)
def test_bad_files_get_clear_errors(tmp_path, mutate, message):
    arrays = tiny_arrays()
    mutate(arrays)
    path = write_npz(tmp_path / "pathmnist.npz", **arrays)
    with pytest.raises(DataError) as info:
        load_npz(path, "pathmnist", 28)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_truncated_and_garbage_files(tmp_path):
    path = write_npz(tmp_path / "pathmnist.npz", **tiny_arrays())
    blob = path.read_bytes()
    path.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(DataError, match="truncated or corrupt"):
        load_npz(path, "pathmnist", 28)
    path.write_bytes(b"not a zip file at all")
    with pytest.raises(DataError, match="truncated or corrupt"):
        load_npz(path, "pathmnist", 28)


def test_missing_file_without_download_names_path_url_and_md5(tmp_path):
    with pytest.raises(DataError) as info:
        ensure_data("pathmnist", 28, tmp_path, allow_download=False)
    text = str(info.value)
    assert str(tmp_path / "pathmnist.npz") in text and "a8b06965200029087d5bd730944a56c1" in text
    assert "zenodo" in text and "ftmed data synth" in text


def test_download_checks_md5_and_never_leaves_a_partial_file(tmp_path, monkeypatch):
    source = write_npz(tmp_path / "src" / "payload.npz", **tiny_arrays())
    md5 = hashlib.md5(source.read_bytes()).hexdigest()
    info = dataset_info("pathmnist")
    good = type(info)(**{**info.__dict__, "urls": {28: source.as_uri()}, "md5s": {28: md5}})
    monkeypatch.setattr(data_mod, "dataset_info", lambda name: good)
    seen = []
    path = download("pathmnist", 28, tmp_path / "root", progress=lambda d, t: seen.append((d, t)))
    assert path.read_bytes() == source.read_bytes() and seen[-1][0] == source.stat().st_size

    bad = type(info)(**{**info.__dict__, "urls": {28: source.as_uri()}, "md5s": {28: "0" * 32}})
    monkeypatch.setattr(data_mod, "dataset_info", lambda name: bad)
    with pytest.raises(DataError, match="expected 0000"):
        download("pathmnist", 28, tmp_path / "other")
    assert not any((tmp_path / "other").iterdir())

    offline = type(info)(**{**info.__dict__, "urls": {28: "http://127.0.0.1:9/none.npz"}})
    monkeypatch.setattr(data_mod, "dataset_info", lambda name: offline)
    with pytest.raises(DataError, match="could not download pathmnist.npz"):
        download("pathmnist", 28, tmp_path / "third", timeout=2)


def test_preprocessing_matches_the_study():
    images = np.random.default_rng(0).integers(0, 256, size=(5, 28, 28, 3), dtype=np.uint8)
    x = preprocess_images(images)
    study = images.astype("float32") / 255  # the study's own line
    assert x.dtype == np.float32 and x.shape == (5, 2352)
    np.testing.assert_array_equal(x, study.reshape(5, -1))
    y = one_hot(np.array([0, 8, 3]), 9)
    assert y.shape == (3, 9) and y.sum() == 3 and y[1, 8] == 1


def test_holdout_split_matches_keras_validation_split():
    assert holdout_split_at(89996, 0.2) == 71996
    for n in (10, 11, 99, 1000, 1001):
        from keras.src.trainers.data_adapters.array_slicing import train_validation_split

        x = np.arange(n)
        (train,), (val,) = train_validation_split((x,), validation_split=0.2)
        split_at = holdout_split_at(n, 0.2)
        np.testing.assert_array_equal(np.asarray(train), x[:split_at])
        np.testing.assert_array_equal(np.asarray(val), x[split_at:])
    with pytest.raises(DataError):
        holdout_split_at(1, 0.2)


def test_holdout_and_official_modes(tmp_path):
    path = write_npz(tmp_path / "pathmnist.npz", **tiny_arrays(n_train=101, n_val=13))
    raw = load_npz(path, "pathmnist", 28)
    hold = prepare(raw, "holdout", 0.2)
    assert len(hold.y_train) == 80 and len(hold.y_val) == 21
    np.testing.assert_array_equal(hold.val_rows, np.arange(80, 101))
    np.testing.assert_array_equal(hold.x_val, preprocess_images(raw.images["train"][80:]))
    official = prepare(raw, "official", 0.2)
    assert len(official.y_train) == 101 and len(official.y_val) == 13


def test_synthetic_data_is_labelled_and_shaped_like_pathmnist():
    arrays = make_synthetic("pathmnist", 28, scale=0.01, seed=0)
    assert arrays["train_images"].shape == (900, 28, 28, 3) and arrays["train_images"].dtype == np.uint8
    assert arrays["train_labels"].shape == (900, 1) and arrays["train_labels"].max() <= 8
    assert "ftmed_synthetic" in arrays
    again = make_synthetic("pathmnist", 28, scale=0.01, seed=0)
    np.testing.assert_array_equal(arrays["test_images"], again["test_images"])


def test_synthetic_labels_are_learnable_but_not_trivial():
    """A nearest-class-mean classifier (no training framework needed) is well above chance, well below 100%."""
    arrays = make_synthetic("pathmnist", 28, scale=0.05, seed=0)
    x = preprocess_images(arrays["train_images"])
    y = arrays["train_labels"][:, 0]
    means = np.stack([x[y == c].mean(axis=0) for c in range(9)])
    xt = preprocess_images(arrays["test_images"])
    pred = np.argmin(((xt[:, None, :] - means[None]) ** 2).sum(-1), axis=1)
    acc = np.mean(pred == arrays["test_labels"][:, 0])
    assert 0.3 < acc < 0.95


def test_write_synthetic_refuses_to_overwrite(tmp_path):
    write_synthetic(tmp_path, scale=0.005)
    with pytest.raises(DataError, match="already exists"):
        write_synthetic(tmp_path, scale=0.005)
