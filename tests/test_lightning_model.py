"""The model and loss against the core's references: layout, activations, loss for every output
activation in both loss modes, accuracy ties."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from ftmed_core import losses as ref
from ftmed_core.config import HIDDEN_ACTIVATIONS, OUTPUT_ACTIVATIONS, ExperimentConfig
from ftmed_core.protocol import initial_weights
from lightning_ft.losses import activate, correct_count, keras_loss
from lightning_ft.model import build_mlp, get_weights, set_weights

CONFIG = ExperimentConfig(hidden_units=(6, 4))


def test_weights_round_trip_in_neutral_layout():
    weights = initial_weights(CONFIG, 10, 3)
    model = build_mlp(CONFIG, 10, 3)
    for (k, b), (k2, b2) in zip(weights, get_weights(model)):
        assert k2.dtype == np.float32 and np.array_equal(k, k2) and np.array_equal(b, b2)
    assert torch.equal(model[0].weight, torch.from_numpy(weights[0][0].T.copy()))  # weight = kernel.T
    x = np.random.default_rng(0).random((5, 10), dtype=np.float32)
    h = x.astype(np.float64)
    for i, (k, b) in enumerate(weights):
        h = h @ k + b
        h = np.maximum(h, 0) if i < len(weights) - 1 else h
    np.testing.assert_allclose(model(torch.from_numpy(x)).detach().numpy(), h, rtol=1e-5, atol=1e-6)


def test_set_weights_rejects_wrong_shapes():
    model = build_mlp(CONFIG, 10, 3)
    with pytest.raises(ValueError, match="layer 0"):
        set_weights(model, initial_weights(CONFIG, 11, 3))


# Keras 3 activation definitions (keras/src/activations/activations.py), written out in float64.
_SELU_ALPHA, _SELU_SCALE = 1.6732632423543772848170429916717, 1.0507009873554804934193349852946
_erf = np.vectorize(math.erf)
KERAS_ACTIVATIONS = {
    "relu": lambda z: np.maximum(z, 0),
    "tanh": np.tanh,
    "sigmoid": lambda z: 1 / (1 + np.exp(-z)),
    "elu": lambda z: np.where(z > 0, z, np.expm1(z)),
    "gelu": lambda z: 0.5 * z * (1 + _erf(z / np.sqrt(2))),  # approximate=False is Keras's default
    "leaky_relu": lambda z: np.where(z > 0, z, 0.2 * z),  # Keras's default slope is 0.2
    "selu": lambda z: _SELU_SCALE * np.where(z > 0, z, _SELU_ALPHA * np.expm1(z)),
    "swish": lambda z: z / (1 + np.exp(-z)),
}


@pytest.mark.parametrize("activation", HIDDEN_ACTIVATIONS)
def test_hidden_activation_matches_keras_definition(activation):
    model = build_mlp(replace(CONFIG, hidden_units=(8,), hidden_activation=activation), 8, 2)
    z = torch.linspace(-6, 6, 101, dtype=torch.float64)  # float64: the definition, not float32 rounding
    np.testing.assert_allclose(model[1](z).numpy(), KERAS_ACTIVATIONS[activation](z.numpy()), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("loss_mode", ["keras", "probability"])
@pytest.mark.parametrize("output_activation", OUTPUT_ACTIVATIONS)
def test_loss_matches_core_reference(output_activation, loss_mode):
    rng = np.random.default_rng(1)
    logits = (rng.standard_normal((64, 9)) * 3).astype(np.float32)
    logits[0] = 40.0  # saturated sigmoid row: ties, clipping
    labels = rng.integers(0, 9, 64)
    got = keras_loss(torch.from_numpy(logits).double(), torch.from_numpy(labels), output_activation, loss_mode)
    want = ref.mean_loss(logits, labels, output_activation, loss_mode)
    assert got.item() == pytest.approx(want, rel=1e-12, abs=1e-12)
    got32 = keras_loss(torch.from_numpy(logits), torch.from_numpy(labels), output_activation, loss_mode)
    assert got32.item() == pytest.approx(want, rel=1e-5)
    np.testing.assert_allclose(activate(torch.from_numpy(logits).double(), output_activation).numpy(),
                               ref.activate(logits, output_activation), rtol=1e-12, atol=1e-15)


def test_sigmoid_output_trains_like_softmax_under_keras_loss():
    """Keras's shortcut: softmax cross-entropy on the logits for a sigmoid output (same gradient)."""
    logits = torch.randn(16, 9, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, 9, (16,))
    g_soft, = torch.autograd.grad(keras_loss(logits, labels, "softmax", "keras"), logits)
    g_sig, = torch.autograd.grad(keras_loss(logits, labels, "sigmoid", "keras"), logits)
    assert torch.equal(g_soft, g_sig)
    g_prob, = torch.autograd.grad(keras_loss(logits, labels, "sigmoid", "probability"), logits)
    assert not torch.allclose(g_soft, g_prob)


def test_accuracy_uses_activated_output_first_index_on_ties():
    logits = torch.tensor([[20.0, 30.0, 0.0]])  # sigmoid saturates both to 1.0 in float32: tie -> index 0
    assert correct_count(logits, torch.tensor([0]), "sigmoid").item() == 1
    assert correct_count(logits, torch.tensor([1]), "softmax").item() == 1
    scores = ref.activate(logits.numpy().astype(np.float32), "sigmoid").astype(np.float32)
    assert int(np.argmax(scores)) == 0


@pytest.mark.slow
def test_importable_after_tensorflow():
    """`import tensorflow` then lightning (-> triton) segfaulted the process; lightning_ft guards it."""
    import subprocess
    import sys

    code = "import tensorflow, lightning_ft, torchmetrics; print('ok')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env={**__import__("os").environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-2000:]
