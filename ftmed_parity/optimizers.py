"""Layer 6: update rules, open loop. The same recorded gradient sequence goes into the reference's optimizer
(`apply_gradients`) and the port's (`.grad`, then `step()`); compared are the weights after every step.

The net: 2352-32-16-9 ReLU (the baseline's input and loss, narrower so every optimizer x 2 semantics x 50
steps run in seconds; update rules are elementwise, so width does not matter). The scope per Keras backend
(`OPEN_LOOP`):
- TensorFlow: gradients recorded from Keras itself, trained by Keras SGD lr 0.01 on 50 batches of 32
  synthetic images (realistic scale, sparsity (dead ReLUs) and drift); every registry optimizer at Keras's
  defaults plus the settings with their own code paths (`open_loop_optimizers`), compared after every
  step, in both semantics.
- JAX and torch: 20 gradients recorded from the port (SGD lr 0.01, 20 distinct batches of 32), the same
  arrays for every backend; the registry's optimizers at Keras's defaults, Keras semantics, compared after
  steps 1, 2, 5, 10 and 20. Keras's torch backend runs its own multi-tensor optimizers, whose rounding of
  AdamW's decay factor compounds step after step: their tolerance (`WIDER_OPTIMIZERS`) was measured at
  this scope.

A row reports the weight variable with the largest gap/tolerance ratio over the compared steps; its note
gives the largest gap anywhere. Semantics "torch" rows are informational: the gap torch.optim's nominal
mapping leaves.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Iterable

import numpy as np

from ftmed_core.config import OPTIMIZERS, OptimizerConfig, optimizer_config
from ftmed_core.variants import BASELINE
from ftmed_parity.checks import Check, Context, Measurement, Tolerance, informational
from ftmed_parity.sides import (
    INPUT_DIM,
    N_CLASSES,
    KerasSide,
    check_id,
    flat,
    max_diff,
    one_hot,
    pair_label,
    sample_data,
)

STEPS = 50
HIDDEN = (32, 16)
BATCH = 32
KERAS_RULE = Tolerance(1e-7, scale="max|w| (per variable)", ulps=8)


@dataclass(frozen=True)
class OpenLoop:
    """How layer 6 runs against one Keras backend."""

    steps: int
    gradients_from: str  # "reference": the Keras side's own train step; "port": lightning_ft's
    compared_steps: tuple[int, ...] | None  # 1-based; None: every step
    registry_only: bool  # the registry's optimizers only (no `open_loop_optimizers` extras)
    semantics: tuple[str, ...]


OPEN_LOOP = {"tensorflow": OpenLoop(STEPS, "reference", None, False, ("keras", "torch"))}
OTHER_BACKENDS = OpenLoop(20, "port", (1, 2, 5, 10, 20), True, ("keras",))
# Keras's torch backend runs its own multi-tensor optimizers (keras/src/backend/torch/optimizers/): the same
# rule, rounded differently (AdamW's decay factor rounded once and compounded; Nadam's moments).
WIDER_OPTIMIZERS = {"torch": {"adamw": 32, "nadam": 32}}
WIDER_REASON = {"torch": "Keras's torch-backend multi-tensor AdamW/Nadam round the decay/moment factors once per "
                         "step: measured 2.5x / 1.1x the 8-ulp bound"}


def open_loop_optimizers() -> dict[str, OptimizerConfig]:
    """Every registry optimizer at Keras's defaults, plus the settings with their own code paths."""
    configs = {name: optimizer_config(name) for name in OPTIMIZERS}
    configs["sgd(momentum=0.9, nesterov)"] = optimizer_config("sgd", momentum=0.9, nesterov=True)
    configs["sgd(lr=1e-3, momentum=0.9)"] = optimizer_config("sgd", learning_rate=1e-3, momentum=0.9)
    configs["rmsprop(momentum=0.9)"] = optimizer_config("rmsprop", momentum=0.9)
    configs["adam(weight_decay=0.01)"] = optimizer_config("adam", weight_decay=0.01)
    return configs


def _narrow(config=BASELINE):
    return replace(config, hidden_units=HIDDEN)


@lru_cache(maxsize=4)
def recorded_gradients(reference: KerasSide, steps: int = STEPS) -> tuple[tuple, tuple]:
    """(initial weights, `steps` gradient lists) recorded from the reference on real batches, neutral layout:
    its compiled SGD (lr 0.01) steps on 25 batches of 32 synthetic images, in turn."""
    from ftmed_core.protocol import initial_weights

    config = _narrow(replace(BASELINE, optimizer=optimizer_config("sgd")))
    start = initial_weights(config, INPUT_DIM, N_CLASSES)
    x, y = sample_data(BATCH * 25)
    batches = [(x[rows], one_hot(y[rows])) for rows in (slice((i % 25) * BATCH, (i % 25 + 1) * BATCH)
                                                         for i in range(steps))]
    grads_seq = reference.sgd_gradients(config, start, batches, INPUT_DIM, N_CLASSES)
    return tuple(start), tuple(tuple(np.asarray(g) for g in grads) for grads in grads_seq)


