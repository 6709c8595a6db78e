"""Layers 1-7 for Keras on another backend (JAX, torch) against Lightning; check ids end in `@backend`.

Keras fixes its backend at import, so that backend's numbers come from a child process
(`ftmed_parity.probe.probe`, one per layer); Lightning's are computed here, through `ctx.sides.port`,
with the loss mode that computes what the backend computes (`matching_lightning_loss`). TensorFlow is not
needed: the TensorFlow formula a difference is measured against is the core's float64 loss.

| layer | rows (id@backend) |
|---|---|
| 1 | arch: every registry variant, parameter count and shapes |
| 2 | weights.rt: core -> Keras -> neutral file -> Keras -> core, bitwise |
| 3 | fwd.logits per hidden activation; fwd.prob / fwd.signed per output activation |
| 4 | loss.keras / loss.prob per output vs Lightning in the matching mode; loss.pin: the sigmoid output's loss is the formula `effective_loss` names; loss.formula (info): per (output, loss) the registry's variants use, the formula this backend computes and its measured gap to TensorFlow's formula -- a known difference where they differ, not a failure |
| 5 | grad.keras / grad.prob (.signed for linear/tanh) per output |
| 6 | opt.keras: Keras's optimizers on this backend vs lightning_ft's Keras rule, open loop |
| 7 | loop.step1 / loop.early per variant (baseline, sigmoid-output), drift (info), loop.vs-tf (info) |

Tolerances are the TensorFlow rows' (the same constants), except where a backend is declared wider
(`WIDER_OPTIMIZERS`), each with its reason.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from ftmed_core.config import HIDDEN_ACTIVATIONS, LOSS_MODES, OPTIMIZERS, OUTPUT_ACTIVATIONS, optimizer_config
from ftmed_core.frameworks import effective_loss, keras_label, matching_lightning_loss
from ftmed_core.variants import BASELINE, VARIANTS
from ftmed_parity.checks import Check, Context, Measurement, Tolerance, informational
from ftmed_parity.closed_loop import EARLY_STEPS
from ftmed_parity.closed_loop import SCALE as CLOSED_LOOP_SCALE
from ftmed_parity.loss import GRADIENTS, GRADIENTS_SIGNED, LOSS, MODE_IDS, SIGNED_OUTPUTS, registry_loss_uses
from ftmed_parity.optimizers import BATCH, HIDDEN, KERAS_RULE, replay_port
from ftmed_parity.sides import INPUT_DIM, N_CLASSES, max_diff, sample_data, torch_loss_and_gradients
from ftmed_parity.structure import BOUNDED_OUTPUTS, EXACT, FORWARD_PROB, FORWARD_REL

OPEN_LOOP_STEPS = 20
RECORD_STEPS = (1, 2, 5, 10, 20)
CLOSED_LOOP_VARIANTS = ("baseline", "sigmoid-output")
# Keras's torch backend runs its own multi-tensor optimizers (keras/src/backend/torch/optimizers/): the same
# rule, rounded differently (AdamW's decay factor rounded once and compounded; Nadam's moments).
WIDER_OPTIMIZERS = {"torch": {"adamw": 32, "nadam": 32}}
WIDER_REASON = {"torch": "Keras's torch-backend multi-tensor AdamW/Nadam round the decay/moment factors once per "
                         "step: measured 2.5x / 1.1x the 8-ulp bound"}


def _probe(ctx: Context, backend: str, layer: int, request: dict, arrays: dict | None = None) -> tuple[dict, dict]:
    from ftmed_parity.probe import probe

    return ctx.memo(("probe", backend, layer), lambda: probe(backend, request, arrays))


def _pairs(flat_list: list) -> list[tuple]:
    return [(flat_list[i], flat_list[i + 1]) for i in range(0, len(flat_list), 2)]


# ------------------------------------------------------------------------------------ 1-3 structure


def _architecture(backend: str):
    def measure(ctx: Context, name: str) -> Measurement:
        from ftmed_core.protocol import parameter_count

        meta, _ = _probe(ctx, backend, 1, {"checks": ["architecture"]})
        config = VARIANTS[name].config
        expected = parameter_count(config, INPUT_DIM, N_CLASSES)
        torch_net = ctx.sides.port.build_mlp(config, INPUT_DIM, N_CLASSES)
        torch_shapes = [list(p.shape[::-1]) for p in torch_net.parameters()]  # (out, in) -> Keras's (in, out)
        torch_count = int(sum(p.numel() for p in torch_net.parameters()))
        keras = meta["architecture"][name]
        wrong = sum(a != b for a, b in zip(keras["shapes"], torch_shapes)) + abs(len(keras["shapes"]) - len(torch_shapes))
        gap = max(abs(keras["count"] - expected), abs(torch_count - expected))
        note = f"{expected:,} parameters, {len(torch_shapes) // 2} Dense/Linear layers"
        if wrong or gap:
            note = f"keras {keras['count']:,} {keras['shapes']} vs lightning {torch_count:,} {torch_shapes}"
        return Measurement(float(gap + wrong), note)
    return measure


def _weights(backend: str):
    def measure(ctx: Context, _: str) -> Measurement:
        from ftmed_core.protocol import initial_weights

        _, out = _probe(ctx, backend, 2, {"checks": ["weights"]})
        start = [a for pair in initial_weights(BASELINE, INPUT_DIM, N_CLASSES) for a in pair]
        back = [out[f"weights/{i}"] for i in range(len(start))]
        bits = sum(int(np.count_nonzero(np.asarray(a, np.float32).view(np.uint32)
                                        != np.asarray(b, np.float32).view(np.uint32))) for a, b in zip(start, back))
        return Measurement(float(bits), f"{len(start) // 2} layers, bitwise; max|dw| {max_diff(start, back):.1e}")
    return measure


def _forward(ctx: Context, backend: str, n_rows: int) -> dict:
    def compute() -> dict:
        import torch

        from ftmed_core.protocol import initial_weights

        x, _ = sample_data(n_rows)
        _, out = _probe(ctx, backend, 3, {"checks": ["forward"], "hidden_activations": list(HIDDEN_ACTIVATIONS),
                                          "output_activations": list(OUTPUT_ACTIVATIONS)}, {"x": x})
        weights = initial_weights(BASELINE, INPUT_DIM, N_CLASSES)
        result = {}
        for hidden in HIDDEN_ACTIVATIONS:
            net = ctx.sides.port.build_mlp(replace(BASELINE, hidden_activation=hidden), INPUT_DIM, N_CLASSES, weights)
            with torch.no_grad():
                z = net(torch.from_numpy(x))
                activated = {o: ctx.sides.port.activate(z, o).numpy() for o in OUTPUT_ACTIVATIONS}
            z_keras = out[f"logits/{hidden}"]
            result[hidden] = {"logits": max_diff([z_keras], [z.numpy()]),
                              "scale": max(1.0, float(np.abs(z_keras).max())),
                              "activated": {o: max_diff([out[f"output/{hidden}/{o}"]], [activated[o]])
                                            for o in OUTPUT_ACTIVATIONS}}
        return result
    return ctx.memo(("backend forward", backend), compute)


def _structure_checks(backend: str, layer: int, n_rows: int = 64) -> list[Check]:
    label = keras_label(backend)
    pair = f"{label} vs lightning"
    if layer == 1:
        return [Check(f"arch@{backend}", 1, "params & shapes", EXACT,
                      "parameter-count gap plus variables in a wrong shape; integers, so exact",
                      _architecture(backend), tuple(VARIANTS), frameworks=pair)]
    if layer == 2:
        return [Check(f"weights.rt@{backend}", 2, "core>keras>file>keras", EXACT,
                      "elements whose float32 bits differ; nothing here does arithmetic", _weights(backend),
                      ("baseline (glorot)",), frameworks=pair)]

    def logits(ctx: Context, hidden: str) -> Measurement:
        r = _forward(ctx, backend, n_rows)[hidden]
        return Measurement(r["logits"], f"max|z| {r['scale']:.2f}; relative gap {r['logits'] / r['scale']:.1e}",
                           r["scale"])

    def activated(tolerance: Tolerance):
        def measure(ctx: Context, output: str) -> Measurement:
            rows = _forward(ctx, backend, n_rows)
            worst = max(((rows[h]["activated"][output] / tolerance.bound(rows[h]["scale"]), h)
                         for h in HIDDEN_ACTIVATIONS))
            r = rows[worst[1]]
            return Measurement(r["activated"][output], f"worst over hidden activations: {worst[1]}", r["scale"])
        return measure

    bounded = tuple(o for o in OUTPUT_ACTIVATIONS if o in BOUNDED_OUTPUTS)
    signed = tuple(o for o in OUTPUT_ACTIVATIONS if o not in BOUNDED_OUTPUTS)
    return [
        Check(f"fwd.logits@{backend}", 3, "logits", FORWARD_REL,
              "a 2352-term float32 dot product summed in another order: ~1e-6 * |z|", logits, HIDDEN_ACTIVATIONS,
              "hidden", frameworks=pair),
        Check(f"fwd.prob@{backend}", 3, "activated output", FORWARD_PROB,
              "softmax and sigmoid contract the logits' gap (slope <= 1/2), plus output rounding",
              activated(FORWARD_PROB), bounded, "output", frameworks=pair),
        Check(f"fwd.signed@{backend}", 3, "activated output", FORWARD_REL,
              "linear is the logits and tanh has slope 1 at 0: the logits' tolerance", activated(FORWARD_REL),
              signed, "output", frameworks=pair),
    ]


# ------------------------------------------------------------------------------------- 4-5 loss, grads


def _loss_probe(ctx: Context, backend: str, n_rows: int) -> dict:
    x, y = sample_data(n_rows)
    _, out = _probe(ctx, backend, 4, {"checks": ["loss"], "output_activations": list(OUTPUT_ACTIVATIONS),
                                      "loss_modes": list(LOSS_MODES)}, {"x": x, "y": y})
    return out


def _loss_checks(backend: str, n_rows: int = 64) -> list[Check]:
    label = keras_label(backend)
    pair = f"{label} vs lightning"

    def loss(mode: str):
        def measure(ctx: Context, output: str) -> Measurement:
            import torch

            out = _loss_probe(ctx, backend, n_rows)
            z, y = out["baseline_logits"], sample_data(n_rows)[1]
            lightning_mode = matching_lightning_loss(label, mode)
            keras_value = float(out[f"loss/{output}/{mode}"])
            port = float(ctx.sides.port.keras_loss(torch.from_numpy(z), torch.from_numpy(y), output, lightning_mode))
            return Measurement(abs(keras_value - port),
                               f"{label} {keras_value:.6f}, lightning (loss={lightning_mode}) {port:.6f}")
        return measure

    def pin(ctx: Context, output: str) -> Measurement:
        from ftmed_core import losses as core_losses

        out = _loss_probe(ctx, backend, n_rows)
        formula = effective_loss(label, "keras")
        expected = core_losses.mean_loss(out["baseline_logits"], sample_data(n_rows)[1], output, formula)
        value = float(out[f"loss/{output}/keras"])
        return Measurement(abs(value - expected), f"{label} {value:.6f}, core float64 '{formula}' formula {expected:.6f}")

    uses = registry_loss_uses()
    subjects = tuple(f"{output}, loss={mode}" for output, mode in uses)

    def formula(ctx: Context, subject: str) -> Measurement:
        from ftmed_core import losses as core_losses

        output, mode = subject.split(", loss=")
        out = _loss_probe(ctx, backend, n_rows)
        z, y = out["baseline_logits"], sample_data(n_rows)[1]
        value = float(out[f"loss/{output}/{mode}"])
        mine, tf = effective_loss(label, mode), effective_loss("keras", mode)
        tf_value = core_losses.mean_loss(z, y, output, tf)
        names = uses[(output, mode)]
        variants = ", ".join(names) if len(names) <= 2 else f"{names[0]} and {len(names) - 1} more"
        gap = abs(value - tf_value)
        if mine == tf:
            verdict = "the same formula as TensorFlow"
        elif gap > 1e-3:
            verdict = f"TensorFlow computes '{tf}' ({tf_value:.6f}): a known difference, not a failure"
        else:  # e.g. softmax: the probability formula is softmax cross-entropy, written another way
            verdict = f"TensorFlow's '{tf}' formula gives the same number on this output"
        return Measurement(gap, f"{variants}: {label} computes the '{mine}' formula ({value:.6f}; "
                                                  f"Lightning counterpart loss={mine}); {verdict}")

    mode_ids = {mode: MODE_IDS.get(mode, mode) for mode in LOSS_MODES}
    checks = [Check(f"loss.{mode_ids[mode]}@{backend}", 4, f"loss ({mode})", LOSS,
                    "losses ~2.2 (ulp 2.4e-7); Lightning in the loss mode that computes what this backend computes",
                    loss(mode), OUTPUT_ACTIVATIONS, "output", frameworks=pair) for mode in LOSS_MODES]
    checks += [
        Check(f"loss.pin@{backend}", 4, "pin: effective_loss formula", LOSS,
              "the sigmoid output's loss 'keras' is the formula effective_loss names for this backend", pin,
              ("sigmoid",), "output", frameworks=pair),
        Check(f"loss.formula@{backend}", 4, "formula; gap to TF's", informational(),
              "which formula the backend computes per the variants' (output, loss): measured, shown, not asserted",
              formula, subjects, frameworks=f"{label} vs keras"),
    ]
    return checks


def _gradient_checks(backend: str, n_rows: int = 128) -> list[Check]:
    label = keras_label(backend)
    pair = f"{label} vs lightning"

    def probe_grads(ctx: Context) -> dict:
        x, y = sample_data(n_rows)
        return _probe(ctx, backend, 5, {"checks": ["gradients"], "output_activations": list(OUTPUT_ACTIVATIONS),
                                        "loss_modes": list(LOSS_MODES)}, {"x": x, "y": y})[1]

    def gradients(mode: str):
        def measure(ctx: Context, output: str) -> Measurement:
            from ftmed_core.protocol import initial_weights

            out = probe_grads(ctx)
            x, y = sample_data(n_rows)
            lightning_mode = matching_lightning_loss(label, mode)
            config = replace(BASELINE, output_activation=output, loss=lightning_mode)
            net = ctx.sides.port.build_mlp(config, INPUT_DIM, N_CLASSES, initial_weights(BASELINE, INPUT_DIM, N_CLASSES))
            loss, torch_grads = torch_loss_and_gradients(ctx.sides.port, net, x, y, output, lightning_mode)
            keras_grads = [out[f"grad/{output}/{mode}/{i}"] for i in range(len(torch_grads))]
            scale = max(float(np.abs(g).max()) for g in keras_grads)
            diff = max_diff(keras_grads, torch_grads)
            loss_gap = abs(float(out[f"grad_loss/{output}/{mode}"]) - loss)
            return Measurement(diff, f"max|g| {scale:.2e}; relative gap {diff / scale if scale else 0:.1e}; "
                                     f"loss gap {loss_gap:.1e} (lightning loss={lightning_mode})", scale)
        return measure

    checks = []
    for mode in LOSS_MODES:
        mode_id = MODE_IDS.get(mode, mode)
        bounded = tuple(o for o in OUTPUT_ACTIVATIONS if o not in SIGNED_OUTPUTS)
        signed = tuple(o for o in OUTPUT_ACTIVATIONS if o in SIGNED_OUTPUTS)
        checks.append(Check(f"grad.{mode_id}@{backend}", 5, f"gradients ({mode})", GRADIENTS,
                            "a batch sum of products through 4 layers: rounding scales with the largest gradient",
                            gradients(mode), bounded, "output", frameworks=pair))
        checks.append(Check(f"grad.{mode_id}.signed@{backend}", 5, f"gradients ({mode})", GRADIENTS_SIGNED,
                            "divide-by-sum loss on signed outputs: 1/sum(outputs) amplifies the logits' rounding",
                            gradients(mode), signed, "output", frameworks=pair))
    return checks


# ------------------------------------------------------------------------------------ 6 optimizers


def recorded_gradients_torch(port, steps: int = OPEN_LOOP_STEPS) -> tuple[list, list]:
    """(start as (kernel, bias) pairs, `steps` gradient lists in the neutral layout) from the port: a
    2352-32-16-9 ReLU net trained by plain SGD (lr 0.01) through the port's loss on batches of 32 synthetic
    images. Framework-neutral arrays: every backend replays the same sequence, none needs TensorFlow."""
    import torch

    from ftmed_core.protocol import initial_weights

    config = replace(BASELINE, hidden_units=HIDDEN)
    start = initial_weights(config, INPUT_DIM, N_CLASSES)
    x, y = sample_data(BATCH * steps)
    net = port.build_mlp(config, INPUT_DIM, N_CLASSES, start)
    grads_seq = []
    for step in range(steps):
        rows = slice(step * BATCH, (step + 1) * BATCH)
        net.zero_grad(set_to_none=True)
        port.keras_loss(net(torch.from_numpy(x[rows])), torch.from_numpy(y[rows]), "softmax", "keras").backward()
        grads_seq.append([(p.grad.numpy().T if p.ndim == 2 else p.grad.numpy()).copy() for p in net.parameters()])
        with torch.no_grad():
            for p in net.parameters():
                p -= 0.01 * p.grad
    return start, grads_seq


def _optimizer_checks(backend: str) -> list[Check]:
    label = keras_label(backend)
    pair = f"{label} vs lightning"

    def replay(ctx: Context) -> tuple[list, list, dict]:
        start, grads_seq = ctx.memo(("torch gradients",), lambda: recorded_gradients_torch(ctx.sides.port))
        flat_start = [a for p in start for a in p]
        arrays = {**{f"start/{i}": a for i, a in enumerate(flat_start)},
                  **{f"grads/{s}/{i}": g for s, grads in enumerate(grads_seq) for i, g in enumerate(grads)}}
        request = {"checks": ["optimizers"], "open_loop_hidden": list(HIDDEN), "record_steps": list(RECORD_STEPS),
                   "optimizers": {name: optimizer_config(name).__dict__ for name in OPTIMIZERS}}
        return start, grads_seq, _probe(ctx, backend, 6, request, arrays)[1]

    def measure(tolerance: Tolerance):
        def keras_rule(ctx: Context, name: str) -> Measurement:
            start, grads_seq, out = replay(ctx)
            port = replay_port(ctx, replace(optimizer_config(name), semantics="keras"), start, grads_seq)
            recorded = [port[s - 1] for s in RECORD_STEPS]
            worst = (-1.0, 0.0, 0.0)  # (gap / bound, gap, max|w|) per variable over the recorded steps
            for v in range(len(recorded[0])):
                keras_v = out[f"replay/{name}/{v}"]
                gap = max(max_diff([keras_v[k]], [recorded[k][v]]) for k in range(len(RECORD_STEPS)))
                largest = float(np.abs(keras_v).max())
                worst = max(worst, (gap / tolerance.bound(largest), gap, largest))
            moved = max_diff([out[f"replay/{name}/0"][-1]], [start[0][0]])
            return Measurement(worst[1], f"{name} at Keras's defaults; {OPEN_LOOP_STEPS} steps; weights moved up to "
                                         f"{moved:.1e}; worst variable has max|w| {worst[2]:.2f}", worst[2])
        return keras_rule

    wider = WIDER_OPTIMIZERS.get(backend, {})
    checks = [Check(f"opt.keras@{backend}", 6, "replay, keras rule", KERAS_RULE,
                    "rounding scales with the weights' ulps; a real rule difference is ~50 ulps", measure(KERAS_RULE),
                    tuple(n for n in OPTIMIZERS if n not in wider), frameworks=pair)]
    for ulps in sorted(set(wider.values())):
        tolerance = replace(KERAS_RULE, ulps=ulps)
        names = tuple(n for n in OPTIMIZERS if wider.get(n) == ulps)
        checks.append(Check(f"opt.keras.wide@{backend}", 6, "replay, keras rule", tolerance, WIDER_REASON[backend],
                            measure(tolerance), names, frameworks=pair))
    return checks


# ----------------------------------------------------------------------------------- 7 closed loop


def _closed_loop(ctx: Context, backend: str) -> dict:
    def compute() -> dict:
        from ftmed_core.data import load_experiment_data
        from ftmed_core.protocol import initial_weights
        from ftmed_core.synth import write_synthetic

        label = keras_label(backend)
        folder = Path(ctx.workdir) / f"closed_loop_{backend}"
        write_synthetic(folder, "pathmnist", 28, scale=CLOSED_LOOP_SCALE, seed=7, overwrite=True)
        configs = {v: replace(VARIANTS[v].config, data_dir=str(folder), epochs=1) for v in CLOSED_LOOP_VARIANTS}
        _, out = _probe(ctx, backend, 7, {"checks": ["closed_loop"],
                                          "closed_loop_configs": {v: c.to_dict() for v, c in configs.items()},
                                          "record_steps_closed": list(range(1, EARLY_STEPS + 1))})
        result = {}
        for variant, config in configs.items():
            data = load_experiment_data(config, allow_download=False)
            weights = initial_weights(config, data.input_dim, data.n_classes)
            mode = matching_lightning_loss(label, config.loss)
            losses, weights_after = ctx.sides.port.train_one_epoch(replace(config, loss=mode), data, weights)
            keras_losses = [float(v) for v in out[f"closed/{variant}/losses"]]
            if len(keras_losses) != len(losses):
                raise RuntimeError(f"{label} took {len(keras_losses)} steps, lightning {len(losses)}")
            n = len(losses)
            last = [out[f"closed/{variant}/weights/{n}/{i}"] for i in range(len(weights_after[-1]))]
            row = {"keras": keras_losses, "lightning": losses, "mode": mode,
                   "gaps": [abs(a - b) for a, b in zip(keras_losses, losses)],
                   "last_weights_gap": max_diff(last, weights_after[-1])}
            tf_mode = effective_loss("keras", config.loss)
            if tf_mode != mode:  # what the same Keras code trains on under TensorFlow: Lightning in TF's mode
                tf_losses, _ = ctx.sides.port.train_one_epoch(replace(config, loss=tf_mode), data, weights)
                row["tf_like"] = (tf_mode, tf_losses[0])
            result[variant] = row
        return result
    return ctx.memo(("backend closed loop", backend), compute)


def _closed_loop_checks(backend: str) -> list[Check]:
    label = keras_label(backend)
    pair = f"{label} vs lightning"

    def step_1(ctx: Context, variant: str) -> Measurement:
        r = _closed_loop(ctx, backend)[variant]
        return Measurement(r["gaps"][0], f"{label} {r['keras'][0]:.6f}, lightning (loss={r['mode']}) "
                                         f"{r['lightning'][0]:.6f}; same weights, same batch")

    def early(ctx: Context, variant: str) -> Measurement:
        gaps = _closed_loop(ctx, backend)[variant]["gaps"][:EARLY_STEPS]
        return Measurement(max(gaps), "per-step gaps " + ", ".join(f"{g:.1e}" for g in gaps))

    def drift_loss(ctx: Context, variant: str) -> Measurement:
        r = _closed_loop(ctx, backend)[variant]
        return Measurement(max(r["gaps"]), f"{len(r['gaps'])} steps; last-step gap {r['gaps'][-1]:.1e}; mean loss "
                                           f"{label} {np.mean(r['keras']):.5f} vs lightning {np.mean(r['lightning']):.5f}")

    def drift_weights(ctx: Context, variant: str) -> Measurement:
        return Measurement(_closed_loop(ctx, backend)[variant]["last_weights_gap"], "max |dW| after the last step")

    def versus_tf(ctx: Context, variant: str) -> Measurement:
        r = _closed_loop(ctx, backend)[variant]
        if "tf_like" not in r:
            return Measurement(0.0, "same formula as TensorFlow: nothing to measure")
        tf_mode, tf_first = r["tf_like"]
        return Measurement(abs(r["keras"][0] - tf_first),
                           f"step-1 loss {label} {r['keras'][0]:.6f} vs TensorFlow's formula (lightning "
                           f"loss={tf_mode}) {tf_first:.6f}: a known difference, not a failure")

    # Only a sigmoid output trains differently: on softmax the two formulas are the same function.
    differing = tuple(v for v in CLOSED_LOOP_VARIANTS
                      if effective_loss(label, VARIANTS[v].config.loss) != effective_loss("keras", VARIANTS[v].config.loss)
                      and VARIANTS[v].config.output_activation == "sigmoid")
    checks = [
        Check(f"loop.step1@{backend}", 7, "step 1 loss", Tolerance(2e-6),
              "identical weights and batch: only forward/loss rounding (layer 4's tolerance)", step_1,
              CLOSED_LOOP_VARIANTS, frameworks=pair),
        Check(f"loop.early@{backend}", 7, f"steps 1-{EARLY_STEPS} loss", Tolerance(1e-5),
              "after step 1 rounding-level gradient entries get different Adam updates", early,
              CLOSED_LOOP_VARIANTS, frameworks=pair),
        Check(f"loop.drift.loss@{backend}", 7, "epoch drift: loss", informational(),
              "trajectories are chaotic: shown, not asserted", drift_loss, CLOSED_LOOP_VARIANTS, frameworks=pair),
        Check(f"loop.drift.w@{backend}", 7, "epoch drift: weights", informational(),
              "trajectories are chaotic: shown, not asserted", drift_weights, CLOSED_LOOP_VARIANTS, frameworks=pair),
    ]
    if differing:
        checks.append(Check(f"loop.vs-tf@{backend}", 7, "step 1 vs TF's formula", informational(),
                            "the loss TensorFlow would train on here: a known, measured difference", versus_tf,
                            differing, frameworks=f"{label} vs keras"))
    return checks


# ------------------------------------------------------------------------------------------- entry


def backend_checks(backend: str, layer: int) -> list[Check]:
    """The checks of `layer` (1-7) for Keras on `backend` against Lightning, Keras in a child process; [] for
    layer 8 (the statistical layer runs on TensorFlow, in process). `ftmed parity` uses these for "jax" and
    "torch"; TensorFlow's rows there are the suite's own, in process (`suite.layer_checks`), and "tensorflow"
    here runs the same probe on TensorFlow (tests/test_keras_backends.py compares every backend alike)."""
    keras_label(backend)  # ConfigError for an unknown backend
    if layer in (1, 2, 3):
        return _structure_checks(backend, layer)
    builders = {4: _loss_checks, 5: _gradient_checks, 6: _optimizer_checks, 7: _closed_loop_checks}
    return builders[layer](backend) if layer in builders else []
