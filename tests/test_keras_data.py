"""Keras on the memory-mapped, per-batch-converted data: bitwise the old in-memory path; large sizes; epochs."""

from __future__ import annotations

import numpy as np
import pytest

from keras_ref import _backend  # noqa: F401  (pins the backend before keras is imported)
from keras_ref._backend import keras, tf
from ftmed_core.config import MAX_EPOCHS, ExperimentConfig, RuntimeConfig
from ftmed_core.data import load_experiment_data, one_hot
from ftmed_core.protocol import initial_weights
from ftmed_core.synth import write_synthetic
from keras_ref.losses import compile_model
from keras_ref.model import build_mlp, get_weights, predict_logits
from keras_ref import training as keras_train

RUNTIME = RuntimeConfig(progress=False)  # as test_keras_train: TF fixes its threads at the first fit in a process


class OldCoreBatches:
    """keras_ref's pipeline before this change: every epoch's order up front, whole float32 arrays, tf.gather."""

    def __init__(self, x, y_onehot, orders, batch_size):
        n_rows = orders.shape[1]
        n_full = n_rows // batch_size
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False)
        orders_tensor, epoch = tf.constant(orders, dtype=tf.int64), self.epoch

        def this_epoch(_):
            order = tf.gather(orders_tensor, epoch.read_value())
            batches = tf.data.Dataset.from_tensor_slices(tf.reshape(order[: n_full * batch_size], [n_full, batch_size]))
            if n_rows % batch_size:
                batches = batches.concatenate(tf.data.Dataset.from_tensors(order[n_full * batch_size:]))
            return batches

        indices = tf.data.Dataset.range(1).flat_map(this_epoch)
        arrays = tf.data.Dataset.from_tensors((tf.convert_to_tensor(x), tf.convert_to_tensor(y_onehot))).repeat()
        dataset = tf.data.Dataset.zip((indices, arrays)).map(
            lambda rows, t: (tf.gather(t[0], rows, axis=0), tf.gather(t[1], rows, axis=0)))
        dataset = dataset.apply(tf.data.experimental.assert_cardinality(-(-n_rows // batch_size)))
        options = tf.data.Options()
        options.experimental_optimization.apply_default_optimizations = False
        options.experimental_external_state_policy = tf.data.experimental.ExternalStatePolicy.IGNORE
        self.dataset = dataset.with_options(options).prefetch(tf.data.AUTOTUNE)
        outer = self

        class SetEpoch(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                outer.epoch.assign(epoch)

        self.callback = SetEpoch()


def old_fit(config, data, weights):
    """keras_ref.fit before this change, data-wise: float32 arrays made up front, arrays for val and test."""
    keras_train.configure_runtime(RUNTIME, config.seed)
    model = build_mlp(config, data.input_dim, data.n_classes, weights)
    compile_model(model, config, steps_per_execution=keras_train.STEPS_PER_EXECUTION)
    x_train, x_val, x_test = data.x_train, data.x_val, data.x_test  # the whole-array conversions
    batches = OldCoreBatches(x_train, one_hot(data.y_train, data.n_classes),
                             keras_train.epoch_orders(config, len(x_train)), config.batch_size)
    report = keras_train.EpochReport(config.epochs)
    model.fit(batches.dataset, epochs=config.epochs, validation_data=(x_val, one_hot(data.y_val, data.n_classes)),
              validation_batch_size=config.batch_size, shuffle=False, callbacks=[batches.callback, report], verbose=0)
    return report.history, get_weights(model), predict_logits(model, x_test)


@pytest.mark.slow
@pytest.mark.parametrize("shuffle", [True, False])
def test_memory_mapped_training_is_bitwise_the_old_in_memory_path(synth_dir, tmp_path, shuffle):
    config = ExperimentConfig(data_dir=str(synth_dir), epochs=2, shuffle=shuffle)
    data = load_experiment_data(config)
    assert isinstance(data.train.images, np.memmap) and data.train.images.dtype == np.uint8
    weights = initial_weights(config, data.input_dim, data.n_classes)
    new = keras_train.fit(config, RUNTIME, data, weights, tmp_path)
    new_weights = get_weights(keras.saving.load_model(tmp_path / keras_train.MODEL_FILE))
    history, old_weights, old_logits = old_fit(config, data, weights)
    for key in ("train_loss", "train_acc", "val_loss", "val_acc"):  # epoch_seconds is wall time
        assert new.history[key] == history[key], key
    for (k1, b1), (k2, b2) in zip(new_weights, old_weights):
        assert k1.tobytes() == k2.tobytes() and b1.tobytes() == b2.tobytes()
    assert new.test_logits.tobytes() == old_logits.tobytes()


def test_epoch_orders_are_drawn_per_epoch_so_a_huge_epoch_count_starts(synth_dir, tmp_path):
    # Orders drawn up front would take epochs x rows x 8 bytes before the first step.
    config = ExperimentConfig(data_dir=str(synth_dir), epochs=MAX_EPOCHS, hidden_units=(8,))
    data = load_experiment_data(config)

    class FirstEpochDone(Exception):
        pass

    def stop(epoch, total, values):
        assert (epoch, total) == (1, MAX_EPOCHS) and np.isfinite(values["train_loss"])
        raise FirstEpochDone

    with pytest.raises(FirstEpochDone):
        keras_train.fit(config, RUNTIME, data, initial_weights(config, data.input_dim, 9), tmp_path, on_epoch=stop)


@pytest.mark.slow
@pytest.mark.parametrize("size", [64, 128, 224])
def test_large_images_train_one_epoch(tmp_path_factory, size):
    folder = tmp_path_factory.mktemp(f"px{size}")
    write_synthetic(folder, "pathmnist", size, scale=0.001, seed=0)
    config = ExperimentConfig(data_dir=str(folder), size=size, epochs=1, hidden_units=(16,))
    record = keras_train.train(config, run_dir=tmp_path_factory.mktemp("run"), runtime=RUNTIME)
    assert record.finished, record.error
    assert record.data["input_dim"] == size * size * 3
    assert len(record.history["train_loss"]) == 1 and np.isfinite(record.history["val_loss"][0])
