"""`shuffle="fixed"` is a seeded Keras `fit(shuffle=True)`'s policy, and keras_ref trains in that order.

A seeded Keras fit is observed directly: a pass-through layer records the rows each training batch holds
(the inputs are the row numbers), with `run_eagerly=True` so the layer runs in Python. The shuffling itself
happens in Keras's tf.data input pipeline, which `run_eagerly` does not change.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from keras_ref import _backend  # noqa: F401
from keras_ref._backend import keras
from ftmed_core.config import ExperimentConfig, RuntimeConfig
from ftmed_core.data import Split, load_experiment_data, one_hot
from ftmed_core.protocol import batch_bounds, epoch_permutation, initial_weights
from keras_ref.losses import compile_model
from keras_ref.model import build_mlp, get_weights
from keras_ref.backend.tensorflow import CoreBatches
from keras_ref.training import epoch_orders, fit


class _RowRecorder(keras.layers.Layer):
    """Identity layer that hands each training batch's first column to `sink` (a Python callable)."""

    def __init__(self, sink, **kwargs):
        super().__init__(**kwargs)
        self._sink = sink  # a bound method, not a list: Keras would wrap (copy) a list attribute

    def call(self, inputs, training=None):
        if training:
            self._sink(keras.ops.convert_to_numpy(inputs[:, 0]).astype(np.int64))
        return inputs


def _seeded_keras_fit_orders(seed: int, n_rows: int = 50, batch_size: int = 8, epochs: int = 3) -> list:
    """The row order of each epoch of the study's recipe, `fit(validation_split=0.2, shuffle=True)`,
    after `keras.utils.set_random_seed(seed)`."""
    keras.utils.set_random_seed(seed)
    seen: list = []
    x = np.arange(n_rows, dtype=np.float32)[:, None]
    y = np.zeros((n_rows, 1), dtype=np.float32)
    model = keras.Sequential([keras.Input((1,)), _RowRecorder(seen.append), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse", run_eagerly=True)
    model.fit(x, y, batch_size=batch_size, epochs=epochs, validation_split=0.2, shuffle=True, verbose=0)
    steps = -(-int(n_rows * 0.8) // batch_size)
    assert len(seen) == steps * epochs
    return [np.concatenate(seen[e * steps:(e + 1) * steps]) for e in range(epochs)]


def test_seeded_keras_fit_reuses_one_permutation_which_is_the_fixed_policy():
    orders = _seeded_keras_fit_orders(seed=3)
    n_train = 40  # validation_split=0.2 keeps the last 10 of 50 rows out
    np.testing.assert_array_equal(np.sort(orders[0]), np.arange(n_train))
    assert not np.array_equal(orders[0], np.arange(n_train))  # shuffled ...
    for order in orders[1:]:
        np.testing.assert_array_equal(order, orders[0])  # ... by the same permutation in every epoch
    assert not np.array_equal(_seeded_keras_fit_orders(seed=4)[0], orders[0])  # which the seed picks
    # ftmed's "fixed" has that policy (its permutation is the core's, from the seed); "per-epoch" does not.
    fixed = [epoch_permutation(3, epoch, n_train, "fixed") for epoch in range(3)]
    assert all(np.array_equal(f, fixed[0]) for f in fixed) and not np.array_equal(fixed[0], np.arange(n_train))
    per_epoch = [epoch_permutation(3, epoch, n_train, "per-epoch") for epoch in range(3)]
    assert not np.array_equal(per_epoch[0], per_epoch[1])


def test_core_batches_repeat_one_order_under_fixed():
    config = ExperimentConfig(epochs=3, batch_size=16, seed=7, shuffle="fixed")
    n = 50
    x = np.arange(n * 2, dtype=np.float32).reshape(n, 2)
    batches = CoreBatches(Split(x, np.arange(n) % 9), 9, config.batch_size, config.seed, config.shuffle)
    seen = []
    for epoch in range(config.epochs):
        batches.callback.on_epoch_begin(epoch)
        seen.append(np.concatenate([np.asarray(xb)[:, 0] for xb, _ in batches.dataset]))
    expected = x[epoch_permutation(7, 0, n, "per-epoch"), 0]
    for rows in seen:
        np.testing.assert_array_equal(rows, expected)


@pytest.fixture(scope="module")
def data(synth_dir):
    return load_experiment_data(ExperimentConfig(data_dir=str(synth_dir)))


@pytest.mark.slow
def test_fit_under_fixed_trains_in_one_order_every_epoch(data, synth_dir, tmp_path):
    """keras_ref.fit with shuffle="fixed" equals train_on_batch over epoch 0's order, repeated."""
    config = ExperimentConfig(data_dir=str(synth_dir), epochs=2, hidden_units=(16,), shuffle="fixed", seed=2)
    weights = initial_weights(config, data.input_dim, 9)
    fit(config, RuntimeConfig(progress=False), data, weights, tmp_path)
    ours = get_weights(keras.saving.load_model(tmp_path / "model.keras"))
    model = compile_model(build_mlp(config, data.input_dim, 9, weights), config)
    y = one_hot(data.y_train, 9)
    order = epoch_permutation(config.seed, 0, len(y), "per-epoch")
    for _ in range(config.epochs):
        for start, stop in batch_bounds(len(y), config.batch_size):
            model.train_on_batch(data.x_train[order[start:stop]], y[order[start:stop]])
    for (k1, b1), (k2, b2) in zip(ours, get_weights(model)):
        np.testing.assert_array_equal(k1, k2)
        np.testing.assert_array_equal(b1, b2)
    # and it is not what per-epoch training gives
    per_epoch = tmp_path / "per-epoch"
    per_epoch.mkdir()
    fit(replace(config, shuffle="per-epoch"), RuntimeConfig(progress=False), data, weights, per_epoch)
    other = get_weights(keras.saving.load_model(per_epoch / "model.keras"))
    assert not np.array_equal(other[0][0], ours[0][0])
