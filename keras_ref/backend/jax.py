"""keras_ref on the JAX backend: XLA's runtime settings, the core's batches as a PyDataset, the whole train
step jitted, and `jax.value_and_grad` for the step `fit` differentiates. The functions every backend module
provides are listed in keras_ref/backend/__init__.py.

Against TensorFlow: XLA on CPU is deterministic, on GPU `--xla_gpu_deterministic_ops` (set in XLA_FLAGS
before import, `ftmed_core.frameworks`); threads: 1 via XLA_FLAGS when asked for one thread, else one per
core (XLA has no N-thread setting); TF32 off via `jax_default_matmul_precision="highest"`.
"""

from __future__ import annotations

import os

import jax
import keras

from ftmed_core.config import RuntimeConfig
from ftmed_core.errors import ConfigError
from ftmed_core.runner import resolve_threads
from keras_ref.backend.common import (  # noqa: F401  (shared with the other non-TensorFlow backend)
    CoreBatchSequence, check_one_device, distribution_scope, eval_sequence, fresh_output, saving_quietly,
    seed_keras_and_numpy,
)

# 16 steps per call: bitwise the same weights as 1 over 2 epochs (tests/test_keras_backends.py).
STEPS_PER_EXECUTION = 16
# Eager JAX dispatches op by op (each op its own XLA computation, orders of magnitude slower).
JIT_COMPILE = True


def configure_runtime(runtime: RuntimeConfig, seed: int) -> dict:
    """Apply the runtime settings to JAX; return where the run executes (for the record). One device."""
    check_one_device(runtime, "jax")
    requested = resolve_threads(runtime)
    gpus = [d for d in jax.devices() if d.platform == "gpu"] if runtime.accelerator != "cpu" else []
    if runtime.accelerator == "gpu" and not gpus:
        raise ConfigError("accelerator 'gpu' was asked for, but JAX sees no GPU; choose auto or cpu")
    if gpus:
        jax.config.update("jax_default_matmul_precision", "highest")  # no TF32 on Ampere and newer
    device = str(gpus[0]) if gpus else "cpu"
    single = "xla_cpu_multi_thread_eigen=false" in os.environ.get("XLA_FLAGS", "")
    seed_keras_and_numpy(seed)
    return {"device": device, "threads": 1 if single else resolve_threads(RuntimeConfig()),
            "threads_requested": requested, "gpus": 1 if gpus else 0,
            "xla_flags": os.environ.get("XLA_FLAGS", ""),
            # XLA on CPU is deterministic; on GPU, --xla_gpu_deterministic_ops (set before import).
            "op_determinism": True}


def limit_threads(threads: int) -> None:
    """Nothing to do after import: XLA's CPU threads are set by XLA_FLAGS before JAX starts."""


def versions() -> dict:
    return {"jax": jax.__version__}


training_batches = CoreBatchSequence
eval_batches = eval_sequence


def gradient_step(model: keras.Model):
    """`jax.value_and_grad` of the trainer's own `compute_loss_and_updates`, as its `train_step`. Not
    jitted: one batch at a time, and compiling would cost more than running op by op (same ops, same order)."""

    def step(x, y_onehot):
        trainable = [v.value for v in model.trainable_variables]
        non_trainable = [v.value for v in model.non_trainable_variables]
        metrics = [v.value for v in model.metrics_variables]
        if not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
        optimizer_values = [v.value for v in model.optimizer.variables]

        def loss_fn(values):
            return model.compute_loss_and_updates(values, non_trainable, metrics, x, y_onehot, None,
                                                  training=True, optimizer_variables=optimizer_values)

        (loss, _), grads = jax.value_and_grad(loss_fn, has_aux=True)(trainable)
        return loss, grads

    return step
