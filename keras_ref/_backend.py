"""Keras on the TensorFlow backend, pinned: the one place keras_ref imports keras and tensorflow from.

The backend decides the loss: on TensorFlow, `categorical_crossentropy` takes the softmax/sigmoid logits
attached to the output; the JAX and torch backends always use the divide-and-clip formula. So the backend
is pinned before keras is first imported, and a keras already imported with another backend is refused
rather than silently computing a different loss.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TF's C++ INFO/WARNING lines drown the CLI's output


def _check_backend() -> None:
    already = sys.modules.get("keras")
    if already is not None:
        backend = already.backend.backend()
        if backend != "tensorflow":
            raise ImportError(
                f"keras_ref needs Keras on the TensorFlow backend, but keras was already imported with the "
                f"{backend!r} backend; set KERAS_BACKEND=tensorflow (or import keras_ref first)"
            )
    elif os.environ["KERAS_BACKEND"] != "tensorflow":
        raise ImportError(
            f"keras_ref needs Keras on the TensorFlow backend, but KERAS_BACKEND={os.environ['KERAS_BACKEND']!r}; "
            f"unset it or set KERAS_BACKEND=tensorflow"
        )


@contextlib.contextmanager
def _native_startup_lines_hidden():
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

with _native_startup_lines_hidden():
    import keras  # noqa: E402
    import tensorflow as tf  # noqa: E402

    tf.config.list_physical_devices("GPU")  # the CUDA probe, with its "no driver" lines, happens here

_check_backend()  # keras reads ~/.keras/keras.json too; make sure what was loaded is TensorFlow

__all__ = ["keras", "tf"]
