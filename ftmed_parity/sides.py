"""The two implementations a parity run compares, as plain values a check calls through.

`Sides(reference, port)`: `reference` is a `KerasSide` (keras_ref on TensorFlow by default, labelled
"keras"; another Keras backend is another `KerasSide` with its own label, e.g. "keras[jax]"), `port` a
`TorchSide` (lightning_ft). Checks reach a framework only through these fields, so a test plants a bug by
passing `sides.with_port(build_mlp=broken)`, and nothing is monkeypatched.

Also here: how each framework is driven for the checks (loss and gradients, one epoch of training),
the shared sample data, and `setup_frameworks()` (both frameworks on CPU, one thread each, quiet).
Framework imports happen inside functions: importing this module stays cheap.
"""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any, Callable, Iterable

import numpy as np

from ftmed_core.config import ExperimentConfig

INPUT_DIM = 2352  # PathMNIST 28x28x3, the study's input
N_CLASSES = 9


@dataclass(frozen=True)
class KerasSide:
    """The reference: Keras functions the checks call (weights in the core's layout everywhere)."""

    label: str
    build_mlp: Callable
    get_weights: Callable
    logits_model: Callable
    compile_model: Callable
    export_weights: Callable
    import_weights: Callable
    build_optimizer: Callable
    loss_and_gradients: Callable  # net -> step(x, y_onehot) -> (loss, gradients), as `fit` differentiates
    train_one_epoch: Callable  # (config, data, weights) -> (losses per step, flat weights after each step)
    train: Callable  # keras_ref.train: (config, runtime=, runs_dir=) -> RunRecord


@dataclass(frozen=True)
class TorchSide:
    """The port: lightning_ft functions the checks call."""

    label: str
    build_mlp: Callable
    get_weights: Callable
    linear_layers: Callable
    activate: Callable
    keras_loss: Callable
    build_optimizer: Callable
    train_one_epoch: Callable
    train: Callable


@dataclass(frozen=True)
class Sides:
    reference: KerasSide | None  # None: no TensorFlow in this run (`port_sides()`, other backends only)
    port: TorchSide

    @property
    def label(self) -> str:
        return f"{self.reference.label} vs {self.port.label}" if self.reference is not None else self.port.label

    def with_port(self, **changes: Any) -> "Sides":
        return replace(self, port=replace(self.port, **changes))

    def with_reference(self, **changes: Any) -> "Sides":
        return replace(self, reference=replace(self.reference, **changes))


@lru_cache(maxsize=None)
def setup_port() -> None:
    """torch on 1 thread; Lightning quiet. Idempotent; imports no TensorFlow."""
    import lightning_ft  # noqa: F401  (first: its import guard keeps triton away from an already loaded TF)
    import torch

    torch.set_num_threads(1)
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    for message in (r".*does not have many workers.*", r".*GPU available but not used.*",
                    r".*smaller than the logging interval.*", r".*isinstance\(treespec, LeafSpec\).*"):
        warnings.filterwarnings("ignore", message=message)


