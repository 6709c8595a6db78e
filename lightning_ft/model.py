"""The network: `build_mlp(config) -> nn.Sequential`, and weights in/out of the core's neutral layout.

The model is a plain `nn.Module` kept apart from the LightningModule (`system.py`). It ends with the last
Linear layer and returns **logits**: the output activation is applied by `losses.activate`, because Keras's
loss for softmax/sigmoid outputs is computed on the pre-activation logits anyway (see `losses.py`).

Layout: the core's `(kernel (fan_in, fan_out), bias)` pairs; `nn.Linear.weight` is the transposed kernel.
Hidden activations follow Keras 3's defaults (keras/src/activations/activations.py): `gelu` is exact
(erf, approximate=False), `leaky_relu` has negative_slope 0.2 (torch's default is 0.01), `elu` alpha 1,
`swish` = x * sigmoid(x) (torch SiLU), `selu` with the standard constants.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch import nn

from ftmed_core.config import ExperimentConfig
from ftmed_core.protocol import Weights, initial_weights, layer_sizes

HIDDEN_ACTIVATION_MODULES: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "elu": lambda: nn.ELU(alpha=1.0),
    "gelu": lambda: nn.GELU(approximate="none"),
    "leaky_relu": lambda: nn.LeakyReLU(negative_slope=0.2),
    "selu": nn.SELU,
    "swish": nn.SiLU,
}


def build_mlp(config: ExperimentConfig, input_dim: int, n_classes: int, weights: Weights | None = None) -> nn.Sequential:
    """Linear + activation per hidden layer, then a Linear producing logits; weights from the core."""
    if config.hidden_activation not in HIDDEN_ACTIVATION_MODULES:
        raise ValueError(
            f"unknown hidden activation {config.hidden_activation!r}; "
            f"choose one of: {', '.join(HIDDEN_ACTIVATION_MODULES)}"
        )
    sizes = layer_sizes(config, input_dim, n_classes)
    layers: list[nn.Module] = []
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(fan_in, fan_out))
        if i < len(sizes) - 2:
            layers.append(HIDDEN_ACTIVATION_MODULES[config.hidden_activation]())
    model = nn.Sequential(*layers)
    set_weights(model, weights if weights is not None else initial_weights(config, input_dim, n_classes))
    return model


def linear_layers(model: nn.Module) -> list[nn.Linear]:
    return [m for m in model.modules() if isinstance(m, nn.Linear)]


def set_weights(model: nn.Module, weights: Weights) -> None:
    """Copy neutral-layout weights into the model's Linear layers (kernel transposed into `weight`)."""
    layers = linear_layers(model)
    if len(layers) != len(weights):
        raise ValueError(f"model has {len(layers)} Linear layers but {len(weights)} weight pairs were given")
    with torch.no_grad():
        for i, (layer, (kernel, bias)) in enumerate(zip(layers, weights)):
            kernel = np.asarray(kernel, dtype=np.float32)
            bias = np.asarray(bias, dtype=np.float32)
            if kernel.shape != (layer.in_features, layer.out_features) or bias.shape != (layer.out_features,):
                raise ValueError(
                    f"layer {i}: expected kernel {(layer.in_features, layer.out_features)} and bias "
                    f"({layer.out_features},), got {kernel.shape} and {bias.shape}"
                )
            layer.weight.copy_(torch.from_numpy(np.ascontiguousarray(kernel.T)))
            layer.bias.copy_(torch.from_numpy(bias))


def get_weights(model: nn.Module) -> Weights:
    """The model's weights in the neutral layout (float32 numpy, kernel = weight.T)."""
    return [
        (layer.weight.detach().cpu().float().numpy().T.copy(), layer.bias.detach().cpu().float().numpy().copy())
        for layer in linear_layers(model)
    ]


@torch.no_grad()
def predict_logits(model: nn.Module, x, batch_size: int = 4096) -> np.ndarray:
    """Logits of `x` in eval mode, float32 numpy; the one function used for test outputs and reloads.

    `x` is float32 features (tensor or array) or an `ftmed_core.data.Split`, streamed a batch at a time
    (uint8 rows converted on the model's device, bitwise the core's preprocessing).
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    if hasattr(x, "raw_rows"):  # a Split: never materialised whole
        from lightning_ft.datamodule import split_batches

        batches = split_batches(x, batch_size, device)
    else:
        x = torch.as_tensor(x)
        batches = (x[start:start + batch_size].to(device, torch.float32) for start in range(0, len(x), batch_size))
    outputs = [model(batch).float().cpu() for batch in batches]
    model.train(was_training)
    if not outputs:
        return np.zeros((0, linear_layers(model)[-1].out_features), dtype=np.float32)
    return torch.cat(outputs).numpy()
