"""The layers of the parity suite, in order, and the checks each one declares at full scope.

`run_layers(layers, sides)` runs them (default sides: keras_ref vs lightning_ft; a check declared for
another Keras backend reaches it through `sides.keras(backend)`); `tolerance_table()` is
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
    9: "export (ONNX)",
}
DEFAULT_LAYERS = (1, 2, 3, 4, 5, 6, 7, 9)  # 8 (statistical, ~1 min) on request


def layer_checks(layer: int, keras_backends: Iterable[str] = ("tensorflow",)) -> list[Check]:
    """The checks of `layer` over their full default scope (every variant, activation, optimizer, ...), for
    each Keras backend in `keras_backends`, in that order: the same checks, each declared for its backend
    (ids end in @backend except TensorFlow's; its Keras side is `Sides.keras(backend)`). Layers 8 and 9 run
    on TensorFlow only."""
    from ftmed_parity import closed_loop, export, loss, multilabel, optimizers, statistical, structure

    builders: dict[int, Callable[[str], list[Check]]] = {
        1: lambda backend: structure.architecture_checks(keras_backend=backend),
        2: lambda backend: structure.weights_checks(keras_backend=backend),
        3: lambda backend: structure.forward_checks(keras_backend=backend),
        4: lambda backend: loss.loss_checks(keras_backend=backend),
        5: lambda backend: loss.gradient_checks(keras_backend=backend),
        6: lambda backend: optimizers.optimizer_checks(keras_backend=backend),
        7: lambda backend: closed_loop.closed_loop_checks(keras_backend=backend),
        8: lambda backend: statistical.statistical_checks() if backend == "tensorflow" else [],
        9: lambda backend: export.export_checks() if backend == "tensorflow" else [],
    }
    if layer not in builders:
        raise ValueError(f"unknown parity layer {layer}; choose from {min(LAYERS)}-{max(LAYERS)}")
    # Multi-label rows (layers 4-6): Keras's binary_crossentropy head vs the torch port, on TensorFlow.
    return ([check for backend in keras_backends for check in builders[layer](backend)]
            + (multilabel.multilabel_checks(layer) if "tensorflow" in keras_backends else []))


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
