"""Layer 6: update rules, open loop. The same recorded gradient sequence goes into the reference's optimizer
(`apply_gradients`) and the port's (`.grad`, then `step()`); compared are the weights after every step.

The gradients are recorded once from Keras: a 2352-32-16-9 ReLU net (the baseline's input and loss,
narrower so every optimizer x 2 semantics x 50 steps run in seconds; update rules are elementwise, so width
does not matter) trained by Keras SGD lr 0.01 on 50 batches of 32 synthetic images: gradients of realistic
scale, sparsity (dead ReLUs) and drift. Every optimizer in the registry runs at Keras's defaults, plus the
settings with their own code paths (`open_loop_optimizers`).

A row reports the weight variable with the largest gap/tolerance ratio over all steps; its note gives the
largest gap anywhere. Semantics "torch" rows are informational: the gap torch.optim's nominal mapping leaves.
"""

from __future__ import annotations

from dataclasses import replace
from functools import lru_cache
from typing import Iterable

import numpy as np

from ftmed_core.config import OPTIMIZERS, OptimizerConfig, optimizer_config
from ftmed_core.variants import BASELINE
from ftmed_parity.checks import Check, Context, Measurement, Tolerance, informational
from ftmed_parity.sides import INPUT_DIM, N_CLASSES, KerasSide, flat, keras_compiled, max_diff, one_hot, sample_data

STEPS = 50
HIDDEN = (32, 16)
BATCH = 32
KERAS_RULE = Tolerance(1e-7, scale="max|w| (per variable)", ulps=8)


def open_loop_optimizers() -> dict[str, OptimizerConfig]:
    """Every registry optimizer at Keras's defaults, plus the settings with their own code paths."""
    configs = {name: optimizer_config(name) for name in OPTIMIZERS}
    configs["sgd(momentum=0.9, nesterov)"] = optimizer_config("sgd", momentum=0.9, nesterov=True)
    configs["sgd(lr=1e-3, momentum=0.9)"] = optimizer_config("sgd", learning_rate=1e-3, momentum=0.9)
    configs["rmsprop(momentum=0.9)"] = optimizer_config("rmsprop", momentum=0.9)
    configs["adam(weight_decay=0.01)"] = optimizer_config("adam", weight_decay=0.01)
    return configs


@lru_cache(maxsize=2)
def recorded_gradients(reference: KerasSide, steps: int = STEPS) -> tuple[tuple, tuple]:
    """(initial weights, `steps` gradient lists) recorded from the reference on real batches, neutral layout."""
    from ftmed_core.protocol import initial_weights

    config = replace(BASELINE, hidden_units=HIDDEN, optimizer=optimizer_config("sgd"))
    start = initial_weights(config, INPUT_DIM, N_CLASSES)
    x, y = sample_data(BATCH * 25)
    net = keras_compiled(reference, config, start)
    step = reference.loss_and_gradients(net)
    grads_seq = []
    for i in range(steps):
        rows = slice((i % 25) * BATCH, (i % 25 + 1) * BATCH)
        _, grads = step(x[rows], one_hot(y[rows]))
        grads_seq.append(tuple(np.asarray(g) for g in grads))
        net.optimizer.apply_gradients(zip(grads, net.trainable_variables))
    return tuple(start), tuple(grads_seq)


def replay_reference(ctx: Context, opt: OptimizerConfig, start, grads_seq) -> list[list[np.ndarray]]:
    """Weights after each step when the reference's optimizer applies the recorded gradients."""
    net = ctx.sides.reference.build_mlp(replace(BASELINE, hidden_units=HIDDEN), INPUT_DIM, N_CLASSES, list(start))
    optimizer = ctx.sides.reference.build_optimizer(replace(opt, semantics="keras"))
    variables = net.trainable_variables
    out = []
    for grads in grads_seq:
        optimizer.apply_gradients(zip(grads, variables))
        out.append([v.numpy().copy() for v in variables])
    return out


def replay_port(ctx: Context, opt: OptimizerConfig, start, grads_seq) -> list[list[np.ndarray]]:
    """Weights after each step when the port's optimizer (given semantics) steps on the same gradients."""
    import torch

    net = ctx.sides.port.build_mlp(replace(BASELINE, hidden_units=HIDDEN), INPUT_DIM, N_CLASSES, list(start))
    params = list(net.parameters())
    optimizer = ctx.sides.port.build_optimizer(params, opt)
    out = []
    for grads in grads_seq:
        for p, g in zip(params, grads):
            p.grad = torch.from_numpy(np.array(g.T if g.ndim == 2 else g, order="C"))  # a writable copy
        optimizer.step()
        out.append([(p.detach().numpy().T if p.ndim == 2 else p.detach().numpy()).copy() for p in params])
    return out


def optimizer_checks(optimizers: Iterable[str] | None = None, semantics: Iterable[str] = ("keras", "torch"),
                     steps: int = STEPS) -> list[Check]:
    configs = open_loop_optimizers()
    names = tuple(optimizers) if optimizers is not None else tuple(configs)

    def replay(ctx: Context, name: str, sem: str):
        start, grads_seq = recorded_gradients(ctx.sides.reference, steps)
        reference = ctx.memo(("replay reference", name), lambda: replay_reference(ctx, configs[name], start, grads_seq))
        port = replay_port(ctx, replace(configs[name], semantics=sem), start, grads_seq)
        per_step = [max_diff(k, t) for k, t in zip(reference, port)]
        moved = max_diff(reference[-1], flat(start))
        note = (f"{replace(configs[name], semantics=sem).describe()}; {steps} steps; weights moved up to {moved:.1e}; "
                f"step-1 gap {per_step[0]:.1e}; largest gap anywhere {max(per_step):.1e}")
        return reference, port, per_step, note

    def keras_rule(ctx: Context, name: str) -> Measurement:
        reference, port, _, note = replay(ctx, name, "keras")
        worst = (-1.0, 0.0, 0.0, 0.0)  # (gap / bound, gap, bound, max|w|): per variable, over all steps
        for v in range(len(reference[0])):
            gap = max(max_diff([k[v]], [t[v]]) for k, t in zip(reference, port))
            largest = max(float(np.abs(k[v]).max()) for k in reference)
            bound = KERAS_RULE.bound(largest)
            worst = max(worst, (gap / bound, gap, bound, largest))
        return Measurement(worst[1], note + f"; worst variable has max|w| {worst[3]:.2f}", worst[3])

    def torch_optim(ctx: Context, name: str) -> Measurement:
        _, _, per_step, note = replay(ctx, name, "torch")
        return Measurement(max(per_step), note + "; torch.optim mapping")

    checks = []
    for sem in semantics:
        if sem == "keras":
            checks.append(Check("opt.keras", 6, "replay, keras rule", KERAS_RULE,
                                "rounding (ops reordered, fused kernels) scales with the weights' ulps; a real rule "
                                "difference (float64 1 - beta in Nadam) is ~50 ulps", keras_rule, names))
        else:
            checks.append(Check("opt.torch", 6, "replay, torch.optim", informational(),
                                "torch.optim puts epsilon and accumulators elsewhere: the gap is shown, not asserted",
                                torch_optim, names))
    return checks
