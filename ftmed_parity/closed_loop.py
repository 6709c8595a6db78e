"""Layer 7: training, closed loop. Each framework trains itself for one epoch (12 steps of 128 on 1,440
synthetic rows, PathMNIST at 2 %) from the core's initial weights in the core's batch order: Keras through
`train_on_batch` over keras_ref's batches (`training_batches`, what `fit` consumes), the port through a
Lightning Trainer over lightning_ft's DataModule and MLPSystem, in the loss mode that computes what that
Keras backend computes (`matching_lightning_loss`).

The first steps are asserted; the drift over the epoch is informational: trajectories are chaotic (a
rounding-level difference flips a ReLU gate or a near-zero Adam update), which is why layer 6 tests
update rules open loop. Per Keras backend the variants trained (`CLOSED_LOOP_VARIANTS`): the baseline on
TensorFlow; on JAX and torch also the sigmoid output, whose loss there is another formula than
TensorFlow's: its gap to TensorFlow's formula at step 1 is shown (`loop.vs-tf`), not asserted.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from ftmed_core.config import ExperimentConfig
from ftmed_core.frameworks import effective_loss, keras_label, matching_lightning_loss
from ftmed_core.variants import BASELINE, VARIANTS
from ftmed_parity.checks import Check, Context, Measurement, Tolerance, informational
from ftmed_parity.sides import check_id, max_diff, pair_label

SCALE = 0.02
EARLY_STEPS = 3
CLOSED_LOOP_VARIANTS = {"tensorflow": ("baseline",)}
OTHER_BACKENDS = ("baseline", "sigmoid-output")


def _train_both(ctx: Context, keras_backend: str, config: ExperimentConfig) -> dict:
    from ftmed_core.data import load_experiment_data
    from ftmed_core.protocol import initial_weights
    from ftmed_core.synth import write_synthetic

    label = keras_label(keras_backend)
    folder = Path(ctx.workdir) / "closed_loop"
    if not folder.is_dir():
        write_synthetic(folder, "pathmnist", 28, scale=SCALE, seed=7, overwrite=True)
    data = load_experiment_data(replace(config, data_dir=str(folder)), allow_download=False)
    weights = initial_weights(config, data.input_dim, data.n_classes)
    mode = matching_lightning_loss(label, config.loss)
    keras_losses, keras_weights = ctx.sides.keras(keras_backend).train_one_epoch(config, data, weights)
    torch_losses, torch_weights = ctx.sides.port.train_one_epoch(replace(config, loss=mode), data, weights)
    if len(keras_losses) != len(torch_losses):
        raise RuntimeError(f"{label} took {len(keras_losses)} steps, port {len(torch_losses)}")
    result = {"keras": keras_losses, "torch": torch_losses, "mode": mode,
              "gaps": [abs(a - b) for a, b in zip(keras_losses, torch_losses)],
              "weight_gaps": [max_diff(a, b) for a, b in zip(keras_weights, torch_weights)]}
    tf_mode = effective_loss("keras", config.loss)
    if tf_mode != mode:  # what the same Keras code trains on under TensorFlow: the port in TF's mode
        tf_losses, _ = ctx.sides.port.train_one_epoch(replace(config, loss=tf_mode), data, weights)
        result["tf_like"] = (tf_mode, tf_losses[0])
    return result


def closed_loop_checks(config: ExperimentConfig | None = None, subject: str | None = None,
                       keras_backend: str = "tensorflow") -> list[Check]:
    """The rows for `config` (default: the backend's `CLOSED_LOOP_VARIANTS`), one subject per config;
    `subject` names it (default: the variant, or what differs from the baseline)."""
    if config is None:
        names = CLOSED_LOOP_VARIANTS.get(keras_backend, OTHER_BACKENDS)
        configs = {name: VARIANTS[name].config for name in names}
    else:
        if subject is None:
            reference = replace(BASELINE, data_dir=config.data_dir)
            subject = "baseline" if config == BASELINE else config.describe_changes(reference)
        configs = {subject: config}
    subjects = tuple(configs)
    label, pair = keras_label(keras_backend), pair_label(keras_backend)

    def run(ctx: Context, name: str) -> dict:
        return ctx.memo(("closed loop", keras_backend, configs[name]),
                        lambda: _train_both(ctx, keras_backend, configs[name]))

    def step_1(ctx: Context, name: str) -> Measurement:
        r = run(ctx, name)
        return Measurement(r["gaps"][0], f"{label} {r['keras'][0]:.6f}, port (loss={r['mode']}) {r['torch'][0]:.6f}; "
                                         f"same weights, same batch")

    def early(ctx: Context, name: str) -> Measurement:
        gaps = run(ctx, name)["gaps"][:EARLY_STEPS]
        return Measurement(max(gaps), "per-step gaps " + ", ".join(f"{g:.1e}" for g in gaps))

    def drift_loss(ctx: Context, name: str) -> Measurement:
        r = run(ctx, name)
        return Measurement(max(r["gaps"]), f"{len(r['gaps'])} steps; last-step gap {r['gaps'][-1]:.1e}; mean loss "
                                           f"{label} {np.mean(r['keras']):.5f} vs port {np.mean(r['torch']):.5f}")

    def drift_weights(ctx: Context, name: str) -> Measurement:
        gaps = run(ctx, name)["weight_gaps"]
        return Measurement(gaps[-1], "max |dW| after each step: " + ", ".join(f"{g:.0e}" for g in gaps))

    def versus_tf(ctx: Context, name: str) -> Measurement:
        r = run(ctx, name)
        tf_mode, tf_first = r["tf_like"]
        return Measurement(abs(r["keras"][0] - tf_first),
                           f"step-1 loss {label} {r['keras'][0]:.6f} vs TensorFlow's formula (port loss={tf_mode}) "
                           f"{tf_first:.6f}: a known difference, not a failure")

    checks = [
        Check(check_id("loop.step1", keras_backend), 7, "step 1 loss", Tolerance(2e-6),
              "identical weights and batch: only forward/loss rounding (layer 4's tolerance); a batch order off by "
              "one row is 1000x beyond it", step_1, subjects, frameworks=pair),
        Check(check_id("loop.early", keras_backend), 7, f"steps 1-{EARLY_STEPS} loss", Tolerance(1e-5),
              "after step 1 rounding-level gradient entries get different Adam updates; they barely move the loss",
              early, subjects, frameworks=pair),
        Check(check_id("loop.drift.loss", keras_backend), 7, "epoch drift: loss", informational(),
              "trajectories are chaotic: shown, not asserted", drift_loss, subjects, frameworks=pair),
        Check(check_id("loop.drift.w", keras_backend), 7, "epoch drift: weights", informational(),
              "trajectories are chaotic: shown, not asserted", drift_weights, subjects, frameworks=pair),
    ]
    # Only a sigmoid output trains differently: on softmax the two formulas are the same function.
    differing = tuple(name for name, c in configs.items() if c.output_activation == "sigmoid"
                      and effective_loss(label, c.loss) != effective_loss("keras", c.loss))
    if differing:
        checks.append(Check(check_id("loop.vs-tf", keras_backend), 7, "step 1 vs TF's formula", informational(),
                            "the loss TensorFlow would train on here: a known, measured difference", versus_tf,
                            differing, frameworks=pair_label(keras_backend, "keras")))
    return checks
