"""Claims: which process may train a run, and which may write a runs folder's reports, at a time.

A claim is an exclusive `fcntl.flock` on a lock file that the claiming process holds open. The kernel
drops the lock when that file is closed, and a process's files are closed however it ends (return,
exception, `kill -9`, out-of-memory killer), so a dead process can never leave a claim stuck; the lock
file that stays behind means nothing on its own. What a lock file contains (pid, host, time) is only
for messages ("being trained by pid 1234 on host"); it is never trusted.

Lock files live in `<runs_dir>/.locks/`: `<run_key>.lock` for a run, `report.lock` for the report
files. They sit outside the run directories, which may be moved aside (retired, damaged) while claimed.

Contract: a flock is held per open file, so two claims on one path conflict even inside one process.
Linux/macOS only (fcntl). On NFS, Linux emulates flock with POSIX record locks, which the server keeps
per client: claims still exclude each other across machines, and a crashed client's locks are
released when its lease expires.
"""

from __future__ import annotations

import errno
import fcntl
import os
import platform
import time
from pathlib import Path

LOCK_DIR = ".locks"
REPORT_LOCK = "report"


def run_lock_path(run_dir: str | Path) -> Path:
    """The lock file that claims `run_dir` (beside it, in its parent's `.locks/`)."""
    run_dir = Path(run_dir)
    return run_dir.parent / LOCK_DIR / f"{run_dir.name}.lock"


def report_lock_path(runs_dir: str | Path) -> Path:
    """The lock file that serialises writing `runs_dir`'s comparison files and plots."""
    return Path(runs_dir) / LOCK_DIR / f"{REPORT_LOCK}.lock"


class Claim:
    """An exclusive claim held through an open file; `release()` (or leaving a `with`) gives it up."""

    def __init__(self, path: Path, fd: int):
        self.path, self._fd = path, fd

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)  # closing the file drops the flock

    def __enter__(self) -> "Claim":
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def __del__(self) -> None:
        self.release()


def _open(path: Path) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    return os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666)


def _stamp(fd: int) -> None:
    """Write who holds the claim into the lock file (for messages only)."""
    text = f"pid {os.getpid()} on {platform.node()} since {time.strftime('%Y-%m-%d %H:%M:%S')}\n"
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, text.encode(), 0)
    except OSError:  # a full disk must not stop the claim itself: the lock is in the kernel, not the file
        pass


def try_claim(path: str | Path, stamp: bool = True) -> Claim | None:
    """Claim `path` now, or return None when another open file (any process) holds it.

    `stamp=False` leaves the lock file's text (who held it last) untouched, for a quick look.
    """
    path = Path(path)
    fd = _open(path)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return None
        raise
    if stamp:
        _stamp(fd)
    return Claim(path, fd)


def claim(path: str | Path, timeout: float | None = None, poll: float = 0.2, stamp: bool = True) -> Claim:
    """Claim `path`, waiting for the holder to release it (or die); TimeoutError after `timeout` seconds."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        held = try_claim(path, stamp)
        if held is not None:
            return held
        if deadline is not None and time.monotonic() >= deadline:
            raise TimeoutError(f"{path} is still claimed by {holder(path) or 'another process'}")
        # Polling rather than a blocking flock keeps Ctrl-C responsive while waiting.
        time.sleep(poll)


def is_claimed(path: str | Path) -> bool:
    """Whether another open file holds `path` right now (a snapshot: it may change the next moment)."""
    held = try_claim(path, stamp=False)
    if held is None:
        return True
    held.release()
    return False


def holder(path: str | Path) -> str | None:
    """Who last claimed `path`, as written into the lock file ('pid N on HOST since TIME'), if readable."""
    try:
        text = Path(path).read_text(errors="replace").strip()
    except OSError:
        return None
    return text or None
