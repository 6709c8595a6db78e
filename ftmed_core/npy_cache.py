"""A MedMNIST `.npz` unpacked once into memory-mappable `.npy` files (the cache), keyed by the file's MD5.

A `.npz` is a zip archive: `np.load` reads a member whole, and a member cannot be memory-mapped. So each
member is streamed, in bounded chunks, into its own `.npy` file once; every later load memory-maps those
(`np.load(mmap_mode="r")`), and peak memory no longer grows with the images.

Layout: `<root>/<npz name>.npy-cache/<md5>/<key>.npy` plus `manifest.json` (member names, shapes, file
sizes). `<root>` is the `.npz`'s folder when it is writable, else `$FTMED_CACHE_DIR`, else
`~/.cache/ftmed`. Contracts:
- Never half-written: a cache is built in a private sibling folder (`<md5>.tmp-<pid>-<n>`), every file
  and the folder fsynced, then renamed into place in one step. A reader sees a complete cache or none; a
  build that fails (full disk, kill) leaves at most a tmp folder, removed by the next build once its
  process is gone.
- Keyed by content: the folder is named by the `.npz`'s MD5, so a changed file gets a new cache; the
  caches of earlier versions of that file are removed after a successful build.
- Checked before allocating: each member's declared shape and dtype must account for exactly the bytes
  the archive holds for it (a header claiming terabytes is refused with one line), and exactly that many
  bytes must come out of the stream. A damaged cache (a file of the wrong size) is rebuilt.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import zipfile
from pathlib import Path

import numpy as np

from ftmed_core.errors import DataError

CACHE_DIR_ENV = "FTMED_CACHE_DIR"
CACHE_SUFFIX = ".npy-cache"
MANIFEST = "manifest.json"
CHUNK_BYTES = 1 << 24  # 16 MiB per read/write: bounded memory whatever the member's size
_tmp_counter = itertools.count()


def _human(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if n < 1000 or unit == "PB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n} B"


def user_cache_dir() -> Path:
    env = os.environ.get(CACHE_DIR_ENV)
    return Path(env).expanduser() if env else Path("~/.cache/ftmed").expanduser()


def cache_root(npz: Path) -> Path:
    """Where the caches of `npz` live: next to it when its folder is writable, else the user cache dir."""
    folder = npz.parent
    existing = folder / (npz.name + CACHE_SUFFIX)
    if existing.is_dir() and os.access(existing, os.W_OK | os.X_OK):
        return existing
    if not existing.exists() and os.access(folder, os.W_OK | os.X_OK):
        return existing
    return user_cache_dir() / (npz.name + CACHE_SUFFIX)


def _read_header(stream, name: str, path: Path) -> tuple[tuple, bool, np.dtype, int]:
    """(shape, fortran_order, dtype, header length) of the `.npy` at the start of `stream`."""
    try:
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(stream)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(stream)
        else:
            raise ValueError(f"unsupported .npy format version {version}")
    except ValueError as exc:
        raise DataError(f"{path}: member {name} has no valid array header ({exc}); "
                        f"the file is corrupt or not a MedMNIST file") from None
    if dtype.hasobject:
        raise DataError(f"{path}: member {name} holds pickled Python objects ({dtype}), which ftmed never loads; "
                        f"MedMNIST files hold plain numeric arrays (ftmed data download, or ftmed data synth)")
    return tuple(shape), bool(fortran), dtype, stream.tell()


def check_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, path: Path) -> tuple[tuple, bool, np.dtype, int]:
    """The member's header, after checking that it declares exactly the bytes the archive holds for it."""
    key = info.filename[: -len(".npy")]
    with zf.open(info) as stream:
        shape, fortran, dtype, header_len = _read_header(stream, key, path)
    declared = dtype.itemsize
    for dim in shape:
        declared *= int(dim)  # Python ints: no overflow whatever the header claims
    held = info.file_size - header_len
    if declared != held:
        shape_text = "(" + ", ".join(map(str, shape)) + ")"
        raise DataError(f"{path}: array {key} declares shape {shape_text} {dtype} ({_human(declared)}) but the "
                        f"file holds {_human(max(held, 0))} for it; the file is corrupt — delete it and "
                        f"download or generate it again")
    return shape, fortran, dtype, header_len


