"""keras_ref on the TensorFlow backend (the study's): TF's runtime settings, a `tf.data` feed of the core's
batches, MirroredStrategy for several GPUs, and the GradientTape step `fit` differentiates. The functions
every backend module provides are listed in keras_ref/backend/__init__.py."""

from __future__ import annotations

import contextlib
import sys
from typing import Callable, Iterator

import numpy as np

from keras_ref.backend import native_startup_lines_hidden

with native_startup_lines_hidden():
    import keras
    import tensorflow as tf

    tf.config.list_physical_devices("GPU")  # the CUDA probe, with its "no driver" lines, happens here

from ftmed_core.config import RuntimeConfig  # noqa: E402
from ftmed_core.data import Split, one_hot  # noqa: E402
from ftmed_core.errors import ConfigError  # noqa: E402
from ftmed_core.protocol import epoch_permutation, steps_per_epoch  # noqa: E402
from ftmed_core.runner import resolve_threads  # noqa: E402
from keras_ref.backend.common import SetEpoch  # noqa: E402

# 16 steps per call: the same steps in the same order (bitwise the same weights,
# tests/test_keras_study_recipe.py), less Python overhead per step (benchmarks/keras_speed.py).
STEPS_PER_EXECUTION = 16
JIT_COMPILE = False  # XLA changes numerics (and is on by default on GPU)


# --------------------------------------------------------------------------------------------- runtime


def _set_threads(threads: int) -> int:
    """Intra-op threads = `threads`, inter-op 1; settable only before TF initializes its runtime."""
    for setter, getter, value in (
        (tf.config.threading.set_intra_op_parallelism_threads,
         tf.config.threading.get_intra_op_parallelism_threads, threads),
        (tf.config.threading.set_inter_op_parallelism_threads,
         tf.config.threading.get_inter_op_parallelism_threads, 1),
    ):
        try:
            setter(value)  # setting the value already in force is allowed after initialization
        except RuntimeError:
            print(f"keras_ref: TensorFlow is already initialized with {getter() or 'its default'} threads "
                  f"(asked for {value}); they can only be set before the first TensorFlow op", file=sys.stderr)
    # What is in force: 0 means TF's own choice (one per core), left by a runtime initialized before us.
    return tf.config.threading.get_intra_op_parallelism_threads()


def limit_threads(threads: int) -> None:
    """Intra- and inter-op threads = `threads` if TF's runtime has not started yet (else kept, silently)."""
    for setter in (tf.config.threading.set_intra_op_parallelism_threads,
                   tf.config.threading.set_inter_op_parallelism_threads):
        try:
            setter(threads)
        except RuntimeError:  # TF already initialised (e.g. by another test): keep its threads
            pass


def configure_runtime(runtime: RuntimeConfig, seed: int) -> dict:
    """Apply the runtime settings to TensorFlow; return where the run executes (for the record)."""
    if runtime.num_nodes != 1:
        raise ConfigError(f"keras_ref trains on one machine; num_nodes={runtime.num_nodes} is not supported")
    if runtime.accelerator == "mps":
        raise ConfigError("accelerator 'mps' is not available to TensorFlow; choose auto, cpu or gpu")
    requested = resolve_threads(runtime)
    threads = _set_threads(requested)
    gpus = tf.config.list_physical_devices("GPU")
    if runtime.accelerator == "cpu" and gpus:
        try:
            tf.config.set_visible_devices([], "GPU")
        except RuntimeError:  # TF already initialized with the GPUs visible
            raise ConfigError("accelerator 'cpu' must be chosen before TensorFlow initializes its GPUs") from None
        gpus = []
    if runtime.accelerator == "gpu" and not gpus:
        raise ConfigError("accelerator 'gpu' was asked for, but TensorFlow sees no GPU; choose auto or cpu")
    use_gpu = bool(gpus) and runtime.accelerator in ("auto", "gpu")
    if runtime.devices > 1 and not use_gpu:
        raise ConfigError(f"devices={runtime.devices} needs GPUs; on CPU use devices=1 (and threads=N)")
    if runtime.devices > len(gpus or [None]):
        raise ConfigError(f"devices={runtime.devices}, but TensorFlow sees {len(gpus)} GPU(s)")
    if use_gpu:
        # TF32 matmuls are on by default on Ampere and newer and change float32 results.
        tf.config.experimental.enable_tensor_float_32_execution(False)
    keras.utils.set_random_seed(seed)
    if runtime.deterministic:
        # Global and one-way in TF's public API. On CPU it changes the numbers (deterministically) versus
        # the default kernels (keras_ref/__init__.py). Once on, it stays on for the process.
        tf.config.experimental.enable_op_determinism()
    device = ", ".join(g.name for g in gpus[: runtime.devices]) if use_gpu else "cpu"
    return {"device": device, "threads": threads, "threads_requested": requested,
            "gpus": len(gpus) if use_gpu else 0,
            "op_determinism": _op_determinism_enabled(runtime)}


