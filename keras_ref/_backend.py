"""Keras and its backend: the one place keras_ref imports keras (and tensorflow, on that backend only) from.

The backend is KERAS_BACKEND at import: "tensorflow" when unset (the study's), "jax" or "torch" otherwise
(`ftmed_core.frameworks.prepare_keras_backend` sets it for a framework label such as `keras[jax]`). It decides
the loss: on TensorFlow, `categorical_crossentropy` takes the softmax/sigmoid logits attached to the output;
the JAX and torch backends always use the divide-and-clip formula (ftmed_core/frameworks.py). A keras
already imported with a backend other than KERAS_BACKEND's is refused rather than silently computing
another loss. TensorFlow is imported only on its own backend (`tf` is None otherwise), so keras_ref runs
with JAX or torch on a machine without TensorFlow.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile

from ftmed_core.frameworks import KERAS_BACKENDS, keras_label

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


@contextlib.contextmanager
def native_startup_lines_hidden():
    """TF 2.21 prints its C++ start-up lines (absl, oneDNN, CUDA probing) whatever TF_CPP_MIN_LOG_LEVEL says.
    Send file descriptor 2 to a temporary file while TensorFlow loads and probes its devices; replay what
    it caught if that fails. FTMED_TF_VERBOSE=1 leaves stderr alone."""
    if os.environ.get("FTMED_TF_VERBOSE"):
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):
        yield
        return
    with tempfile.TemporaryFile() as caught:
        os.dup2(caught.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            caught.seek(0)
            os.write(2, caught.read())
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


_check_backend()

if BACKEND == "tensorflow":
    with native_startup_lines_hidden():
        import keras  # noqa: E402
        import tensorflow as tf  # noqa: E402

        tf.config.list_physical_devices("GPU")  # the CUDA probe, with its "no driver" lines, happens here
else:
    import keras  # noqa: E402

    tf = None  # TensorFlow belongs to the tensorflow backend only; JAX/torch machines may not have it

_check_backend()  # keras reads ~/.keras/keras.json too; make sure what was loaded is KERAS_BACKEND's

__all__ = ["BACKEND", "FRAMEWORK", "keras", "tf"]
