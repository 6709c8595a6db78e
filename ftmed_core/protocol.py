"""What both frameworks must share bit for bit: initial weights, batch order, and the loss definition.

Initial weights: Keras's seeded draws cannot be reproduced in torch by seeding, and torch's default
`nn.Linear` init differs from Keras's (glorot-uniform kernels, zero biases). So the core draws the numbers
with numpy from the seed and hands them to both frameworks.

Layout (framework-neutral, = Keras's): a list with one `(kernel, bias)` pair per Dense layer, kernel
float32 shaped (fan_in, fan_out), bias float32 shaped (fan_out,). torch's `nn.Linear.weight` is the
transposed kernel (fan_out, fan_in).

Batch order: a permutation of the training rows per epoch, by the config's shuffle policy -- "per-epoch"
draws one from (seed, epoch), "fixed" draws epoch 0's and reuses it every epoch (what a seeded Keras
`fit(shuffle=True)` does), "none" keeps file order; batches are consecutive slices of `batch_size` with
the last partial batch kept, as Keras's `fit` does.
"""

from __future__ import annotations

import numpy as np

from ftmed_core.config import ExperimentConfig

# Distinct streams so that, e.g., changing the network never changes the batch order.
_INIT_STREAM = 0x1A17
_ORDER_STREAM = 0x0BA7

Weights = list[tuple[np.ndarray, np.ndarray]]


def layer_sizes(config: ExperimentConfig, input_dim: int, n_classes: int) -> list[int]:
    return [input_dim, *config.hidden_units, n_classes]


def parameter_count(config: ExperimentConfig, input_dim: int, n_classes: int) -> int:
    sizes = layer_sizes(config, input_dim, n_classes)
    return sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))


def initial_weights(config: ExperimentConfig, input_dim: int, n_classes: int) -> Weights:
    """The run's initial weights in the neutral layout, reproducible from `config.seed`."""
    sizes = layer_sizes(config, input_dim, n_classes)
    weights: Weights = []
    for layer, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        rng = np.random.default_rng([config.seed, _INIT_STREAM, layer])
        if config.init == "glorot_uniform":
            # keras.initializers.GlorotUniform: U(-l, l), l = sqrt(6 / (fan_in + fan_out)); bias zeros.
            limit = np.sqrt(6.0 / (fan_in + fan_out))
            kernel = rng.uniform(-limit, limit, size=(fan_in, fan_out)).astype(np.float32)
            bias = np.zeros(fan_out, dtype=np.float32)
        elif config.init == "torch_default":
            # nn.Linear.reset_parameters: kaiming_uniform(a=sqrt(5)) = U(+-1/sqrt(fan_in)); bias the same.
            limit = 1.0 / np.sqrt(fan_in)
            kernel = rng.uniform(-limit, limit, size=(fan_in, fan_out)).astype(np.float32)
            bias = rng.uniform(-limit, limit, size=fan_out).astype(np.float32)
        else:  # validated by ExperimentConfig; kept for a clear message if that ever changes
            raise ValueError(f"unknown init scheme {config.init!r}")
        weights.append((kernel, bias))
    return weights


def epoch_permutation(seed: int, epoch: int, n_rows: int, shuffle: str | bool = "per-epoch") -> np.ndarray:
    """The order in which epoch `epoch` (0-based) visits the training rows under policy `shuffle`.

    `shuffle` is one of config.SHUFFLE_POLICIES; a bool is read as old configs meant it (True ->
    "per-epoch", False -> "none"). "fixed" is "per-epoch"'s epoch-0 order, so the two policies share
    their first epoch.
    """
    policy = {True: "per-epoch", False: "none"}.get(shuffle, shuffle) if isinstance(shuffle, bool) else shuffle
    if policy == "none":
        return np.arange(n_rows, dtype=np.int64)
    if policy not in ("per-epoch", "fixed"):
        raise ValueError(f"unknown shuffle policy {shuffle!r}; choose one of: per-epoch, fixed, none")
    rng = np.random.default_rng([seed, _ORDER_STREAM, epoch if policy == "per-epoch" else 0])
    return rng.permutation(n_rows).astype(np.int64)


def batch_bounds(n_rows: int, batch_size: int) -> list[tuple[int, int]]:
    """(start, stop) of each batch over a permutation; the last partial batch is kept."""
    return [(start, min(start + batch_size, n_rows)) for start in range(0, n_rows, batch_size)]


def steps_per_epoch(n_rows: int, batch_size: int) -> int:
    return -(-n_rows // batch_size)