def _copy_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, header: tuple, target: Path, path: Path) -> int:
    """Stream one member into `target` as a `.npy` file (fsynced); return the file's size."""
    shape, fortran, dtype, _ = header
    key = info.filename[: -len(".npy")]
    expected = dtype.itemsize * int(np.prod(shape, dtype=object))
    with zf.open(info) as stream, open(target, "wb") as out:
        _read_header(stream, key, path)
        np.lib.format.write_array_header_2_0(
            out, {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": fortran, "shape": shape})
        copied = 0
        while copied < expected:
            block = stream.read(min(CHUNK_BYTES, expected - copied))
            if not block:
                break
            out.write(block)
            copied += len(block)
        if copied != expected or stream.read(1):
            raise DataError(f"{path}: array {key} should hold {expected} bytes but the archive gave "
                            f"{'fewer' if copied != expected else 'more'}; the file is corrupt")
        out.flush()
        os.fsync(out.fileno())
        return out.tell()


def fsync_dir(folder: Path) -> None:
    """Make a rename in `folder` durable (where the platform allows opening a directory)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # not every platform can open a directory
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_stale(root: Path, keep: str) -> None:
    """Caches of earlier versions of the file, and tmp folders of builds whose process is gone."""
    for entry in root.iterdir():
        name = entry.name
        if name == keep or not entry.is_dir():
            continue
        if ".tmp-" in name:
            try:
                pid = int(name.split(".tmp-")[1].split("-")[0])
            except (IndexError, ValueError):
                continue
            if pid != os.getpid() and _pid_alive(pid):
                continue  # another process is building right now
        shutil.rmtree(entry, ignore_errors=True)


def _valid_cache(folder: Path) -> dict | None:
    """The manifest of a complete, undamaged cache in `folder`, else None."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
        for key, entry in manifest["arrays"].items():
            if (folder / f"{key}.npy").stat().st_size != entry["bytes"]:
                return None
        return manifest
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def _build(npz: Path, md5: str, root: Path) -> Path:
    final = root / md5
    tmp = root / f"{md5}.tmp-{os.getpid()}-{next(_tmp_counter)}"
    root.mkdir(parents=True, exist_ok=True)
    tmp.mkdir()
    try:
        arrays = {}
        try:
            with zipfile.ZipFile(npz) as zf:
                members = [i for i in zf.infolist() if i.filename.endswith(".npy")]
                headers = {i.filename: check_member(zf, i, npz) for i in members}  # all checked before writing
                for info in members:
                    key = info.filename[: -len(".npy")]
                    size = _copy_member(zf, info, headers[info.filename], tmp / f"{key}.npy", npz)
                    shape, fortran, dtype, _ = headers[info.filename]
                    arrays[key] = {"shape": list(shape), "dtype": dtype.str, "bytes": size}
        except DataError:  # a member check's own message (e.g. pickled objects) says more than "corrupt"
            raise
        except (zipfile.BadZipFile, EOFError, ValueError, zipfile.LargeZipFile) as exc:
            raise DataError(f"{npz} is truncated or corrupt ({type(exc).__name__}: {exc}); "
                            f"delete it and download or generate it again") from None
        manifest = {"source": npz.name, "md5": md5, "arrays": arrays}
        with open(tmp / MANIFEST, "w") as out:
            out.write(json.dumps(manifest, indent=1))
            out.flush()
            os.fsync(out.fileno())
        fsync_dir(tmp)
        try:
            os.rename(tmp, final)
        except OSError:
            if _valid_cache(final) is None:  # not a concurrent build that won the race: a damaged one
                shutil.rmtree(final, ignore_errors=True)
                os.rename(tmp, final)
        fsync_dir(root)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def discard(npz: str | os.PathLike, md5: str) -> None:
    """Remove the cache of `npz` at `md5` (a file found invalid is not worth keeping unpacked), and the cache
    folder itself once empty."""
    root = cache_root(Path(npz))
    shutil.rmtree(root / md5, ignore_errors=True)
    with contextlib.suppress(OSError):
        root.rmdir()  # only when empty: other files' caches stay


def unpacked(npz: str | os.PathLike, md5: str) -> tuple[Path, dict]:
    """The cache folder of `npz` (whose MD5 the caller computed) and its manifest; built when missing.

    Raises DataError (one line) for a corrupt or lying archive, or when no cache can be written.
    """
    npz = Path(npz)
    root = cache_root(npz)
    folder = root / md5
    manifest = _valid_cache(folder)
    if manifest is not None:
        return folder, manifest
    if folder.exists():
        shutil.rmtree(folder, ignore_errors=True)  # damaged: rebuilt below
    try:
        folder = _build(npz, md5, root)
        _remove_stale(root, keep=md5)
    except DataError:
        discard(npz, md5)
        raise
    except OSError as exc:
        raise DataError(f"cannot unpack {npz.name} into its cache {root}: {exc.strerror or exc} "
                        f"(set {CACHE_DIR_ENV} to a folder with room for the uncompressed arrays)") from None
    manifest = _valid_cache(folder)
    if manifest is None:
        raise DataError(f"the cache of {npz.name} at {folder} was changed while being opened; try again")
    return folder, manifest


def open_array(folder: Path, key: str, mmap: bool = True) -> np.ndarray:
    """A cached array, read-only memory-mapped (or read whole when `mmap` is False: small arrays)."""
    path = folder / f"{key}.npy"
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read the cached array {path} ({exc}); delete {folder} and retry") from None
