"""Layers 1-3: the same network, the same weights, the same outputs.

1 architecture: every registry variant builds with `parameter_count` parameters in the expected shapes
  (Keras kernels (fan_in, fan_out), torch weights (fan_out, fan_in), biases (fan_out,)).
2 weights: neutral weight files carry the core's initial weights through both frameworks bit for bit,
  and `nn.Linear.weight` is the transposed kernel (a round trip alone cannot see a transpose forgotten on
  the way in and out).
3 forward: the same weights and 64 synthetic images give the same logits (per hidden activation) and the
  same activated outputs (per output activation, the worst hidden activation named).

Each builder takes `keras_backend`: the checks compare Keras on that backend (`ctx.sides.keras(backend)`)
with Lightning; ids end in @backend except on TensorFlow. Tolerances and their reasons are declared on the
checks below, the same for every backend.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Iterable

import numpy as np

from ftmed_core.config import HIDDEN_ACTIVATIONS, OUTPUT_ACTIVATIONS
from ftmed_core.variants import BASELINE, VARIANTS
from ftmed_parity.checks import Check, Context, Measurement, Tolerance
from ftmed_parity.sides import INPUT_DIM, N_CLASSES, check_id, flat, max_diff, pair_label, sample_data

EXACT = Tolerance(0.0)
FORWARD_REL = Tolerance(1e-5, scale="max(1, max|z|)")
FORWARD_PROB = Tolerance(2e-6)
BOUNDED_OUTPUTS = ("softmax", "sigmoid")

# ------------------------------------------------------------------------------------ 1 architecture


def _misplaced(shapes: list, expected: list) -> int:
    """Variables in a wrong shape, plus any missing or extra."""
    return sum(a != b for a, b in zip(shapes, expected)) + abs(len(shapes) - len(expected))


def _architecture(ctx: Context, config, keras_backend: str) -> Measurement:
    from ftmed_core.protocol import layer_sizes, parameter_count

    expected = parameter_count(config, INPUT_DIM, N_CLASSES)
    sizes = layer_sizes(config, INPUT_DIM, N_CLASSES)
    pairs = list(zip(sizes[:-1], sizes[1:]))
    keras_expected = [s for a, b in pairs for s in ((a, b), (b,))]
    torch_expected = [s for a, b in pairs for s in ((b, a), (b,))]
    keras_count, keras_shapes = ctx.sides.keras(keras_backend).architecture(config, INPUT_DIM, N_CLASSES)
    keras_shapes = [tuple(shape) for shape in keras_shapes]
    torch_net = ctx.sides.port.build_mlp(config, INPUT_DIM, N_CLASSES)
    torch_shapes = [tuple(p.shape) for p in torch_net.parameters()]
    torch_count = int(sum(p.numel() for p in torch_net.parameters()))
    count_gap = max(abs(keras_count - expected), abs(torch_count - expected))
    wrong_shapes = _misplaced(keras_shapes, keras_expected) + _misplaced(torch_shapes, torch_expected)
    note = f"{expected:,} parameters, {len(pairs)} Dense/Linear layers"
    if wrong_shapes:
        note = f"shapes differ: keras {keras_shapes} torch {torch_shapes}"
    elif count_gap:
        note = f"counts: expected {expected:,}, keras {keras_count:,}, torch {torch_count:,}"
    return Measurement(float(count_gap + wrong_shapes), note)


def architecture_checks(variants: Iterable | None = None, keras_backend: str = "tensorflow") -> list[Check]:
    """Every registry variant, or `variants`: registry names or `Variant` objects (e.g. from a variants file)."""
    chosen = [VARIANTS[v] if isinstance(v, str) else v for v in (variants or VARIANTS)]
    configs = {v.name: v.config for v in chosen}
    return [Check(check_id("arch", keras_backend), 1, "params & shapes", EXACT,
                  "parameter-count gap plus variables in a wrong shape; integers, so exact",
                  lambda ctx, name: _architecture(ctx, configs[name], keras_backend), tuple(configs),
                  frameworks=pair_label(keras_backend))]


# ------------------------------------------------------------------------------------------ 2 weights


def _differing_elements(a, b) -> int:
    """float32 elements whose bit patterns differ (shapes must match)."""
    a, b = flat(a), flat(b)
    if len(a) != len(b) or any(x.shape != y.shape for x, y in zip(a, b)):
        raise ValueError(f"layouts differ: {[x.shape for x in a]} vs {[y.shape for y in b]}")
    def bits(array):
        return np.asarray(array, np.float32).view(np.uint32)

    return int(sum(np.count_nonzero(bits(x) != bits(y)) for x, y in zip(a, b)))


def _keras_to_lightning(ctx: Context, keras_backend: str) -> dict:
    from ftmed_core.protocol import initial_weights
    from ftmed_core.weights_io import load_weights, save_weights

    keras, port = ctx.sides.keras(keras_backend), ctx.sides.port
    folder = ctx.workdir / f"weights-{keras_backend}"
    folder.mkdir(exist_ok=True)
    start = initial_weights(BASELINE, INPUT_DIM, N_CLASSES)
    keras.export_built(BASELINE, start, INPUT_DIM, N_CLASSES, folder / "from_keras.npz")
    loaded, meta = load_weights(folder / "from_keras.npz")
    torch_net = port.build_mlp(BASELINE, INPUT_DIM, N_CLASSES, loaded)
    save_weights(folder / "from_lightning.npz", port.get_weights(torch_net), {"framework": port.label})
    back, _ = load_weights(folder / "from_lightning.npz")
    layout = max(float(np.abs(layer.weight.detach().numpy() - kernel.T).max())
                 for layer, (kernel, _) in zip(port.linear_layers(torch_net), start))
    return {"start": start, "loaded": loaded, "back": back, "writer": meta.get("framework"), "layout": layout}


def weights_checks(keras_backend: str = "tensorflow") -> list[Check]:
    def keras_to_lightning(ctx: Context) -> dict:
        return ctx.memo(("keras>lightning", keras_backend), lambda: _keras_to_lightning(ctx, keras_backend))

    def round_trip_keras_first(ctx: Context, subject: str) -> Measurement:
        r = keras_to_lightning(ctx)
        bits = _differing_elements(r["start"], r["back"]) + _differing_elements(r["start"], r["loaded"])
        return Measurement(float(bits), f"{len(r['start'])} layers, written by {r['writer']}; "
                                        f"max|dw| {max_diff(flat(r['start']), flat(r['back'])):.1e}")

    def layout(ctx: Context, subject: str) -> Measurement:
        return Measurement(keras_to_lightning(ctx)["layout"], "the transpose minGPT's import test lists")

    def round_trip_lightning_first(ctx: Context, subject: str) -> Measurement:
        from ftmed_core.protocol import initial_weights
        from ftmed_core.weights_io import load_weights, save_weights

        keras, port = ctx.sides.keras(keras_backend), ctx.sides.port
        folder = ctx.workdir / f"weights-{keras_backend}"
        folder.mkdir(exist_ok=True)
        config = replace(BASELINE, init="torch_default", seed=1)
        start = initial_weights(config, INPUT_DIM, N_CLASSES)
        torch_net = port.build_mlp(config, INPUT_DIM, N_CLASSES, start)
        save_weights(folder / "l.npz", port.get_weights(torch_net), {"framework": port.label})
        keras.reexport(config, folder / "l.npz", folder / "k.npz")
        back, _ = load_weights(folder / "k.npz")
        return Measurement(float(_differing_elements(start, back)),
                           f"bitwise; max|dw| {max_diff(flat(start), flat(back)):.1e}")

    why = "elements whose float32 bits differ; nothing here does arithmetic"
    pair = pair_label(keras_backend)
    return [
        Check(check_id("weights.k2l", keras_backend), 2, "keras>file>lightning>file", EXACT, why,
              round_trip_keras_first, ("baseline (glorot)",), frameworks=pair),
        Check(check_id("weights.layout", keras_backend), 2, "Linear.weight == kernel.T", EXACT,
              "a copy, no arithmetic", layout, ("baseline (glorot)",), frameworks=pair),
        Check(check_id("weights.l2k", keras_backend), 2, "lightning>file>keras>file", EXACT, why,
              round_trip_lightning_first, ("torch-init (biases != 0)",), frameworks=pair),
    ]


# ------------------------------------------------------------------------------------------ 3 forward


def _forward(ctx: Context, keras_backend: str, hidden: str, outputs: tuple[str, ...], n_rows: int) -> dict:
    """Logits of both frameworks and the activated outputs for every output activation, one hidden."""
    import torch

    from ftmed_core.protocol import initial_weights

    port = ctx.sides.port
    x, _ = sample_data(n_rows)
    weights = initial_weights(BASELINE, INPUT_DIM, N_CLASSES)
    config = replace(BASELINE, hidden_activation=hidden)
    torch_net = port.build_mlp(config, INPUT_DIM, N_CLASSES, weights)
    with torch.no_grad():
        z_torch = torch_net(torch.from_numpy(x))
    z_keras, keras_outputs = ctx.sides.keras(keras_backend).forward(config, weights, x, outputs, INPUT_DIM,
                                                                    N_CLASSES)
    activated = {}
    for output in outputs:
        with torch.no_grad():
            y_torch = port.activate(z_torch, output).numpy()
        activated[output] = max_diff([keras_outputs[output]], [y_torch])
    return {"logits": max_diff([z_keras], [z_torch.numpy()]), "scale": max(1.0, float(np.abs(z_keras).max())),
            "activated": activated}


def forward_checks(hidden_activations: Iterable[str] = HIDDEN_ACTIVATIONS,
                   output_activations: Iterable[str] = OUTPUT_ACTIVATIONS, n_rows: int = 64,
                   keras_backend: str = "tensorflow") -> list[Check]:
    hidden_activations, outputs = tuple(hidden_activations), tuple(output_activations)
    pair = pair_label(keras_backend)

    def forward(ctx: Context, hidden: str) -> dict:
        return ctx.memo(("forward", keras_backend, hidden),
                        lambda: _forward(ctx, keras_backend, hidden, outputs, n_rows))

    def logits(ctx: Context, hidden: str) -> Measurement:
        r = forward(ctx, hidden)
        return Measurement(r["logits"], f"max|z| {r['scale']:.2f}; relative gap {r['logits'] / r['scale']:.1e}",
                           r["scale"])

    def activated(tolerance: Tolerance):
        def measure(ctx: Context, output: str) -> Measurement:
            worst = None  # (gap / bound, gap, scale, hidden)
            for hidden in hidden_activations:
                r = forward(ctx, hidden)
                gap, scale = r["activated"][output], r["scale"]
                ratio = gap / tolerance.bound(scale)
                if worst is None or ratio > worst[0]:
                    worst = (ratio, gap, scale, hidden)
            return Measurement(worst[1], f"worst over hidden activations: {worst[3]}", worst[2])
        return measure

    bounded = tuple(o for o in outputs if o in BOUNDED_OUTPUTS)
    unbounded = tuple(o for o in outputs if o not in BOUNDED_OUTPUTS)
    checks = [Check(check_id("fwd.logits", keras_backend), 3, "logits", FORWARD_REL,
                    "a 2352-term float32 dot product summed in another order: ~1e-6 * |z|; "
                    "the smallest real bug (leaky-ReLU slope, tanh GELU) moves logits >= 1e-4",
                    logits, hidden_activations, "hidden", frameworks=pair)]
    if bounded:
        checks.append(Check(check_id("fwd.prob", keras_backend), 3, "activated output", FORWARD_PROB,
                            "softmax and sigmoid contract the logits' gap (slope <= 1/2), plus output rounding",
                            activated(FORWARD_PROB), bounded, "output", frameworks=pair))
    if unbounded:
        checks.append(Check(check_id("fwd.signed", keras_backend), 3, "activated output", FORWARD_REL,
                            "linear is the logits and tanh has slope 1 at 0: the logits' tolerance",
                            activated(FORWARD_REL), unbounded, "output", frameworks=pair))
    return checks
