"""keras_ref's network, weights layout, weight files, optimizers and backend pin."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from keras_ref import _backend  # noqa: F401  (pins the backend before keras is imported)
from keras_ref._backend import keras
from ftmed_core.config import OPTIMIZER_DEFAULTS, OPTIMIZERS, ExperimentConfig, OptimizerConfig
from ftmed_core.optimizers import REGISTRY
from ftmed_core.errors import ConfigError
from ftmed_core.protocol import initial_weights
from keras_ref.model import build_mlp, get_weights, logits_model, predict_logits, set_weights
from keras_ref.optimizers import build_optimizer
from keras_ref.weights import export_weights, import_weights

CONFIG = ExperimentConfig(hidden_units=(32, 16), hidden_activation="tanh", output_activation="sigmoid")


def test_build_mlp_is_the_studys_layer_stack_with_the_cores_initial_weights():
    model = build_mlp(CONFIG, 20, 9)
    kinds = [(type(layer).__name__, getattr(layer, "units", None)) for layer in model.layers]
    assert kinds == [("Dense", 32), ("Activation", None), ("Dense", 16), ("Activation", None),
                     ("Dense", 9), ("Activation", None)]
    activations = [layer.activation.__name__ for layer in model.layers if type(layer).__name__ == "Activation"]
    assert activations == ["tanh", "tanh", "sigmoid"]
    for (kernel, bias), (k0, b0) in zip(get_weights(model), initial_weights(CONFIG, 20, 9)):
        assert kernel.dtype == np.float32 and kernel.shape == k0.shape
        np.testing.assert_array_equal(kernel, k0)
        np.testing.assert_array_equal(bias, b0)


@pytest.mark.parametrize("hidden", ["relu", "tanh", "sigmoid", "elu", "gelu", "leaky_relu", "selu", "swish"])
def test_every_hidden_activation_builds_with_kerass_definition(hidden):
    config = ExperimentConfig(hidden_units=(8,), hidden_activation=hidden)
    model = build_mlp(config, 4, 3)
    x = np.linspace(-2, 2, 8, dtype=np.float32)
    expected = keras.activations.get(hidden)(x)
    np.testing.assert_allclose(np.asarray(model.layers[1](x)), np.asarray(expected), rtol=0, atol=0)
    if hidden == "leaky_relu":  # Keras's default slope, which the Lightning side must copy
        np.testing.assert_allclose(np.asarray(model.layers[1](np.float32([-1.0]))), [-0.2], rtol=1e-6)


def test_weights_round_trip_and_logits_are_pre_activation():
    model = build_mlp(CONFIG, 20, 9)
    rng = np.random.default_rng(1)
    weights = [(rng.normal(size=k.shape).astype(np.float32), rng.normal(size=b.shape).astype(np.float32))
               for k, b in get_weights(model)]
    set_weights(model, weights)
    for (k, b), (k2, b2) in zip(weights, get_weights(model)):
        np.testing.assert_array_equal(k, k2)
        np.testing.assert_array_equal(b, b2)
    x = rng.random((5, 20), dtype=np.float32)
    h = x
    for i, (k, b) in enumerate(weights):
        h = h @ k + b
        if i < len(weights) - 1:
            h = np.tanh(h)
    np.testing.assert_allclose(predict_logits(model, x), h, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(model.predict(x, verbose=0), 1 / (1 + np.exp(-h)), rtol=1e-4, atol=1e-5)
    assert logits_model(model).layers[-1].name == model.layers[-2].name  # shares the layers


def test_set_weights_rejects_a_wrong_layout():
    model = build_mlp(CONFIG, 20, 9)
    with pytest.raises(ConfigError, match="kernel"):
        set_weights(model, [(k.T, b) for k, b in get_weights(model)])
    with pytest.raises(ConfigError, match="Dense layers"):
        set_weights(model, get_weights(model)[:2])


def test_weight_file_round_trip(tmp_path):
    model = build_mlp(CONFIG, 20, 9)
    rng = np.random.default_rng(2)
    set_weights(model, [(rng.normal(size=k.shape).astype(np.float32), b + 1) for k, b in get_weights(model)])
    path = export_weights(model, tmp_path / "w.npz")
    other = import_weights(build_mlp(CONFIG, 20, 9), path)
    rebuilt = import_weights(CONFIG, path)
    x = rng.random((4, 20), dtype=np.float32)
    reference = predict_logits(model, x)
    np.testing.assert_array_equal(predict_logits(other, x), reference)
    np.testing.assert_array_equal(predict_logits(rebuilt, x), reference)
    with pytest.raises(ConfigError, match="layer sizes"):
        import_weights(ExperimentConfig(hidden_units=(32,)), path)


# Core defaults that differ from Keras 3.15's constructor defaults: none.
CORE_DEFAULT_DIFFERENCES: set = set()


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_explicit_hyperparameters_equal_kerass_defaults(name):
    ours = build_optimizer(OPTIMIZER_DEFAULTS[name]).get_config()
    keras_default = getattr(keras.optimizers, REGISTRY[name].keras_class)().get_config()
    for key, value in keras_default.items():
        if key == "name" or (name, key) in CORE_DEFAULT_DIFFERENCES:
            continue
        assert ours[key] == pytest.approx(value) if isinstance(value, float) else ours[key] == value, key


def test_optimizer_hyperparameters_are_passed_through():
    opt = build_optimizer(OptimizerConfig(name="rmsprop", learning_rate=0.05, rho=0.8, momentum=0.5,
                                          epsilon=1e-5, weight_decay=0.01))
    config = opt.get_config()
    assert (config["learning_rate"], config["rho"], config["momentum"], config["epsilon"],
            config["weight_decay"]) == pytest.approx((0.05, 0.8, 0.5, 1e-5, 0.01))
    with pytest.raises(ConfigError, match="semantics"):
        build_optimizer(OptimizerConfig(semantics="torch"))


@pytest.mark.slow
def test_an_unknown_or_mismatched_keras_backend_is_refused():
    script = textwrap.dedent("""
        import os
        try:
            import keras_ref
        except ImportError as exc:
            print("env:", exc)
        os.environ["KERAS_BACKEND"] = "torch"
        import keras
        os.environ["KERAS_BACKEND"] = "jax"
        try:
            import keras_ref
        except ImportError as exc:
            print("imported:", exc)
    """)
    env = {**os.environ, "KERAS_BACKEND": "numpy"}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert "env: keras_ref runs on the Keras backends tensorflow, jax, torch, but KERAS_BACKEND='numpy'" in out.stdout, \
        out.stderr[-2000:]
    assert "imported: keras was already imported with the 'torch' backend, but KERAS_BACKEND='jax'" in out.stdout
