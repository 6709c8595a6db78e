"""The implementations a parity run compares, as plain values a check calls through.

`Sides(reference, port)`: `reference` is a `KerasSide` (keras_ref on TensorFlow in this process by default,
labelled "keras"), `port` a `TorchSide` (lightning_ft). A check declared for a Keras backend takes its side
from `sides.keras(backend)`: the reference when it runs that backend, else that backend's `KerasSide` in a
child process (`keras_side(backend)`, labelled e.g. "keras[jax]"), the same functions served by
`ftmed_parity.probe`. So every layer's checks run unchanged against every backend; a test plants a bug by
passing `sides.with_port(build_mlp=broken)`, and nothing is monkeypatched.

A `KerasSide` is value-level (configs and numpy arrays in, numbers and arrays out; see
ftmed_parity/keras_side.py); a `TorchSide` hands out lightning_ft's objects, which live in this process.
Also here: how the port is driven for the checks (loss and gradients, one epoch of training), the shared
sample data, and `setup_frameworks()` (both frameworks on CPU, one thread each, quiet). Framework imports
happen inside functions: importing this module stays cheap.
"""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass, fields, replace
from functools import lru_cache, partial
from typing import Any, Callable, Iterable

import numpy as np

from ftmed_core.config import ExperimentConfig

INPUT_DIM = 2352  # PathMNIST 28x28x3, the study's input
N_CLASSES = 9


@dataclass(frozen=True)
class KerasSide:
    """The reference on one Keras backend: `ftmed_parity.keras_side`'s functions (in this process or a child's)."""

    label: str  # keras, keras[jax], keras[torch]
    backend: str
    architecture: Callable
    export_built: Callable
    reexport: Callable
    forward: Callable
    compiled_loss: Callable
    loss_and_gradients: Callable
    sgd_gradients: Callable
    replay: Callable
    train_one_epoch: Callable  # (config, data, weights) -> (losses per step, flat weights after each step)
    train: Callable | None = None  # keras_ref.train (layer 8); in this process only


# The functions a KerasSide carries: `ftmed_parity.keras_side`'s of the same names.
KERAS_FUNCTIONS = tuple(f.name for f in fields(KerasSide) if f.name not in ("label", "backend", "train"))


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

    def keras(self, backend: str = "tensorflow") -> KerasSide:
        """The Keras side on `backend`: the reference when it runs `backend`, else `keras_side(backend)`."""
        if self.reference is not None and self.reference.backend == backend:
            return self.reference
        return keras_side(backend)

    def with_port(self, **changes: Any) -> "Sides":
        return replace(self, port=replace(self.port, **changes))

    def with_reference(self, **changes: Any) -> "Sides":
        return replace(self, reference=replace(self.reference, **changes))


def check_id(base: str, keras_backend: str) -> str:
    """A check's id for `keras_backend`: TensorFlow's is the base id, another backend's ends in @backend."""
    return base if keras_backend == "tensorflow" else f"{base}@{keras_backend}"


def pair_label(keras_backend: str, other: str = "lightning") -> str:
    """The `frameworks` a check for `keras_backend` compares ("" on TensorFlow: the sides' own label)."""
    from ftmed_core.frameworks import keras_label

    return "" if keras_backend == "tensorflow" else f"{keras_label(keras_backend)} vs {other}"


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
    from keras_ref._backend import native, tf

    native.limit_threads(1)
    tf.get_logger().setLevel("ERROR")  # "N out of the last N calls triggered retracing": one model per check
    warnings.filterwarnings("ignore", message=r".*structure of `inputs` doesn't match.*")


@lru_cache(maxsize=1)
def default_sides() -> Sides:
    """keras_ref (TensorFlow backend, this process) vs lightning_ft, as shipped."""
    setup_frameworks()
    import keras_ref
    from ftmed_parity import keras_side as functions

    reference = KerasSide(label="keras", backend="tensorflow", train=keras_ref.train,
                          **{name: getattr(functions, name) for name in KERAS_FUNCTIONS})
    return Sides(reference, default_port())


@lru_cache(maxsize=None)
def keras_side(backend: str) -> KerasSide:
    """keras_ref on `backend` in a child process of its own (`ftmed_parity.probe`), started on first use."""
    from ftmed_core.frameworks import keras_label
    from ftmed_parity.probe import keras_process

    process = keras_process(backend)
    return KerasSide(label=keras_label(backend), backend=backend,
                     **{name: partial(process.call, name) for name in KERAS_FUNCTIONS})


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
    """The port alone, for runs on Keras backends other than TensorFlow (each backend's Keras runs in a child
    process, `Sides.keras`): TensorFlow is not imported."""
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


# ------------------------------------------------------------------------ how each framework is driven


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
