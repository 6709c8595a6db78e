"""Training in Keras as the study did (`model.fit`), on the core's split and the core's batch order.

`fit` is the adapter function `ftmed_core.runner.run_experiment` calls; `train` is the entry point.
What the study did and we keep: one-hot labels, categorical_crossentropy, batch 128 with the last partial
batch kept, validation on end-of-epoch weights (`validation_batch_size` = batch size), `model.fit`.
What we change, and why:
- The split is the core's (`data.x_train` / `data.x_val`); it equals Keras's `validation_split` rows.
- The batch order is the core's (`epoch_permutation` + `batch_bounds`), fed as a `tf.data` pipeline
  that gathers each batch by index (the way Keras's own array adapter does) and reads the epoch number
  from a variable a callback sets (`CoreBatches`). `fit(shuffle=True)` draws an order that cannot be
  handed to torch, and with a global seed it reuses one permutation every epoch.
- Weights start from the core's numbers (see model.py); seeds, threads, op determinism are explicit.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from ftmed_core.config import ExperimentConfig, RuntimeConfig
from ftmed_core.data import ExperimentData, one_hot
from ftmed_core.errors import ConfigError
from ftmed_core.protocol import Weights, epoch_permutation
from ftmed_core.records import HISTORY_KEYS, RunRecord
from ftmed_core.runner import EpochCallback, FitResult, check_finite, resolve_threads, run_experiment
from keras_ref._backend import keras, tf
from keras_ref.losses import compile_model
from keras_ref.model import build_mlp, check_layout, predict_logits

MODEL_FILE = "model.keras"
CSV_LOG = "keras_log.csv"
# Keras's History keys -> the shared record keys.
HISTORY_FROM_KERAS = {"loss": "train_loss", "accuracy": "train_acc", "val_loss": "val_loss",
                      "val_accuracy": "val_acc"}
# Train steps per call into the compiled function: the same steps in the same order (bitwise the same
# weights, tests/test_keras_study_recipe.py), less Python overhead per step. benchmarks/keras_speed.py.
STEPS_PER_EXECUTION = 16
PRECISION_POLICIES = {"32": None, "16-mixed": "mixed_float16", "bf16-mixed": "mixed_bfloat16"}


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


def _strategy(runtime: RuntimeConfig, use_gpu: bool):
    if use_gpu and runtime.devices > 1:
        return tf.distribute.MirroredStrategy(devices=[f"/gpu:{i}" for i in range(runtime.devices)])
    return tf.distribute.get_strategy()  # the default (no-op) strategy


# ------------------------------------------------------------------------------------------------- data


def epoch_orders(config: ExperimentConfig, n_rows: int) -> np.ndarray:
    """(epochs, n_rows) int64: the core's row order for every epoch."""
    return np.stack([epoch_permutation(config.seed, epoch, n_rows, config.shuffle)
                     for epoch in range(config.epochs)])


