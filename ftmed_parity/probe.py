"""Keras on another backend in a child process: `KerasProcess(backend).call(name, *args)` runs
`ftmed_parity.keras_side.<name>(*args)` there and returns its value.

Keras fixes its backend at import, so each backend's Keras lives in a process of its own, started once
(`python -m ftmed_parity.probe <backend>`, that backend's environment: CPU, one thread) and kept for every
call after; it ends when this process closes its end of the pipe (at exit at the latest). Requests and
answers are pickled over the child's stdin/stdout (arguments and results are plain values: configs, numpy
arrays, floats; paths on the shared file system); the child's own output goes to a temporary file whose
tail a failure reports. This launcher is stdlib + numpy (it imports no framework), so a Lightning process --
a test, the parity suite -- can ask every installed backend for its numbers.
"""

from __future__ import annotations

import atexit
import importlib.util
import os
import pickle
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from ftmed_core.frameworks import KERAS_BACKENDS, keras_backend_environment

# The module that must be importable for a backend to run (keras itself is needed by all).
_BACKEND_MODULES = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}


def backend_available(backend: str) -> bool:
    """Whether keras and `backend`'s library are installed (found, not imported)."""
    return (importlib.util.find_spec("keras") is not None
            and importlib.util.find_spec(_BACKEND_MODULES[backend]) is not None)


def installed_backends() -> list[str]:
    return [b for b in KERAS_BACKENDS if backend_available(b)]


class ProbeError(RuntimeError):
    """The child process failed or raised; the message carries its error (or the tail of its output)."""


class KerasProcess:
    """One child process with Keras on `backend`, serving `ftmed_parity.keras_side` calls in order."""

    def __init__(self, backend: str):
        self.backend = backend
        env = {**os.environ, **keras_backend_environment(backend, "cpu", 1)}
        env.update({"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
                    "CUDA_VISIBLE_DEVICES": "", "TF_CPP_MIN_LOG_LEVEL": "2"})
        root = str(Path(__file__).resolve().parents[1])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
        self._log = tempfile.TemporaryFile(prefix=f"ftmed-keras-{backend}-")
        self._process = subprocess.Popen([sys.executable, "-m", "ftmed_parity.probe", backend], env=env, cwd=root,
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log)
        self._lock = threading.Lock()

    def call(self, name: str, *args, **kwargs):
        """`keras_side.<name>(*args, **kwargs)` in the child; its exception comes back as ProbeError."""
        with self._lock:
            try:
                pickle.dump((name, args, kwargs), self._process.stdin, protocol=pickle.HIGHEST_PROTOCOL)
                self._process.stdin.flush()
                status, value = pickle.load(self._process.stdout)
            except (EOFError, BrokenPipeError, OSError) as exc:
                raise ProbeError(f"Keras on {self.backend} (child process) exited with "
                                 f"{self._process.poll()}: {self._tail()}") from exc
        if status != "ok":
            raise ProbeError(f"on {self.backend}: {value}")
        return value

    def _tail(self, lines: int = 12) -> str:
        self._log.seek(0)
        return "\n".join(self._log.read().decode(errors="replace").strip().splitlines()[-lines:])

    def close(self) -> None:
        if self._process.poll() is None:
            self._process.stdin.close()  # the child ends at EOF
            try:
                self._process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._process.kill()
        self._log.close()


_PROCESSES: dict[str, KerasProcess] = {}


def keras_process(backend: str) -> KerasProcess:
    """The child process for `backend`, started on first use and reused (closed at exit)."""
    if backend not in _PROCESSES:
        if not _PROCESSES:
            atexit.register(lambda: [p.close() for p in _PROCESSES.values()])
        _PROCESSES[backend] = KerasProcess(backend)
    return _PROCESSES[backend]


def serve() -> int:
    """The child's loop: answer pickled (name, args, kwargs) requests on stdin until EOF."""
    channel = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # anything the libraries print goes to the log, not into the answers
    sys.stdout = sys.stderr
    requests = sys.stdin.buffer
    from ftmed_parity import keras_side
    from ftmed_parity.checks import error_note
    from ftmed_parity.sides import KERAS_FUNCTIONS
    from keras_ref._backend import native

    native.limit_threads(1)
    while True:
        try:
            name, args, kwargs = pickle.load(requests)
        except EOFError:
            return 0
        try:
            if name not in KERAS_FUNCTIONS:
                raise ValueError(f"unknown keras_side function {name!r}")
            answer = ("ok", getattr(keras_side, name)(*args, **kwargs))
        except Exception as exc:  # reported to the caller as one line; the process serves on
            answer = ("error", error_note(exc))
        pickle.dump(answer, channel, protocol=pickle.HIGHEST_PROTOCOL)
        channel.flush()


if __name__ == "__main__":
    sys.exit(serve())
