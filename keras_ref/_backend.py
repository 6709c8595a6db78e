"""Keras and its backend: the one place keras_ref chooses the backend and imports keras from.

The backend is KERAS_BACKEND at import: "tensorflow" when unset (the study's), "jax" or "torch" otherwise
(`ftmed_core.frameworks.prepare_keras_backend` sets it for a framework label such as `keras[jax]`). Its
module, `keras_ref/backend/<name>.py`, is imported once as `native` (what each provides:
keras_ref/backend/__init__.py). The backend decides the loss: on TensorFlow, `categorical_crossentropy`
takes the softmax/sigmoid logits attached to the output; the JAX and torch backends always use the
divide-and-clip formula (ftmed_core/frameworks.py). A keras already imported with a backend other than
KERAS_BACKEND's is refused rather than silently computing another loss. TensorFlow is imported only on its
own backend (`tf` is None otherwise), so keras_ref runs with JAX or torch on a machine without TensorFlow.
"""

from __future__ import annotations

import importlib
import os
import sys

from ftmed_core.frameworks import KERAS_BACKENDS, keras_label
from keras_ref.backend import native_startup_lines_hidden  # noqa: F401  (re-exported)

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TF's C++ INFO/WARNING lines drown the CLI's output
BACKEND = os.environ["KERAS_BACKEND"]
# The framework label runs on this backend are recorded under: keras, keras[jax], keras[torch].
FRAMEWORK = keras_label(BACKEND) if BACKEND in KERAS_BACKENDS else None


def _check_backend() -> None:
    if BACKEND not in KERAS_BACKENDS:
        raise ImportError(f"keras_ref runs on the Keras backends {', '.join(KERAS_BACKENDS)}, but "
                          f"KERAS_BACKEND={BACKEND!r}")
    already = sys.modules.get("keras")
    if already is not None and getattr(already, "backend", None) is not None:
        loaded = already.backend.backend()
        if loaded != BACKEND:
            raise ImportError(
                f"keras was already imported with the {loaded!r} backend, but KERAS_BACKEND={BACKEND!r}; "
                f"Keras cannot switch backends in a running process: use a fresh process"
            )


_check_backend()
native = importlib.import_module(f"keras_ref.backend.{BACKEND}")  # imports keras (and TF on its backend)
import keras  # noqa: E402

# TensorFlow itself, on its own backend only (None elsewhere): for code that pins TF behaviour (tests).
tf = getattr(native, "tf", None)
_check_backend()  # keras reads ~/.keras/keras.json too; make sure what was loaded is KERAS_BACKEND's

__all__ = ["BACKEND", "FRAMEWORK", "keras", "native", "tf"]
