"""The layers of the parity suite, in order, and the checks each one declares at full scope.

`run_layers(layers, sides)` runs them (default sides: keras_ref vs lightning_ft); `tolerance_table()` is
generated from the declared checks, so the table in parity.md cannot drift from what is asserted.
"""

from __future__ import annotations

import time
from typing import Callable, Iterable

from ftmed_parity.checks import Check, Result, run_checks

LAYERS = {
    1: "architecture",
    2: "weights",
    3: "forward",
    4: "loss",
    5: "gradients",
    6: "optimizers (open loop)",
    7: "training (closed loop)",
    8: "outcomes (statistical)",
}
DEFAULT_LAYERS = (1, 2, 3, 4, 5, 6, 7)


def layer_checks(layer: int, keras_backends: Iterable[str] = ("tensorflow",)) -> list[Check]:
    """The checks of `layer` over their full default scope (every variant, activation, optimizer, ...), for
    each Keras backend in `keras_backends`: TensorFlow's are the rows below (in this process); another
    backend's are `ftmed_parity.backends.backend_checks` (its Keras in a child process; ids end in @backend)."""
    from ftmed_parity import backends, closed_loop, loss, multilabel, optimizers, statistical, structure

    keras_backends = tuple(keras_backends)
    checks = [c for b in keras_backends if b != "tensorflow" for c in backends.backend_checks(b, layer)]
    if "tensorflow" not in keras_backends:
        if layer not in LAYERS:
            raise ValueError(f"unknown parity layer {layer}; choose from {min(LAYERS)}-{max(LAYERS)}")
        return checks

    builders: dict[int, Callable[[], list[Check]]] = {
        1: structure.architecture_checks,
        2: structure.weights_checks,
        3: structure.forward_checks,
        4: loss.loss_checks,
        5: loss.gradient_checks,
        6: optimizers.optimizer_checks,
        7: closed_loop.closed_loop_checks,
        8: statistical.statistical_checks,
    }
    if layer not in builders:
        raise ValueError(f"unknown parity layer {layer}; choose from {min(LAYERS)}-{max(LAYERS)}")
    # Multi-label rows (layers 4-6): Keras's binary_crossentropy head vs the torch port, on TensorFlow.
    return builders[layer]() + multilabel.multilabel_checks(layer) + checks


def run_layers(layers: Iterable[int] = DEFAULT_LAYERS, sides=None, workdir=None,
               on_layer: Callable[[int, list[Result], float], None] | None = None,
               checks_for: Callable[[int], list[Check]] = layer_checks) -> tuple[list[Result], dict[int, float]]:
    """Run `layers` in order; returns every result and the seconds each layer took.

    `checks_for` picks a layer's checks (default: `layer_checks`); a test passes its own to plant a result.
    """
    results: list[Result] = []
    seconds: dict[int, float] = {}
    for layer in layers:
        started = time.perf_counter()
        rows = run_checks(checks_for(layer), sides, workdir)
        seconds[layer] = time.perf_counter() - started
        results.extend(rows)
        if on_layer is not None:
            on_layer(layer, rows, seconds[layer])
    return results, seconds


def tolerance_table(layers: Iterable[int] = tuple(LAYERS),
                    keras_backends: Iterable[str] = ("tensorflow",)) -> list[tuple[str, int, str, str, str]]:
    """(id, layer, check, tolerance, reason) for every declared check, in suite order."""
    return [(c.id, c.layer, c.name, c.tolerance.describe(), c.reason)
            for layer in layers for c in layer_checks(layer, tuple(keras_backends))]
