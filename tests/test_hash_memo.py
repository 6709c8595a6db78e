"""The data file's MD5 memo: hashed once per file identity, and a changed file is always re-hashed."""

from __future__ import annotations

import json
import os
import time

import numpy as np

from ftmed_core.data import HASH_MEMO, file_md5, load_npz, memo_md5
from ftmed_core.npy_cache import cache_root
from ftmed_core.synth import write_synthetic

PAST = time.time() - 3600


def _file(tmp_path, payload=b"a" * 4096, when=PAST):
    path = tmp_path / "pathmnist.npz"
    path.write_bytes(payload)
    os.utime(path, (when, when))
    return path


def _memo(path):
    return json.loads((cache_root(path.resolve()) / HASH_MEMO).read_text())


def _poison(path):
    """Replace the memoised MD5 with a sentinel: returning it proves the file was not hashed again."""
    memo_file = cache_root(path.resolve()) / HASH_MEMO
    memo = json.loads(memo_file.read_text())
    memo[str(path.resolve())]["md5"] = "memoised"
    memo_file.write_text(json.dumps(memo))


def test_unchanged_file_is_not_hashed_again(tmp_path):
    path = _file(tmp_path)
    assert memo_md5(path) == file_md5(path)
    entry = _memo(path)[str(path.resolve())]
    stat = path.stat()
    assert (entry["size"], entry["mtime_ns"], entry["inode"]) == (stat.st_size, stat.st_mtime_ns, stat.st_ino)
    _poison(path)
    assert memo_md5(path) == "memoised"


def test_new_mtime_same_size_is_rehashed(tmp_path):
    path = _file(tmp_path)
    memo_md5(path)
    _poison(path)
    os.utime(path, (PAST + 1, PAST + 1))  # same bytes, same size, touched
    assert memo_md5(path) == file_md5(path)


def test_rewritten_content_same_size_is_caught(tmp_path):
    path = _file(tmp_path)
    old = memo_md5(path)
    with open(path, "r+b") as handle:  # edited in place: same inode, same size, new bytes, new mtime
        handle.write(b"b" * 16)
    os.utime(path, (PAST + 5, PAST + 5))
    new = memo_md5(path)
    assert new != old and new == file_md5(path)


def test_replaced_file_with_the_old_mtime_is_caught_by_its_inode(tmp_path):
    path = _file(tmp_path)
    old = memo_md5(path)
    other = tmp_path / "other"
    other.write_bytes(b"c" * 4096)
    os.utime(other, (PAST, PAST))
    os.replace(other, path)  # same size and mtime, a new inode
    assert path.stat().st_mtime_ns == _memo(path)[str(path.resolve())]["mtime_ns"]
    assert memo_md5(path) == file_md5(path) != old


def test_a_file_changed_moments_ago_is_not_memoised(tmp_path):
    path = _file(tmp_path, when=time.time())
    memo_md5(path)
    assert not (cache_root(path.resolve()) / HASH_MEMO).exists()


def test_damaged_memo_is_ignored_and_rewritten(tmp_path):
    path = _file(tmp_path)
    memo_file = cache_root(path.resolve()) / HASH_MEMO
    memo_file.parent.mkdir(parents=True)
    memo_file.write_text("{not json")
    assert memo_md5(path) == file_md5(path)
    assert _memo(path)[str(path.resolve())]["md5"] == file_md5(path)


def test_load_npz_sees_a_regenerated_file_of_the_same_size(tmp_path):
    path = write_synthetic(tmp_path, "breastmnist", 28, scale=0.05, seed=0)
    os.utime(path, (PAST, PAST))
    first = load_npz(path, "breastmnist", 28)
    write_synthetic(tmp_path, "breastmnist", 28, scale=0.05, seed=1, overwrite=True)
    os.utime(path, (PAST, PAST))  # even with the old mtime restored
    second = load_npz(path, "breastmnist", 28)
    assert second.md5 == file_md5(path) != first.md5
    assert second.cache != first.cache
    assert not np.array_equal(np.asarray(first.images["train"]), np.asarray(second.images["train"]))
    # the cache build removed the first cache but kept the memo beside the caches
    assert (cache_root(path) / HASH_MEMO).is_file() and not first.cache.exists()