def port_gradients(port, steps: int) -> tuple[tuple, tuple]:
    """(initial weights, `steps` gradient lists in the neutral layout) from the port: the narrow ReLU net
    trained by plain SGD (lr 0.01) through the port's loss on `steps` distinct batches of 32 synthetic images.
    Framework-neutral arrays: every backend replays the same sequence, none needs TensorFlow."""
    import torch

    from ftmed_core.protocol import initial_weights

    config = _narrow()
    start = initial_weights(config, INPUT_DIM, N_CLASSES)
    x, y = sample_data(BATCH * steps)
    net = port.build_mlp(config, INPUT_DIM, N_CLASSES, start)
    grads_seq = []
    for step in range(steps):
        rows = slice(step * BATCH, (step + 1) * BATCH)
        net.zero_grad(set_to_none=True)
        port.keras_loss(net(torch.from_numpy(x[rows])), torch.from_numpy(y[rows]), "softmax", "keras").backward()
        grads_seq.append(tuple((p.grad.numpy().T if p.ndim == 2 else p.grad.numpy()).copy() for p in net.parameters()))
        with torch.no_grad():
            for p in net.parameters():
                p -= 0.01 * p.grad
    return tuple(start), tuple(grads_seq)


def replay_port(ctx: Context, opt: OptimizerConfig, start, grads_seq) -> list[list[np.ndarray]]:
    """Weights after each step when the port's optimizer (given semantics) steps on the same gradients."""
    import torch

    net = ctx.sides.port.build_mlp(_narrow(), INPUT_DIM, N_CLASSES, list(start))
    params = list(net.parameters())
    optimizer = ctx.sides.port.build_optimizer(params, opt)
    out = []
    for grads in grads_seq:
        for p, g in zip(params, grads):
            p.grad = torch.from_numpy(np.array(g.T if g.ndim == 2 else g, order="C"))  # a writable copy
        optimizer.step()
        out.append([(p.detach().numpy().T if p.ndim == 2 else p.detach().numpy()).copy() for p in params])
    return out


def optimizer_checks(optimizers: Iterable[str] | None = None, semantics: Iterable[str] | None = None,
                     steps: int | None = None, keras_backend: str = "tensorflow") -> list[Check]:
    """Layer 6 against `keras_backend`, at its `OPEN_LOOP` scope unless `optimizers` / `semantics` / `steps`
    say otherwise."""
    scope = OPEN_LOOP.get(keras_backend, OTHER_BACKENDS)
    steps = steps or scope.steps
    semantics = tuple(semantics) if semantics is not None else scope.semantics
    configs = {name: optimizer_config(name) for name in OPTIMIZERS} if scope.registry_only else open_loop_optimizers()
    names = tuple(optimizers) if optimizers is not None else tuple(configs)
    compared = scope.compared_steps or tuple(range(1, steps + 1))
    pair = pair_label(keras_backend)

    def gradients(ctx: Context) -> tuple[tuple, tuple]:
        if scope.gradients_from == "port":
            return ctx.memo(("port gradients", steps), lambda: port_gradients(ctx.sides.port, steps))
        return recorded_gradients(ctx.sides.keras(keras_backend), steps)

    def replay(ctx: Context, name: str, sem: str):
        start, grads_seq = gradients(ctx)
        reference = ctx.memo(("replay reference", keras_backend, name, steps), lambda: ctx.sides.keras(
            keras_backend).replay(_narrow(), configs[name], list(start), [list(g) for g in grads_seq], INPUT_DIM,
                                  N_CLASSES, compared if scope.compared_steps else None))
        port = replay_port(ctx, replace(configs[name], semantics=sem), start, grads_seq)
        port = [port[s - 1] for s in compared]
        per_step = [max_diff(k, t) for k, t in zip(reference, port)]
        moved = max_diff(reference[-1], flat(start))
        note = (f"{replace(configs[name], semantics=sem).describe()}; {steps} steps; weights moved up to {moved:.1e}; "
                f"step-1 gap {per_step[0]:.1e}; largest gap anywhere {max(per_step):.1e}")
        return reference, port, per_step, note

    def keras_rule(tolerance: Tolerance):
        def measure(ctx: Context, name: str) -> Measurement:
            reference, port, _, note = replay(ctx, name, "keras")
            worst = (-1.0, 0.0, 0.0, 0.0)  # (gap / bound, gap, bound, max|w|): per variable, over the steps
            for v in range(len(reference[0])):
                gap = max(max_diff([k[v]], [t[v]]) for k, t in zip(reference, port))
                largest = max(float(np.abs(k[v]).max()) for k in reference)
                bound = tolerance.bound(largest)
                worst = max(worst, (gap / bound, gap, bound, largest))
            return Measurement(worst[1], note + f"; worst variable has max|w| {worst[3]:.2f}", worst[3])
        return measure

    def torch_optim(ctx: Context, name: str) -> Measurement:
        _, _, per_step, note = replay(ctx, name, "torch")
        return Measurement(max(per_step), note + "; torch.optim mapping")

    wider = WIDER_OPTIMIZERS.get(keras_backend, {})
    checks = []
    for sem in semantics:
        if sem == "keras":
            checks.append(Check(check_id("opt.keras", keras_backend), 6, "replay, keras rule", KERAS_RULE,
                                "rounding (ops reordered, fused kernels) scales with the weights' ulps; a real rule "
                                "difference (float64 1 - beta in Nadam) is ~50 ulps", keras_rule(KERAS_RULE),
                                tuple(n for n in names if n not in wider), frameworks=pair))
            for ulps in sorted(set(wider.values())):
                tolerance = replace(KERAS_RULE, ulps=ulps)
                chosen = tuple(n for n in names if wider.get(n) == ulps)
                if chosen:
                    checks.append(Check(check_id("opt.keras.wide", keras_backend), 6, "replay, keras rule", tolerance,
                                        WIDER_REASON[keras_backend], keras_rule(tolerance), chosen, frameworks=pair))
        else:
            checks.append(Check(check_id("opt.torch", keras_backend), 6, "replay, torch.optim", informational(),
                                "torch.optim puts epsilon and accumulators elsewhere: the gap is shown, not asserted",
                                torch_optim, names, frameworks=pair))
    return checks
