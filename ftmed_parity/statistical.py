"""Layer 8: outcomes over seeds. The reference's and the port's full training (`train`) on a synthetic file
(PathMNIST at 3 %: 2,160 training rows, 215 test rows; 3 epochs; Adagrad at Keras's defaults) reach
equivalent test accuracy: paired TOST on the per-seed differences, margin 1 accuracy point (the default
margin of `ftmed compare`), alpha 0.05. A deliberately broken port configuration -- Adagrad with
initial_accumulator_value=0 (torch.optim's default) against Keras's 0.1 -- must be detected: its paired
difference significant (p < 0.05) and TOST not equivalent.

Why Adagrad: it is where the broken default bites (the first update is ~lr*sign(g) instead of
lr*g/sqrt(0.1)), so one set of reference runs serves every row. Why paired: a seed fixes the initial
weights and the batch order of both frameworks, so the two runs of a seed differ only by rounding, while
the seed-to-seed spread is several points. 6 seeds show equivalence within 1 point; the broken
configuration is far enough off that 5 of its seeds suffice. Runs use `deterministic=False`: Keras's
`enable_op_determinism()` is process-wide and one-way and would change the numbers of every later check
in the process (either setting repeats run to run on CPU).
"""

from __future__ import annotations

import math

from dataclasses import replace
from pathlib import Path
from typing import Iterable

from ftmed_core.variants import VARIANTS
from ftmed_parity.checks import Check, Context, Measurement, Tolerance

SEEDS = tuple(range(6))
BROKEN_SEEDS = 5
EPOCHS = 3
SCALE = 0.03
MARGIN = 1.0  # accuracy points, the same default margin as `ftmed compare`
ALPHA = 0.05


def _accuracies(train, config, seeds, runs_dir: Path, who: str) -> list[float]:
    from ftmed_core.config import RuntimeConfig

    runtime = RuntimeConfig(accelerator="cpu", threads=1, deterministic=False, progress=False)
    out = []
    for seed in seeds:
        record = train(replace(config, seed=seed), runtime=runtime, runs_dir=runs_dir)
        if record.status != "finished":
            raise RuntimeError(f"{who} seed {seed} failed: {record.error}")
        out.append(100.0 * record.test["accuracy"])
    return out


def _outcomes(ctx: Context, seeds: tuple[int, ...], epochs: int, margin: float) -> dict:
    from ftmed_core.stats import paired_difference, summarize, tost
    from ftmed_core.synth import write_synthetic

    tmp = Path(ctx.workdir) / "statistical"
    write_synthetic(tmp / "data", "pathmnist", 28, scale=SCALE, seed=3)
    config = replace(VARIANTS["adagrad"].config, data_dir=str(tmp / "data"), epochs=epochs)
    broken = replace(config, optimizer=replace(config.optimizer, initial_accumulator_value=0.0))
    reference, port = ctx.sides.reference, ctx.sides.port
    keras_acc = _accuracies(reference.train, config, seeds, tmp / "runs" / reference.label, reference.label)
    port_acc = _accuracies(port.train, config, seeds, tmp / "runs" / port.label, port.label)
    broken_acc = _accuracies(port.train, broken, seeds[:BROKEN_SEEDS], tmp / "runs-broken", f"broken {port.label}")
    paired_keras = keras_acc[:len(broken_acc)]
    return {"same": tost(port_acc, keras_acc, margin, alpha=ALPHA, paired=True),
            "bad": tost(broken_acc, paired_keras, margin, alpha=ALPHA, paired=True),
            "diff_same": paired_difference(port_acc, keras_acc),
            "diff_bad": paired_difference(broken_acc, paired_keras),
            "k": summarize(keras_acc), "l": summarize(port_acc), "b": summarize(broken_acc),
            "n_broken": len(broken_acc)}


def _decided(p: float, diff: float, holds: bool) -> float:
    """A check's p-value, or -- where the per-seed differences have no spread, so no test exists -- the
    decided outcome: 0.0 where the fact the check asks about holds exactly in every seed (e.g. every seed
    identical, or the same shift inside the margin), 1.0 where it does not. The detail says which."""
    if not math.isnan(p):
        return p
    return 0.0 if holds else 1.0


def statistical_checks(seeds: Iterable[int] = SEEDS, epochs: int = EPOCHS, margin: float = MARGIN) -> list[Check]:
    seeds = tuple(seeds)

    def outcomes(ctx: Context) -> dict:
        return ctx.memo(("outcomes", seeds, epochs, margin), lambda: _outcomes(ctx, seeds, epochs, margin))

    def equivalent(ctx: Context, _: str) -> Measurement:
        r = outcomes(ctx)
        diff = r["diff_same"].diff
        return Measurement(_decided(r["same"].p_value, diff, abs(diff) < margin),
                           f"keras {r['k']} vs port {r['l']} %; paired difference {diff:+.2f} points: "
                           f"{r['same'].verdict}")

    def broken_differs(ctx: Context, _: str) -> Measurement:
        r = outcomes(ctx)
        diff = r["diff_bad"].diff
        return Measurement(_decided(r["diff_bad"].p_value, diff, diff != 0.0),
                           f"keras {r['k']} vs broken port {r['b']} %; paired difference {diff:+.2f} points")

    def broken_not_equivalent(ctx: Context, _: str) -> Measurement:
        r = outcomes(ctx)
        diff = r["diff_bad"].diff
        return Measurement(_decided(r["bad"].p_value, diff, abs(diff) >= margin), f"TOST: {r['bad'].verdict}")

    broken = f"adagrad acc0=0, {min(len(seeds), BROKEN_SEEDS)} seeds"
    return [
        Check("stat.equiv", 8, "accuracy equivalent (TOST)", Tolerance(ALPHA, compare="<"),
              f"paired TOST p, margin {margin:g} accuracy point: a seed pairs weights and batch order",
              equivalent, (f"adagrad, {len(seeds)} seeds",)),
        Check("stat.broken", 8, "broken config detected", Tolerance(ALPHA, compare="<"),
              "paired t-test p: the broken port must differ significantly", broken_differs, (broken,)),
        Check("stat.broken.tost", 8, "broken config not equivalent", Tolerance(ALPHA, compare=">="),
              f"TOST p, margin {margin:g} point: the broken port must not pass as equivalent",
              broken_not_equivalent, (broken,)),
    ]
