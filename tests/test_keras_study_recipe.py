"""The study's own Keras recipe, rebuilt next to keras_ref: same split, same losses, same steps.

The study: `Sequential([Dense, Activation, ...])`, `compile(Adam(), "categorical_crossentropy",
["accuracy"])`, one-hot labels, `model.fit(x, y, validation_split=0.2, batch_size=128)`.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from keras_ref import _backend  # noqa: F401
from keras_ref._backend import keras
from ftmed_core.config import RuntimeConfig
from ftmed_core.data import Split, load_experiment_data, load_npz, one_hot, preprocess_images
from ftmed_core.losses import mean_loss
from ftmed_core.protocol import batch_bounds, epoch_permutation, initial_weights
from keras_ref.losses import compile_model
from keras_ref.model import build_mlp, get_weights, predict_logits
from keras_ref.backend.tensorflow import CoreBatches
from keras_ref.training import fit


def study_model(config, input_dim, n_classes, weights):
    """The study's network and compile call, written the way the study wrote them."""
    layers = [keras.Input(shape=(input_dim,))]
    for units in config.hidden_units:
        layers += [keras.layers.Dense(units), keras.layers.Activation(config.hidden_activation)]
    layers += [keras.layers.Dense(n_classes), keras.layers.Activation(config.output_activation)]
    model = keras.Sequential(layers)
    dense = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    for layer, (kernel, bias) in zip(dense, weights):
        layer.set_weights([kernel, bias])
    model.compile(optimizer=keras.optimizers.Adam(), loss="categorical_crossentropy", metrics=["accuracy"])
    return model


@pytest.fixture(scope="module")
def study(synth_dir):
    from ftmed_core.config import ExperimentConfig

    config = ExperimentConfig(data_dir=str(synth_dir), epochs=1)
    raw = load_npz(synth_dir / "pathmnist.npz", "pathmnist", 28)
    x_full = preprocess_images(raw.images["train"])
    y_full = one_hot(raw.labels["train"], 9)
    data = load_experiment_data(config)
    return config, x_full, y_full, data


def test_validation_split_rows_are_the_cores_holdout_rows(study):
    config, x_full, y_full, data = study
    model = study_model(config, data.input_dim, 9, initial_weights(config, data.input_dim, 9))
    history = model.fit(x_full, y_full, validation_split=0.2, batch_size=128, epochs=1, verbose=0)
    reported = history.history["val_loss"][-1]
    # Keras validates on end-of-epoch weights: evaluate those on the core's val rows.
    on_core_rows = model.evaluate(data.x_val, one_hot(data.y_val, 9), batch_size=128, verbose=0)[0]
    assert reported == pytest.approx(on_core_rows, rel=1e-6)
    n_val = len(data.y_val)
    assert n_val == len(x_full) - int(np.floor(len(x_full) * 0.8))
    np.testing.assert_array_equal(data.x_val, x_full[-n_val:])
    on_first_rows = model.evaluate(x_full[:n_val], y_full[:n_val], batch_size=128, verbose=0)[0]
    assert abs(on_first_rows - reported) > 1e-4  # the comparison can tell other rows apart


@pytest.mark.slow
def test_without_shuffling_keras_ref_reproduces_the_study_fit_bit_for_bit(study, tmp_path):
    # shuffle=False: both visit the training rows in file order, so the batches are the same.
    config, x_full, y_full, data = study
    config = replace(config, shuffle=False)
    weights = initial_weights(config, data.input_dim, 9)
    ours = fit(config, RuntimeConfig(progress=False), data, weights, tmp_path)
    model = study_model(config, data.input_dim, 9, weights)
    theirs = model.fit(x_full, y_full, validation_split=0.2, batch_size=128, epochs=1, shuffle=False,
                       verbose=0).history
    # Bitwise: keras_ref's steps_per_execution=16 and tf.data pipeline change nothing numerically.
    assert ours.history["train_loss"] == theirs["loss"]
    assert ours.history["val_loss"] == theirs["val_loss"]
    assert ours.history["train_acc"] == theirs["accuracy"]
    reloaded = keras.saving.load_model(tmp_path / "model.keras")
    for (k1, b1), (k2, b2) in zip(get_weights(reloaded), get_weights(model)):
        np.testing.assert_array_equal(k1, k2)
        np.testing.assert_array_equal(b1, b2)


