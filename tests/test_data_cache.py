"""The memory-bounded data path: the `.npy` cache, per-batch conversion, lying headers, synth sizes, CLI lines."""

from __future__ import annotations

import hashlib
import os
import pickle
import zipfile

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import tiny_arrays, write_npz
from ftmed_core import data as data_mod
from ftmed_core import npy_cache
from ftmed_core.data import Split, data_path, download, load_npz, preprocess_images, prepare
from ftmed_core.errors import DataError
from ftmed_core.medmnist_info import dataset_info
from ftmed_core.synth import write_synthetic


def cache_dirs(npz):
    root = npz.parent / (npz.name + npy_cache.CACHE_SUFFIX)
    return sorted(p.name for p in root.iterdir()) if root.is_dir() else []


def test_images_are_memory_mapped_from_a_cache_keyed_by_md5(tmp_path):
    arrays = tiny_arrays()
    path = write_npz(tmp_path / "pathmnist.npz", **arrays)
    raw = load_npz(path, "pathmnist", 28)
    md5 = hashlib.md5(path.read_bytes()).hexdigest()
    assert cache_dirs(path) == [md5] and raw.md5 == md5
    for split in ("train", "val", "test"):
        assert isinstance(raw.images[split], np.memmap) and not raw.images[split].flags.writeable
        np.testing.assert_array_equal(raw.images[split], arrays[f"{split}_images"])
        np.testing.assert_array_equal(raw.labels[split], arrays[f"{split}_labels"][:, 0])
    stamp = (path.parent / (path.name + npy_cache.CACHE_SUFFIX) / md5 / "train_images.npy").stat().st_mtime_ns
    load_npz(path, "pathmnist", 28)  # reused, not rewritten
    assert (path.parent / (path.name + npy_cache.CACHE_SUFFIX) / md5 / "train_images.npy").stat().st_mtime_ns == stamp


def test_cache_is_rebuilt_when_the_file_changes(tmp_path):
    path = write_synthetic(tmp_path, "pathmnist", 28, scale=0.002, seed=0)
    first = load_npz(path, "pathmnist", 28)
    old_images = np.array(first.images["train"])
    write_synthetic(tmp_path, "pathmnist", 28, scale=0.002, seed=1, overwrite=True)
    second = load_npz(path, "pathmnist", 28)
    assert second.md5 != first.md5 and cache_dirs(path) == [second.md5]  # the old version's cache is gone
    assert not np.array_equal(np.array(second.images["train"]), old_images)
    np.testing.assert_array_equal(second.images["train"], np.load(path)["train_images"])