def _op_determinism_enabled(runtime: RuntimeConfig) -> bool:
    """Whether op determinism is on now: it is process-wide and cannot be turned off via the public API."""
    try:
        from tensorflow.python.framework import config as tf_framework_config  # no public getter in TF 2.21

        return bool(tf_framework_config.is_op_determinism_enabled())
    except (ImportError, AttributeError):
        return runtime.deterministic


def distribution_scope(runtime: RuntimeConfig, env: dict):
    """MirroredStrategy over the GPUs for `devices > 1`, else TF's default (no-op) strategy."""
    if env["gpus"] > 0 and runtime.devices > 1:
        strategy = tf.distribute.MirroredStrategy(devices=[f"/gpu:{i}" for i in range(runtime.devices)])
    else:
        strategy = tf.distribute.get_strategy()
    return strategy.scope()


def saving_quietly():
    return contextlib.nullcontext()  # TensorFlow is loaded already: nothing new prints


def versions() -> dict:
    return {"tensorflow": tf.__version__}


# ------------------------------------------------------------------------------------------------- data


def split_dataset(batches: Callable[[], Iterator[tuple[np.ndarray, np.ndarray]]], steps: int, input_dim: int,
                  n_classes: int) -> "tf.data.Dataset":
    """A `tf.data` pipeline over a plain Python iterator of `(x float32 (m, D), y one-hot float32)` batches.

    `batches()` is called once per pass over the dataset (so once per Keras epoch), when the pass
    starts. Batches are built on the host one at a time (`ftmed_core.data.Split.batches`), so the
    pipeline holds a couple of batches, never a split.
    """
    signature = (tf.TensorSpec((None, input_dim), tf.float32), tf.TensorSpec((None, n_classes), tf.float32))
    dataset = tf.data.Dataset.from_generator(batches, output_signature=signature)
    dataset = dataset.apply(tf.data.experimental.assert_cardinality(steps))
    options = tf.data.Options()
    # As Keras's array adapter: skip tf.data's static graph rewrites, which cost more than they save here.
    options.experimental_optimization.apply_default_optimizations = False
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options).prefetch(2)


def _one_hot_batches(split: Split, n_classes: int, batch_size: int, order: np.ndarray | None):
    for x, y in split.batches(batch_size, order):
        yield x, one_hot(y, n_classes)


class CoreBatches:
    """The core's training batches as a `tf.data` pipeline: each pass over `dataset` is one epoch.

    `callback` sets `epoch` at the start of each Keras epoch; Keras starts a fresh pass over the dataset
    right after, and the pass draws that epoch's order (`epoch_permutation`) when it starts: memory is one
    order, whatever the number of epochs. Each batch is gathered from the split's memory map and
    converted to float32 on its own (`Split.batches`), so no whole-array float copy exists. Each epoch
    ends when its pass does, so `steps_per_execution` > 1 cannot run an execution across an epoch boundary.
    `batches(epoch)` is the same data as a plain iterator, for feeding paths other than tf.data.
    """

    def __init__(self, split: Split, n_classes: int, batch_size: int, seed: int,
                 shuffle: str | bool = "per-epoch"):
        self.split, self.n_classes, self.batch_size = split, n_classes, batch_size
        self.seed, self.shuffle = seed, shuffle
        self.epoch = 0
        self.steps = steps_per_epoch(len(split), batch_size)
        self.dataset = split_dataset(lambda: self.batches(self.epoch), self.steps, split.input_dim, n_classes)
        self.callback = SetEpoch(self)

    def batches(self, epoch: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        # File order needs no index: batches are slices.
        order = (None if self.shuffle in (False, "none")
                 else epoch_permutation(self.seed, epoch, len(self.split), self.shuffle))
        return _one_hot_batches(self.split, self.n_classes, self.batch_size, order)


def training_batches(split: Split, n_classes: int, batch_size: int, seed: int,
                     shuffle: str | bool = "per-epoch") -> CoreBatches:
    return CoreBatches(split, n_classes, batch_size, seed, shuffle)


def eval_batches(split: Split, n_classes: int, batch_size: int, inputs_only: bool = False) -> "tf.data.Dataset":
    """`split` in file order, `batch_size` rows per batch (the batches `fit`/`predict` cut from arrays)."""
    dataset = split_dataset(lambda: _one_hot_batches(split, n_classes, batch_size, None),
                            steps_per_epoch(len(split), batch_size), split.input_dim, n_classes)
    return dataset.map(lambda x, y: x) if inputs_only else dataset


# ------------------------------------------------------------------------------------------------- loss


def fresh_output(y_pred):
    """tf.identity returns a fresh tensor: no `_keras_logits`, op type "Identity" (not "Softmax")."""
    return tf.identity(y_pred)


def gradient_step(model: keras.Model):
    """A `tf.function` computing what Keras's `train_step` differentiates: `compute_loss` under a
    GradientTape (where the logits shortcut applies). Traced once per model; XLA off, as `fit` here."""

    @tf.function(jit_compile=False, reduce_retracing=True)
    def step(x, y):
        with tf.GradientTape() as tape:
            y_pred = model(x, training=True)
            loss = model.compute_loss(x=x, y=y, y_pred=y_pred, training=True)
        return loss, tape.gradient(loss, model.trainable_variables)

    return step