def _both_models_and_first_batches(study, n_batches: int = 3):
    """keras_ref's model and the study's recipe from the same weights, and the first batches of epoch 0."""
    config, _, _, data = study
    weights = initial_weights(config, data.input_dim, 9)
    ours = compile_model(build_mlp(config, data.input_dim, 9), config)
    theirs = study_model(config, data.input_dim, 9, weights)
    order = epoch_permutation(config.seed, 0, len(data.y_train))
    batches = [order[start:stop] for start, stop in batch_bounds(len(order), config.batch_size)[:n_batches]]
    return config, data, weights, ours, theirs, batches


def test_same_loss_for_the_same_weights_and_batch(study):
    config, data, _, ours, theirs, batches = _both_models_and_first_batches(study)
    for rows in batches:
        xb, yb = data.x_train[rows], one_hot(data.y_train[rows], 9)
        loss_ours = ours.test_on_batch(xb, yb, return_dict=True)["loss"]
        loss_theirs = theirs.test_on_batch(xb, yb, return_dict=True)["loss"]
        assert loss_ours == loss_theirs
        core = mean_loss(predict_logits(ours, xb), data.y_train[rows], config.output_activation, config.loss)
        assert loss_ours == pytest.approx(core, rel=1e-6)


def test_same_update_per_step(study):
    _, data, weights, ours, theirs, batches = _both_models_and_first_batches(study)
    for step, rows in enumerate(batches):
        xb, yb = data.x_train[rows], one_hot(data.y_train[rows], 9)
        ours.train_on_batch(xb, yb)
        theirs.train_on_batch(xb, yb)
        for (k1, b1), (k2, b2) in zip(get_weights(ours), get_weights(theirs)):
            np.testing.assert_array_equal(k1, k2, err_msg=f"step {step}")
            np.testing.assert_array_equal(b1, b2, err_msg=f"step {step}")
    assert not np.array_equal(get_weights(ours)[0][0], weights[0][0])  # the steps did move the weights


def test_the_dataset_yields_the_cores_batches_in_order():
    from ftmed_core.config import ExperimentConfig

    config = ExperimentConfig(epochs=3, batch_size=32, seed=5)
    n = 100  # 3 full batches and a partial one of 4
    x = np.arange(n * 2, dtype=np.float32).reshape(n, 2)
    y = one_hot(np.arange(n) % 9, 9)
    batches = CoreBatches(Split(x, np.arange(n) % 9), 9, config.batch_size, config.seed)
    assert batches.steps == 4
    for epoch in range(config.epochs):
        batches.callback.on_epoch_begin(epoch)
        got = [(np.asarray(xb), np.asarray(yb)) for xb, yb in batches.dataset]
        order = epoch_permutation(config.seed, epoch, n)
        expected = [order[start:stop] for start, stop in batch_bounds(n, config.batch_size)]
        assert len(got) == len(expected) == 4
        for (xb, yb), rows in zip(got, expected):
            np.testing.assert_array_equal(xb, x[rows])
            np.testing.assert_array_equal(yb, y[rows])


@pytest.mark.slow
def test_fit_follows_the_cores_order_every_epoch(study, tmp_path):
    # The reference for "the core's batch order": train_on_batch over epoch_permutation + batch_bounds.
    config, _, _, data = study
    config = replace(config, epochs=2, hidden_units=(32,))
    weights = initial_weights(config, data.input_dim, 9)
    fit(config, RuntimeConfig(progress=False), data, weights, tmp_path)
    ours = get_weights(keras.saving.load_model(tmp_path / "model.keras"))
    model = compile_model(build_mlp(config, data.input_dim, 9, weights), config)
    y = one_hot(data.y_train, 9)
    for epoch in range(config.epochs):
        order = epoch_permutation(config.seed, epoch, len(y))
        for start, stop in batch_bounds(len(y), config.batch_size):
            model.train_on_batch(data.x_train[order[start:stop]], y[order[start:stop]])
    for (k1, b1), (k2, b2) in zip(ours, get_weights(model)):
        np.testing.assert_array_equal(k1, k2)
        np.testing.assert_array_equal(b1, b2)