@lru_cache(maxsize=None)
def setup_frameworks() -> None:
    """torch and TensorFlow on 1 thread each; quiet. Idempotent; TF threads only if TF is not running yet."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    setup_port()
    from keras_ref._backend import tf

    for setter in (tf.config.threading.set_intra_op_parallelism_threads,
                   tf.config.threading.set_inter_op_parallelism_threads):
        try:
            setter(1)
        except RuntimeError:  # TF already initialised (e.g. by another test): keep its threads
            pass
    tf.get_logger().setLevel("ERROR")  # "N out of the last N calls triggered retracing": one model per check
    warnings.filterwarnings("ignore", message=r".*structure of `inputs` doesn't match.*")


@lru_cache(maxsize=1)
def default_sides() -> Sides:
    """keras_ref (TensorFlow backend) vs lightning_ft, as shipped."""
    setup_frameworks()
    import keras_ref
    from keras_ref import losses as keras_losses
    from keras_ref import model as keras_model
    from keras_ref import optimizers as keras_optimizers
    from keras_ref import weights as keras_weights

    reference = KerasSide(
        label="keras", build_mlp=keras_model.build_mlp, get_weights=keras_model.get_weights,
        logits_model=keras_model.logits_model, compile_model=keras_losses.compile_model,
        export_weights=keras_weights.export_weights, import_weights=keras_weights.import_weights,
        build_optimizer=keras_optimizers.build_optimizer, loss_and_gradients=tf_loss_and_gradients,
        train_one_epoch=keras_train_one_epoch, train=keras_ref.train)
    return Sides(reference, default_port())


@lru_cache(maxsize=1)
def default_port() -> TorchSide:
    """lightning_ft, as shipped (imports no TensorFlow)."""
    setup_port()
    import lightning_ft
    from lightning_ft import losses as lightning_losses
    from lightning_ft import model as lightning_model
    from lightning_ft import optimizers as lightning_optimizers

    return TorchSide(
        label="lightning", build_mlp=lightning_model.build_mlp, get_weights=lightning_model.get_weights,
        linear_layers=lightning_model.linear_layers, activate=lightning_losses.activate,
        keras_loss=lightning_losses.keras_loss, build_optimizer=lightning_optimizers.build_optimizer,
        train_one_epoch=lightning_train_one_epoch, train=lightning_ft.train)


def port_sides() -> Sides:
    """The port alone, for runs on Keras backends other than TensorFlow (their Keras runs in a child process,
    ftmed_parity/backends.py): TensorFlow is not imported."""
    return Sides(None, default_port())


# ------------------------------------------------------------------------------------ shared helpers


@lru_cache(maxsize=4)
def sample_data(n_rows: int = 64, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """`n_rows` synthetic PathMNIST-format images preprocessed like the study (pixels/255, flattened), labels."""
    from ftmed_core.data import preprocess_images
    from ftmed_core.synth import make_synthetic

    arrays = make_synthetic("pathmnist", 28, scale=0.01, seed=seed)
    x = preprocess_images(arrays["train_images"][:n_rows])
    y = arrays["train_labels"][:n_rows, 0].astype(np.int64)
    return x, y


def one_hot(labels: np.ndarray, n_classes: int = N_CLASSES) -> np.ndarray:
    """The core's one-hot labels (`ftmed_core.data.one_hot`) with the suite's class count as default."""
    from ftmed_core.data import one_hot as core_one_hot

    return core_one_hot(labels, n_classes)


def max_diff(a: Iterable[np.ndarray], b: Iterable[np.ndarray]) -> float:
    return max(float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64)))) for x, y in zip(a, b))


def flat(weights) -> list[np.ndarray]:
    return [array for pair in weights for array in pair]


def keras_compiled(side: KerasSide, config: ExperimentConfig, weights, input_dim: int = INPUT_DIM,
                   n_classes: int = N_CLASSES):
    net = side.build_mlp(config, input_dim, n_classes, weights)
    side.compile_model(net, config)
    return net


# ------------------------------------------------------------------------ how each framework is driven


def tf_loss_and_gradients(net):
    """A `tf.function` computing what Keras's `train_step` differentiates: compute_loss inside a tape."""
    from keras_ref._backend import tf

    @tf.function(jit_compile=False, reduce_retracing=True)
    def step(x, y):
        with tf.GradientTape() as tape:
            y_pred = net(x, training=True)
            loss = net.compute_loss(x=x, y=y, y_pred=y_pred, training=True)
        return loss, tape.gradient(loss, net.trainable_variables)

    return step


def torch_loss_and_gradients(side: TorchSide, net, x: np.ndarray, y: np.ndarray, output: str, mode: str):
    """Loss and gradients (neutral layout: kernels (fan_in, fan_out)) through the port's loss."""
    import torch

    net.zero_grad(set_to_none=True)
    loss = side.keras_loss(net(torch.from_numpy(x)), torch.from_numpy(y), output, mode)
    loss.backward()
    grads = []
    for p in net.parameters():
        g = p.grad.detach().numpy()
        grads.append(g.T.copy() if g.ndim == 2 else g.copy())
    return float(loss.detach()), grads


def keras_train_one_epoch(config: ExperimentConfig, data, weights) -> tuple[list[float], list]:
    """Keras's own train step (`train_on_batch`, the function `fit` runs) over keras_ref's epoch batches."""
    from keras_ref import losses as keras_losses
    from keras_ref import model as keras_model
    from keras_ref import training as keras_train
    net = keras_model.build_mlp(config, data.input_dim, data.n_classes, weights)
    keras_losses.compile_model(net, config)
    n = len(data.y_train)
    # The pipeline `fit` trains on; a pass is epoch 0 until told otherwise.
    batches = keras_train.CoreBatches(data.train, data.n_classes, config.batch_size, config.seed,
                                      config.shuffle).dataset
    losses, weights_after = [], []
    for xb, yb in batches.take(-(-n // config.batch_size)):
        losses.append(float(net.train_on_batch(xb, yb, return_dict=True)["loss"]))
        weights_after.append(flat(keras_model.get_weights(net)))
    return losses, weights_after


def lightning_train_one_epoch(config: ExperimentConfig, data, weights) -> tuple[list[float], list]:
    """lightning_ft's MLPSystem + MedMNISTDataModule under a Lightning Trainer (CPU, 32-true), one epoch."""
    import lightning.pytorch as L

    from lightning_ft import model as lightning_model
    from lightning_ft.datamodule import MedMNISTDataModule
    from lightning_ft.system import MLPSystem

    losses, weights_after = [], []

    class Record(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            losses.append(float(outputs["loss"]))
            weights_after.append(flat(lightning_model.get_weights(pl_module.model)))

    system = MLPSystem(replace(config, epochs=1).to_dict(), data.input_dim, data.n_classes, weights=weights)
    trainer = L.Trainer(accelerator="cpu", devices=1, precision="32-true", max_epochs=1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        num_sanity_val_steps=0, limit_val_batches=0, callbacks=[Record()], deterministic=False)
    trainer.fit(system, datamodule=MedMNISTDataModule(data, replace(config, epochs=1)))
    return losses, weights_after
