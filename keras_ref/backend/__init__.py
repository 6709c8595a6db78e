"""What keras_ref does differently per Keras backend: one module each, `tensorflow.py`, `jax.py`, `torch.py`,
with the same functions (as `keras/src/backend/{tensorflow,jax,torch}/`). `keras_ref._backend` imports the
one KERAS_BACKEND names, once, as `native`; the rest of keras_ref calls `native.<function>` and never
branches on the backend's name.

Every backend module provides:

| name | contract |
|---|---|
| `STEPS_PER_EXECUTION` | train steps per call into the compiled train function |
| `JIT_COMPILE` | `compile(jit_compile=...)`: whether the whole step is compiled by XLA |
| `configure_runtime(runtime, seed)` | devices, threads, TF32, op determinism and seeds; returns the record's `environment` part (device, threads, threads_requested, gpus, op_determinism, ...); ConfigError for what the backend cannot run |
| `distribution_scope(runtime, env)` | the context the model is built and compiled in (a distribution strategy, or none) |
| `training_batches(split, n_classes, batch_size, seed, shuffle)` | the core's batches in the core's epoch order: `.dataset` (what `fit` consumes, one pass per epoch, `(x, y one-hot)`), `.callback` (sets the epoch) |
| `eval_batches(split, n_classes, batch_size, inputs_only=False)` | `split` in file order, for `evaluate` / `predict` |
| `fresh_output(y_pred)` | the activated outputs without any logits Keras attached to them |
| `gradient_step(model)` | `step(x, y_onehot) -> (loss, gradients)` as the backend's `train_step` differentiates (`compute_loss`), gradients in `model.trainable_variables` order, backend tensors |
| `limit_threads(threads)` | best effort, for a process that already configured nothing else (the parity suite) |
| `saving_quietly()` | context for `model.save` (keeps TensorFlow's start-up lines out of other backends' output) |
| `versions()` | the backend library's version, for the run record |

Shared Keras code for the backends is in `common.py`; this file is stdlib only (it runs before keras loads).
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile


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