class CoreBatches:
    """The core's batches as a `tf.data` pipeline: each pass over `dataset` is one epoch, in that epoch's order.

    `callback` sets `epoch` at the start of each Keras epoch; Keras starts a fresh pass over the dataset
    right after, and the pass reads `epoch` once to pick its row order. Batches are gathered by index from
    the whole arrays (as Keras's own adapter does for `fit(x, y)`), so rows are never copied into a
    permuted array. Each epoch ends when its pass does, so `steps_per_execution` > 1 cannot run an
    execution across an epoch boundary.
    """

    def __init__(self, x: np.ndarray, y_onehot: np.ndarray, orders: np.ndarray, batch_size: int):
        n_rows = orders.shape[1]
        n_full = n_rows // batch_size
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="ftmed_epoch")
        self.steps = -(-n_rows // batch_size)
        orders_tensor = tf.constant(orders, dtype=tf.int64)
        epoch = self.epoch

        def this_epoch(_):
            order = tf.gather(orders_tensor, epoch.read_value())
            full = tf.reshape(order[: n_full * batch_size], [n_full, batch_size])
            batches = tf.data.Dataset.from_tensor_slices(full)
            if n_rows % batch_size:  # the last partial batch is kept
                batches = batches.concatenate(tf.data.Dataset.from_tensors(order[n_full * batch_size:]))
            return batches

        indices = tf.data.Dataset.range(1).flat_map(this_epoch)
        arrays = tf.data.Dataset.from_tensors((tf.convert_to_tensor(x), tf.convert_to_tensor(y_onehot))).repeat()

        def gather(rows, tensors):
            return tf.gather(tensors[0], rows, axis=0), tf.gather(tensors[1], rows, axis=0)

        dataset = tf.data.Dataset.zip((indices, arrays)).map(gather, num_parallel_calls=tf.data.AUTOTUNE)
        dataset = dataset.apply(tf.data.experimental.assert_cardinality(self.steps))
        options = tf.data.Options()
        # As Keras's array adapter: skip tf.data's static graph rewrites, which cost more than they save here.
        options.experimental_optimization.apply_default_optimizations = False
        # Reading `epoch` is state outside the pipeline; it is what we want each pass to see.
        options.experimental_external_state_policy = tf.data.experimental.ExternalStatePolicy.IGNORE
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
        self.dataset = dataset.with_options(options).prefetch(tf.data.AUTOTUNE)
        self.callback = _SetEpoch(self.epoch)


class _SetEpoch(keras.callbacks.Callback):
    def __init__(self, epoch: "tf.Variable"):
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch.assign(epoch)


# -------------------------------------------------------------------------------------------- callbacks


class EpochReport(keras.callbacks.Callback):
    """Per epoch: wall time, the shared history, the finite-loss check, and the caller's `on_epoch`."""

    def __init__(self, total_epochs: int, on_epoch: EpochCallback | None = None):
        super().__init__()
        self.total_epochs, self.on_epoch = total_epochs, on_epoch
        self.history: dict[str, list[float]] = {key: [] for key in HISTORY_KEYS}
        self._started = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        seconds = time.perf_counter() - self._started
        values = {shared: float(logs.get(name, float("nan"))) for name, shared in HISTORY_FROM_KERAS.items()}
        values["epoch_seconds"] = seconds
        for key in HISTORY_KEYS:
            self.history[key].append(values[key])
        # Raises NonFiniteLoss out of model.fit, carrying the epochs so far into the failed record.
        check_finite(values["train_loss"], epoch + 1, history=self.history)
        if self.on_epoch is not None:
            self.on_epoch(epoch + 1, self.total_epochs, values)


# ------------------------------------------------------------------------------------------------- fit


def _progress(runtime: RuntimeConfig) -> bool:
    return sys.stderr.isatty() if runtime.progress is None else bool(runtime.progress)


def fit(config: ExperimentConfig, runtime: RuntimeConfig, data: ExperimentData, weights: Weights,
        run_dir: Path, on_epoch: EpochCallback | None = None) -> FitResult:
    """Train `config` from `weights` with `model.fit`; the adapter function of `run_experiment`."""
    run_dir = Path(run_dir)
    env = configure_runtime(runtime, config.seed)
    check_layout(config, data.input_dim, data.n_classes, weights)
    policy = PRECISION_POLICIES[runtime.precision]
    with _strategy(runtime, env["gpus"] > 0).scope():
        model = build_mlp(config, data.input_dim, data.n_classes, weights, dtype=policy)
        optimizer = None
        if runtime.precision == "16-mixed":
            from keras_ref.optimizers import build_optimizer

            optimizer = keras.optimizers.LossScaleOptimizer(build_optimizer(config.optimizer))
        compile_model(model, config, optimizer=optimizer, steps_per_execution=STEPS_PER_EXECUTION)

    n_train = len(data.y_train)
    batches = CoreBatches(data.x_train, one_hot(data.y_train, data.n_classes), epoch_orders(config, n_train),
                          config.batch_size)
    report = EpochReport(config.epochs, on_epoch)
    # Keras runs every callback's on_epoch_begin before it starts the epoch's pass over the data.
    callbacks = [batches.callback, keras.callbacks.CSVLogger(str(run_dir / CSV_LOG)), report]
    if runtime.tensorboard:
        callbacks.append(keras.callbacks.TensorBoard(log_dir=str(run_dir / "tensorboard")))
    tracker = None
    if runtime.mlflow:
        from keras_ref.mlflow_callback import MLflowCallback

        tracker = MLflowCallback(config, runtime, report.history, -(-n_train // config.batch_size))
        callbacks.append(tracker)
    started = time.perf_counter()
    model.fit(
        batches.dataset,
        epochs=config.epochs,
        validation_data=(data.x_val, one_hot(data.y_val, data.n_classes)),
        validation_batch_size=config.batch_size,
        shuffle=False,  # the order is the dataset's
        callbacks=callbacks,
        verbose="auto" if _progress(runtime) else 0,
    )
    training_seconds = time.perf_counter() - started
    model.save(run_dir / MODEL_FILE)
    return FitResult(
        history=report.history,
        test_logits=predict_logits(model, data.x_test),
        training_seconds=training_seconds,
        environment={"tensorflow": tf.__version__, "keras": keras.__version__,
                     "keras_backend": keras.backend.backend(), "steps_per_execution": STEPS_PER_EXECUTION,
                     "jit_compile": False, **env, **({"mlflow_run_id": tracker.run_id} if tracker else {})},
    )


def train(config: ExperimentConfig, run_dir: str | Path | None = None, runtime: RuntimeConfig | None = None,
          runs_dir: str | Path = "runs", data: ExperimentData | None = None, force: bool = False,
          on_epoch: EpochCallback | None = None) -> RunRecord:
    """Train `config` in Keras and write its run record (reusing a finished identical run unless `force`)."""
    return run_experiment("keras", fit, config, runtime=runtime, run_dir=run_dir, runs_dir=runs_dir,
                          data=data, force=force, on_epoch=on_epoch)
