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
- Resume: `EpochState` saves weights, optimizer variables, epoch and history after every epoch; a rerun in
  the same run directory restores them and passes `initial_epoch` to `fit`, bitwise identical to an
  uninterrupted run on CPU (tests/test_resume.py).
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


# ----------------------------------------------------------------------------------------------- resume

STATE_FILE = "keras_state.npz"


class EpochState(keras.callbacks.Callback):
    """After every epoch, atomically: weights, optimizer variables (its step counter included), the epoch
    count and the history so far, in one `.npz` (`STATE_FILE`) -- what `keras.callbacks.BackupAndRestore`
    keeps, plus the history, and written with temp file + fsync + rename so a kill mid-write leaves the
    previous epoch's state whole. Runs after `EpochReport`, whose history it saves."""

    def __init__(self, path: Path, report: "EpochReport", config: ExperimentConfig):
        super().__init__()
        self.path, self.report, self.config = Path(path), report, config

    def on_epoch_end(self, epoch, logs=None):
        import json

        from ftmed_core.records import atomic_save_npz

        arrays = {f"w{i}": w for i, w in enumerate(self.model.get_weights())}
        arrays.update({f"o{i}": np.asarray(v) for i, v in enumerate(self.model.optimizer.variables)})
        meta = {"epochs_done": epoch + 1, "config_hash": self.config.config_hash(),
                "n_weights": len(self.model.get_weights()), "n_optimizer": len(self.model.optimizer.variables),
                "history": self.report.history}
        arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
        atomic_save_npz(self.path, arrays)


def restore_state(path: Path, model, config: ExperimentConfig) -> tuple[int, dict] | None:
    """Load `path` (written by `EpochState`) into `model` and its optimizer: (epochs done, history so far).

    None when there is no state file; an unusable one (unreadable, another config, other shapes) is moved
    aside as `<file>.unusable-<time>` with one line on stderr, and training starts from epoch 1.
    """
    import json
    import shutil

    path = Path(path)
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as stored:
            meta = json.loads(stored["meta"].tobytes().decode())
            weights = [stored[f"w{i}"] for i in range(meta["n_weights"])]
            variables = [stored[f"o{i}"] for i in range(meta["n_optimizer"])]
        if meta["config_hash"] != config.config_hash():
            raise ValueError("it was written for another configuration")
        current = model.get_weights()
        if [w.shape for w in weights] != [w.shape for w in current]:
            raise ValueError("its weights do not fit this model")
        if not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
        slots = model.optimizer.variables
        if [tuple(v.shape) for v in slots] != [v.shape for v in variables]:
            raise ValueError("its optimizer state does not fit this optimizer")
        epochs_done = int(meta["epochs_done"])
        history = {key: list(meta["history"][key])[:epochs_done] for key in HISTORY_KEYS}
        if any(len(values) != epochs_done for values in history.values()):
            raise ValueError("its history does not match its epoch count")
    except Exception as exc:  # any unreadable or foreign file: start over rather than fail the run
        aside = path.with_name(f"{path.name}.unusable-{time.strftime('%Y%m%d-%H%M%S')}")
        shutil.move(str(path), str(aside))
        print(f"keras_ref: not resuming from {path}: {str(exc)[:120]}; moved to {aside.name}, training from "
              f"epoch 1", file=sys.stderr, flush=True)
        return None
    model.set_weights(weights)
    for slot, value in zip(slots, variables):
        slot.assign(value)
    return epochs_done, history


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
    resumed = restore_state(run_dir / STATE_FILE, model, config)
    initial_epoch = 0
    if resumed is not None:  # a killed or interrupted attempt: go on after its last finished epoch
        initial_epoch, report.history = resumed
    # Keras runs every callback's on_epoch_begin before it starts the epoch's pass over the data.
    callbacks = [batches.callback, keras.callbacks.CSVLogger(str(run_dir / CSV_LOG), append=resumed is not None),
                 report, EpochState(run_dir / STATE_FILE, report, config)]
    if runtime.tensorboard:
        callbacks.append(keras.callbacks.TensorBoard(log_dir=str(run_dir / "tensorboard")))
    started = time.perf_counter()
    model.fit(
        batches.dataset,
        epochs=config.epochs,
        initial_epoch=initial_epoch,  # Keras passes absolute epoch numbers on, so the batch order follows
        validation_data=(data.x_val, one_hot(data.y_val, data.n_classes)),
        validation_batch_size=config.batch_size,
        shuffle=False,  # the order is the dataset's
        callbacks=callbacks,
        verbose="auto" if _progress(runtime) else 0,
    )
    training_seconds = time.perf_counter() - started
    model.save(run_dir / MODEL_FILE)
    (run_dir / STATE_FILE).unlink(missing_ok=True)  # model.keras now holds the same (and the record follows)
    return FitResult(
        history=report.history,
        test_logits=predict_logits(model, data.x_test),
        training_seconds=training_seconds,
        environment={"tensorflow": tf.__version__, "keras": keras.__version__,
                     "keras_backend": keras.backend.backend(), "steps_per_execution": STEPS_PER_EXECUTION,
                     "jit_compile": False, "resumed_after_epoch": initial_epoch, **env},
    )


def train(config: ExperimentConfig, run_dir: str | Path | None = None, runtime: RuntimeConfig | None = None,
          runs_dir: str | Path = "runs", data: ExperimentData | None = None, force: bool = False,
          on_epoch: EpochCallback | None = None) -> RunRecord:
    """Train `config` in Keras and write its run record (reusing a finished identical run unless `force`)."""
    return run_experiment("keras", fit, config, runtime=runtime, run_dir=run_dir, runs_dir=runs_dir,
                          data=data, force=force, on_epoch=on_epoch)
