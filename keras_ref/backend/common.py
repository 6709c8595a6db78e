"""Keras code the JAX and torch backend modules share: the core's batches as a `keras.utils.PyDataset`, the
epoch callback, seeds without TensorFlow, the one-device checks and scope, quiet saving, the outputs as they
are. Imported after keras has loaded."""

from __future__ import annotations

import contextlib
import random

import keras
import numpy as np

from ftmed_core.config import RuntimeConfig
from ftmed_core.data import Split, one_hot
from ftmed_core.errors import ConfigError
from ftmed_core.protocol import epoch_permutation, steps_per_epoch
from keras_ref.backend import native_startup_lines_hidden


def seed_keras_and_numpy(seed: int) -> None:
    """What `keras.utils.set_random_seed` does, minus `tf.random.set_seed`: that call imports TensorFlow
    (when installed) into a JAX or torch process. Nothing in keras_ref draws from these generators (weights
    and batch order come from the core); they are seeded so that any Keras-side randomness repeats."""
    from keras.src.backend.common import global_state
    from keras.src.random import seed_generator
    from keras.src.utils import rng_utils

    global_state.set_global_attribute(rng_utils.GLOBAL_RANDOM_SEED, seed)
    global_state.set_global_attribute(seed_generator.GLOBAL_SEED_GENERATOR, None)
    random.seed(seed)
    np.random.seed(seed)


def distribution_scope(runtime: RuntimeConfig, env: dict):
    """One device: no distribution strategy to enter."""
    return contextlib.nullcontext()


def saving_quietly():
    """Keras's saving code imports TensorFlow when it is installed, whatever the backend."""
    return native_startup_lines_hidden()


def fresh_output(y_pred):
    """The outputs as they are: only TensorFlow attaches logits to activated outputs."""
    return y_pred


def check_one_device(runtime: RuntimeConfig, backend: str) -> None:
    """ConfigError for what keras_ref runs on TensorFlow only: several devices (MirroredStrategy), MPS, loss
    scaling (16-mixed)."""
    if runtime.num_nodes != 1 or runtime.devices != 1:
        raise ConfigError(f"keras_ref on the {backend} backend trains on one device; got devices="
                          f"{runtime.devices}, num_nodes={runtime.num_nodes}")
    if runtime.accelerator == "mps":
        raise ConfigError(f"accelerator 'mps' is not supported by keras_ref on {backend}; choose auto, cpu or gpu")
    if runtime.precision == "16-mixed":
        raise ConfigError(f"precision 16-mixed (loss scaling) is TensorFlow-only in keras_ref; on {backend} use "
                          f"32 or bf16-mixed")


class CoreBatchSequence(keras.utils.PyDataset):
    """The core's batches of a split as a `keras.utils.PyDataset` (numpy arrays): batch i of the current
    epoch's order under the shuffle policy (file order for `shuffle="none"`, as for evaluation).

    `callback` sets `epoch` at the start of each Keras epoch; Keras builds the epoch's iterator after
    `on_epoch_begin`, and with one worker and `fit(shuffle=False)` it reads the batches in index order in
    the training thread. Each batch is gathered from the split's memory map and converted to float32 on
    its own (`Split.rows`), so memory holds one epoch's order and one batch, never a split; the last
    partial batch is kept.
    """

    def __init__(self, split: Split, n_classes: int, batch_size: int, seed: int = 0,
                 shuffle: str | bool = "none"):
        super().__init__(workers=1, use_multiprocessing=False)
        self.split, self.n_classes, self.batch_size = split, n_classes, batch_size
        self.seed, self.shuffle = seed, shuffle
        self.epoch = 0
        self.steps = steps_per_epoch(len(split), batch_size)
        self.callback = SetEpoch(self)
        self._order: tuple[int, np.ndarray | None] | None = None

    @property
    def dataset(self) -> "CoreBatchSequence":
        """What `fit` consumes (as `CoreBatches.dataset` on TensorFlow): the sequence itself."""
        return self

    def __len__(self) -> int:
        return self.steps

    def order(self) -> np.ndarray | None:
        """This epoch's row order (None: file order), drawn once per epoch."""
        if self._order is None or self._order[0] != self.epoch:
            order = (None if self.shuffle in (False, "none")
                     else epoch_permutation(self.seed, self.epoch, len(self.split), self.shuffle))
            self._order = (self.epoch, order)
        return self._order[1]

    def __getitem__(self, index: int):
        if not 0 <= index < self.steps:
            raise IndexError(index)
        start, stop = index * self.batch_size, min((index + 1) * self.batch_size, len(self.split))
        order = self.order()
        rows = slice(start, stop) if order is None else order[start:stop]
        return self.split.rows(rows), one_hot(self.split.labels[rows], self.n_classes)


class SetEpoch(keras.callbacks.Callback):
    """Sets `batches.epoch` (a CoreBatchSequence's or the TensorFlow module's CoreBatches') at each epoch's
    start."""

    def __init__(self, batches):
        super().__init__()
        self.batches = batches

    def on_epoch_begin(self, epoch, logs=None):
        self.batches.epoch = epoch


def eval_sequence(split: Split, n_classes: int, batch_size: int, inputs_only: bool = False) -> CoreBatchSequence:
    """`split` in file order as a CoreBatchSequence. Batches stay `(x, y)` with `inputs_only`: Keras's
    `predict` reads x from them."""
    return CoreBatchSequence(split, n_classes, batch_size)
