"""keras_ref's two loss modes against the core's numpy reference, in Keras's compiled (graph) path."""

from __future__ import annotations

import numpy as np
import pytest

from keras_ref import _backend  # noqa: F401
from keras_ref._backend import keras, tf
from ftmed_core.config import LOSS_MODES, OUTPUT_ACTIVATIONS, ExperimentConfig
from ftmed_core.data import one_hot
from ftmed_core.losses import mean_loss, per_sample_loss
from keras_ref.losses import compile_model, make_loss, probability_crossentropy
from keras_ref.model import build_mlp, get_weights, predict_logits, set_weights

N, D, C = 64, 12, 9


def model_and_data(output_activation, loss, scale=1.0):
    config = ExperimentConfig(hidden_units=(16,), output_activation=output_activation, loss=loss)
    model = build_mlp(config, D, C)
    # Larger weights spread the logits, so that clipping at 1e-7 / 1 - 1e-7 is exercised too.
    set_weights(model, [(k * scale, b) for k, b in get_weights(model)])
    compile_model(model, config)
    rng = np.random.default_rng(3)
    x = rng.random((N, D), dtype=np.float32)
    labels = rng.integers(0, C, N)
    return model, x, labels


def keras_loss(model, x, labels):
    """The loss Keras's compiled test step computes (the same graph code path as a train step)."""
    return float(model.evaluate(x, one_hot(labels, C), batch_size=N, verbose=0, return_dict=True)["loss"])


@pytest.mark.parametrize("loss", LOSS_MODES)
@pytest.mark.parametrize("output_activation", OUTPUT_ACTIVATIONS)
def test_loss_matches_the_core_reference(output_activation, loss):
    model, x, labels = model_and_data(output_activation, loss)
    logits = predict_logits(model, x)
    if output_activation == "linear":
        # Divide-by-sum is ill-conditioned near a zero sum: compare only where float32 is meaningful.
        keep = np.abs(logits.sum(axis=1)) > 0.5
        x, labels, logits = x[keep], labels[keep], logits[keep]
    expected = mean_loss(logits, labels, output_activation, loss)
    assert keras_loss(model, x, labels) == pytest.approx(expected, rel=2e-5)


@pytest.mark.parametrize("output_activation", ["softmax", "sigmoid"])
def test_probability_mode_does_not_take_the_logits_shortcut(output_activation):
    # Weights x 8: confident outputs, where clipping makes the two definitions differ clearly.
    model_p, x, labels = model_and_data(output_activation, "probability", scale=8.0)
    model_k, _, _ = model_and_data(output_activation, "keras", scale=8.0)
    logits = predict_logits(model_p, x)
    on_probabilities = mean_loss(logits, labels, output_activation, "probability")
    on_logits = mean_loss(logits, labels, output_activation, "keras")
    assert abs(on_probabilities - on_logits) > 0.05 * on_logits  # the test can tell them apart
    assert keras_loss(model_p, x, labels) == pytest.approx(on_probabilities, rel=2e-5)
    assert keras_loss(model_k, x, labels) == pytest.approx(on_logits, rel=2e-5)


def test_kerass_categorical_crossentropy_on_a_sigmoid_output_is_softmax_ce_on_the_logits():
    rng = np.random.default_rng(4)
    logits = (4 * rng.normal(size=(32, C))).astype(np.float32)
    y = one_hot(rng.integers(0, C, 32), C)

    @tf.function  # graph mode, as in training
    def losses(z):
        out = keras.layers.Activation("sigmoid")(z)
        return (keras.losses.categorical_crossentropy(y, out),
                tf.nn.softmax_cross_entropy_with_logits(labels=y, logits=z),
                probability_crossentropy(y, out))

    sigmoid_ce, softmax_ce, literal = (np.asarray(t) for t in losses(tf.constant(logits)))
    np.testing.assert_array_equal(sigmoid_ce, softmax_ce)
    labels = y.argmax(axis=1)
    np.testing.assert_allclose(sigmoid_ce, per_sample_loss(logits, labels, "sigmoid", "keras"), rtol=1e-5)
    np.testing.assert_allclose(literal, per_sample_loss(logits, labels, "sigmoid", "probability"), rtol=1e-5)
    assert not np.allclose(literal, sigmoid_ce, rtol=1e-2)
    # And in a whole model: the compiled loss of a sigmoid-output model equals that of a softmax one.
    sig, x, lab = model_and_data("sigmoid", "keras")
    soft, _, _ = model_and_data("softmax", "keras")
    assert keras_loss(sig, x, lab) == keras_loss(soft, x, lab)


def test_make_loss():
    assert make_loss(ExperimentConfig(loss="keras")) == "categorical_crossentropy"
    assert make_loss(ExperimentConfig(loss="probability")) is probability_crossentropy
