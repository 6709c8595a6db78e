"""Run `keras_ref.backend_probe` for one Keras backend in a child process and return its arrays.

Keras fixes its backend at import, so each backend's numbers come from a process of its own; this
launcher is stdlib + numpy (it imports no framework), so a Lightning process -- a test, the parity suite --
can ask every installed backend for its numbers and compare them with its own. See keras_ref/backend_probe.py
for the request's keys and what comes back.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

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
    """The child process failed; the message carries the tail of its output."""


def probe(backend: str, request: dict, arrays: dict[str, np.ndarray] | None = None,
          timeout: float = 900) -> tuple[dict, dict[str, np.ndarray]]:
    """(meta, arrays) from `keras_ref.backend_probe.compute(request, arrays)` run on `backend`, on CPU, one thread."""
    env = {**os.environ, **keras_backend_environment(backend, "cpu", 1)}
    env.update({"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
                "CUDA_VISIBLE_DEVICES": "", "TF_CPP_MIN_LOG_LEVEL": "2"})
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    with tempfile.TemporaryDirectory(prefix=f"ftmed-probe-{backend}-") as tmp:
        folder = Path(tmp)
        (folder / "request.json").write_text(json.dumps(request))
        np.savez(folder / "in.npz", **(arrays or {}))
        done = subprocess.run([sys.executable, "-m", "keras_ref.backend_probe", str(folder)], env=env,
                              capture_output=True, text=True, timeout=timeout, cwd=root)
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-12:]
            raise ProbeError(f"keras_ref.backend_probe on {backend} exited with {done.returncode}: " + "\n".join(tail))
        meta = json.loads((folder / "meta.json").read_text())
        with np.load(folder / "out.npz", allow_pickle=False) as loaded:
            out = {k: loaded[k] for k in loaded.files}
    return meta, out