def test_a_failed_build_leaves_no_cache_and_the_next_load_builds_it(tmp_path, monkeypatch):
    path = write_npz(tmp_path / "pathmnist.npz", **tiny_arrays())
    real_fsync, calls = os.fsync, []

    def failing_fsync(fd):  # the disk fills up after the second array is written
        calls.append(fd)
        if len(calls) == 3:
            raise OSError(28, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(npy_cache.os, "fsync", failing_fsync)
    with pytest.raises(DataError, match="cannot unpack pathmnist.npz .*No space left"):
        load_npz(path, "pathmnist", 28)
    assert cache_dirs(path) == []  # neither a half-written cache nor its tmp folder
    monkeypatch.setattr(npy_cache.os, "fsync", real_fsync)
    raw = load_npz(path, "pathmnist", 28)
    assert cache_dirs(path) == [raw.md5]


def test_a_killed_builds_leftovers_and_a_damaged_cache_are_cleaned_up(tmp_path):
    path = write_npz(tmp_path / "pathmnist.npz", **tiny_arrays())
    raw = load_npz(path, "pathmnist", 28)
    root = path.parent / (path.name + npy_cache.CACHE_SUFFIX)
    dead = root / f"{raw.md5}.tmp-999999999-0"  # a build whose process is gone
    dead.mkdir()
    (dead / "train_images.npy").write_bytes(b"partial")
    damaged = root / raw.md5 / "train_images.npy"
    damaged.write_bytes(damaged.read_bytes()[:-10])  # truncated after it was built
    again = load_npz(path, "pathmnist", 28)
    np.testing.assert_array_equal(again.images["train"], tiny_arrays()["train_images"])
    assert cache_dirs(path) == [raw.md5]


def test_a_read_only_data_folder_caches_in_the_user_cache_dir(tmp_path, monkeypatch):
    path = write_npz(tmp_path / "ro" / "pathmnist.npz", **tiny_arrays())
    monkeypatch.setenv(npy_cache.CACHE_DIR_ENV, str(tmp_path / "user-cache"))
    monkeypatch.setattr(npy_cache.os, "access", lambda p, mode: not str(p).startswith(str(tmp_path / "ro")))
    raw = load_npz(path, "pathmnist", 28)
    assert raw.cache == tmp_path / "user-cache" / "pathmnist.npz.npy-cache" / raw.md5
    assert not (tmp_path / "ro" / "pathmnist.npz.npy-cache").exists()


def lying_npz(path, shape=(10**12, 28, 28, 3)):
    arrays = tiny_arrays()
    with zipfile.ZipFile(path, "w") as archive:
        for key, value in arrays.items():
            with archive.open(f"{key}.npy", "w") as member:
                if key == "train_images":  # the header claims terabytes, the body holds the real 60 rows
                    header = {"descr": "|u1", "fortran_order": False, "shape": shape}
                    np.lib.format.write_array_header_1_0(member, header)
                    member.write(value.tobytes())
                else:
                    np.lib.format.write_array(member, value)
    return path


def test_a_lying_array_header_is_one_clear_error_before_any_allocation(tmp_path):
    path = lying_npz(tmp_path / "pathmnist.npz")
    with pytest.raises(DataError, match=r"train_images declares shape \(1000000000000, 28, 28, 3\) uint8 "
                                        r"\(2\.4 PB\) but the file holds 141\.1 KB"):
        load_npz(path, "pathmnist", 28)
    assert cache_dirs(path) == []


def test_cli_data_info_lines_for_a_lying_header_and_a_bad_size(tmp_path):
    from cli.main import app

    lying_npz(tmp_path / "pathmnist.npz")
    runner = CliRunner()
    result = runner.invoke(app, ["data", "info", "--data-dir", str(tmp_path)])
    assert result.exit_code != 0 and "declares shape" in result.output and "Traceback" not in result.output
    assert len(result.stderr.strip().splitlines()) == 1
    result = runner.invoke(app, ["data", "info", "--size", "999"])
    assert result.exit_code != 0 and "no size 999" in result.stderr and "Traceback" not in result.output
    assert len(result.stderr.strip().splitlines()) == 1


def test_batch_conversion_is_bitwise_the_whole_array_conversion_in_any_order():
    images = np.random.default_rng(0).integers(0, 256, size=(50, 4, 4, 3), dtype=np.uint8)
    split = Split(images, np.arange(50))
    whole = preprocess_images(images)
    rows = np.random.default_rng(1).permutation(50)[:17]
    assert split.rows(rows).tobytes() == whole[rows].tobytes()  # the asked order, bitwise
    assert split.rows(slice(10, 30)).tobytes() == whole[10:30].tobytes()
    got = np.concatenate([x for x, _ in split.batches(8, rows)])
    assert got.tobytes() == whole[rows].tobytes()
    assert np.array_equal(np.concatenate([y for _, y in split.batches(8, rows)]), rows)
    every_value = np.arange(256, dtype=np.uint8).reshape(256, 1)
    assert Split(every_value, np.zeros(256, int)).rows(slice(None)).tobytes() == \
        (every_value.astype(np.float32) / np.float32(255)).tobytes()  # the study's `astype(float32) / 255`


def test_holdout_splits_are_views_and_pickle_as_a_path_not_the_pixels(tmp_path):
    path = write_synthetic(tmp_path, "pathmnist", 28, scale=0.01, seed=0)
    data = prepare(load_npz(path, "pathmnist", 28), "holdout", 0.2)
    # Both are row ranges of the one mapped train array: nothing copied.
    assert isinstance(data.val.images, np.memmap) and data.val.images.filename == data.train.images.filename
    assert len(data.train) + len(data.val) == len(np.load(path)["train_labels"])
    blob = pickle.dumps(data.val)
    assert len(blob) < 4000 + 8 * len(data.val)  # the labels, not 2,352 bytes of pixels per row
    back = pickle.loads(blob)
    np.testing.assert_array_equal(back.images, data.val.images)
    np.testing.assert_array_equal(back.labels, data.val.labels)


@pytest.mark.parametrize("size", [64, 128, 224])
def test_synth_writes_medmnist_plus_shaped_files(tmp_path, size):
    from cli.main import app

    result = CliRunner().invoke(app, ["data", "synth", "--out", str(tmp_path), "--size", str(size),
                                      "--scale", "0.0005", "--seed", "2"])
    assert result.exit_code == 0, result.output
    path = data_path("pathmnist", size, tmp_path)
    with np.load(path) as npz:  # what medmnist itself reads
        assert npz["train_images"].shape == (45, size, size, 3) and npz["train_images"].dtype == np.uint8
        assert npz["test_labels"].shape == (9, 1)
    raw = load_npz(path, "pathmnist", size)
    assert raw.synthetic["size"] == size


def test_streamed_synth_is_bounded_by_chunks():
    from ftmed_core.synth import _chunk_rows

    assert _chunk_rows((28, 28, 3)) == 8192  # the chunking small files were always generated with
    assert _chunk_rows((224, 224, 3)) * 224 * 224 * 3 * 4 <= 1 << 27


def test_download_is_fsynced_before_it_is_renamed(tmp_path, monkeypatch):
    source = write_npz(tmp_path / "src" / "payload.npz", **tiny_arrays())
    md5 = hashlib.md5(source.read_bytes()).hexdigest()
    info = dataset_info("pathmnist")
    good = type(info)(**{**info.__dict__, "urls": {28: source.as_uri()}, "md5s": {28: md5}})
    monkeypatch.setattr(data_mod, "dataset_info", lambda name: good)
    events, real_fsync, real_replace = [], os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace_(src, dst):
        events.append(("replace", str(src)))
        real_replace(src, dst)

    monkeypatch.setattr(data_mod.os, "fsync", fsync)
    monkeypatch.setattr(data_mod.os, "replace", replace_)
    download("pathmnist", 28, tmp_path / "root")
    part = str(tmp_path / "root" / "pathmnist.npz.part")
    assert events.index(("fsync", part)) < events.index(("replace", part))
