"""Training in Keras as the study did (`model.fit`), on the core's split and the core's batch order.

`fit` is the adapter function `ftmed_core.runner.run_experiment` calls; `train` is the entry point.
What the study did and we keep: one-hot labels, categorical_crossentropy, batch 128 with the last partial
batch kept, validation on end-of-epoch weights (`validation_batch_size` = batch size), `model.fit`.
What we change, and why:
- The split is the core's (`data.train` / `data.val`); it equals Keras's `validation_split` rows.
- The batch order is the core's (`epoch_permutation` + `batch_bounds`), fed by the backend's
  `training_batches` (a `tf.data` pipeline on TensorFlow, a `PyDataset` on JAX and torch), which gathers
  each batch from the split's memory map, converts it to float32 on its own, and learns the epoch number
  from a callback. `fit(shuffle=True)` draws an order that cannot be handed to torch, and with a global
  seed it reuses one permutation every epoch. Validation and test outputs are streamed the same way: no
  split is ever converted whole.
- Weights start from the core's numbers (see model.py); seeds, threads, op determinism are explicit.
- Everything that differs per backend (runtime, feeding, distribution, versions) is the backend module's,
  `keras_ref._backend.native` (keras_ref/backend/). The run is recorded under the backend's framework
  label (`keras`, `keras[jax]`, `keras[torch]`).
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
from ftmed_core.data import ExperimentData, Split, eval_batch_rows
from ftmed_core.protocol import Weights, epoch_permutation, steps_per_epoch
from ftmed_core.records import HISTORY_KEYS
from ftmed_core.runner import EpochCallback, FitResult, check_finite, make_train, show_progress
from keras_ref._backend import FRAMEWORK, keras, native
from keras_ref.losses import compile_model
from keras_ref.model import build_mlp, check_layout, logits_model

MODEL_FILE = "model.keras"
CSV_LOG = "keras_log.csv"
# Keras's History keys -> the shared record keys.
HISTORY_FROM_KERAS = {"loss": "train_loss", "accuracy": "train_acc", "val_loss": "val_loss",
                      "val_accuracy": "val_acc"}
# Train steps per call into the compiled function, the backend's (keras_ref/backend/<name>.py); a module
# attribute so that a benchmark can set another value for `fit`.
STEPS_PER_EXECUTION = native.STEPS_PER_EXECUTION
# The backend's runtime setup (devices, threads, seeds, determinism), as `fit` applies it.
configure_runtime = native.configure_runtime
PRECISION_POLICIES = {"32": None, "16-mixed": "mixed_float16", "bf16-mixed": "mixed_bfloat16"}


# ------------------------------------------------------------------------------------------------- data


def epoch_orders(config: ExperimentConfig, n_rows: int) -> np.ndarray:
    """(epochs, n_rows) int64: the core's row order for every epoch. For checks over a few epochs only:
    `fit` never builds it (its memory grows with the epoch count); the backend's `training_batches` draw
    each epoch's order when that epoch starts."""
    return np.stack([epoch_permutation(config.seed, epoch, n_rows, config.shuffle)
                     for epoch in range(config.epochs)])


def predict_split_logits(model: "keras.Model", split: Split, n_classes: int, batch_size: int = 1024) -> np.ndarray:
    """Pre-activation outputs over `split`, streamed in batches of `batch_size` (those of `predict_logits`;
    fewer rows where that many float32 rows would be large, `eval_batch_rows`)."""
    dataset = native.eval_batches(split, n_classes, eval_batch_rows(split.input_dim, batch_size), inputs_only=True)
    logits = logits_model(model).predict(dataset, verbose=0)
    return np.asarray(logits, dtype=np.float32)


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


def fit(config: ExperimentConfig, runtime: RuntimeConfig, data: ExperimentData, weights: Weights,
        run_dir: Path, on_epoch: EpochCallback | None = None) -> FitResult:
    """Train `config` from `weights` with `model.fit`; the adapter function of `run_experiment`."""
    run_dir = Path(run_dir)
    env = configure_runtime(runtime, config.seed)
    check_layout(config, data.input_dim, data.n_classes, weights)
    policy = PRECISION_POLICIES[runtime.precision]
    with native.distribution_scope(runtime, env):
        model = build_mlp(config, data.input_dim, data.n_classes, weights, dtype=policy)
        optimizer = None
        if runtime.precision == "16-mixed":
            from keras_ref.optimizers import build_optimizer

            optimizer = keras.optimizers.LossScaleOptimizer(build_optimizer(config.optimizer))
        compile_model(model, config, optimizer=optimizer, steps_per_execution=STEPS_PER_EXECUTION)

    batches = native.training_batches(data.train, data.n_classes, config.batch_size, config.seed, config.shuffle)
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
    tracker = None
    if runtime.mlflow:
        from keras_ref.mlflow_callback import MLflowCallback

        tracker = MLflowCallback(config, runtime, report.history, steps_per_epoch(len(data.train), config.batch_size))
        callbacks.append(tracker)
    started = time.perf_counter()
    model.fit(
        batches.dataset,
        epochs=config.epochs,
        initial_epoch=initial_epoch,  # Keras passes absolute epoch numbers on, so the batch order follows
        # Streamed in batches of `batch_size`: what `validation_batch_size=batch_size` cut from arrays.
        validation_data=native.eval_batches(data.val, data.n_classes, config.batch_size),
        shuffle=False,  # the order is the dataset's
        callbacks=callbacks,
        verbose="auto" if show_progress(runtime) else 0,
    )
    training_seconds = time.perf_counter() - started
    with native.saving_quietly():
        model.save(run_dir / MODEL_FILE)
    (run_dir / STATE_FILE).unlink(missing_ok=True)  # model.keras now holds the same (and the record follows)
    return FitResult(
        history=report.history,
        test_logits=predict_split_logits(model, data.test, data.n_classes),
        training_seconds=training_seconds,
        environment={**native.versions(), "keras": keras.__version__, "keras_backend": keras.backend.backend(),
                     "steps_per_execution": STEPS_PER_EXECUTION, "jit_compile": native.JIT_COMPILE,
                     "resumed_after_epoch": initial_epoch, **env,
                     **({"mlflow_run_id": tracker.run_id} if tracker else {})},
    )


# The backend is the one keras was imported with (KERAS_BACKEND; `ftmed_core.frameworks.prepare_keras_backend`
# sets it before the import); the record's framework is its label, e.g. `keras[jax]`.
train = make_train(FRAMEWORK, fit)
