"""The comparison report's rows: per variant, the statistics the tables show, from run records only.

One row per variant. Per framework: test accuracy mean ± std over seeds, AUC, loss, training time,
seconds per epoch, parameter count. Across frameworks: the accuracy difference of Lightning and each Keras
column (`keras` on TensorFlow, `keras[jax]`, `keras[torch]`: lightning - that column), paired by seed
(Welch where fewer than two seeds are common), with a 95 % CI and a TOST equivalence verdict against a
stated margin. Versus the baseline (`vs_baseline`), per framework and for the per-seed mean
over frameworks: the variant's accuracy change with a 95 % CI and an effect size, paired by seed where
the variant starts from the baseline's initial weights and batch order (`shares_start`), Welch otherwise;
each seed counts once per side. p-values are Holm-adjusted over the variants compared with the baseline
in that column. `power_notes` says how many seeds the equivalence and vs-baseline tests would need for
80 % power where the study did not show them. Accuracies are in percent.

The tests themselves are `ftmed_core.stats`; `ftmed.reporting.tables` renders these rows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

from ftmed_core.records import FRAMEWORKS, RunRecord
from ftmed_core.stats import (
    TIE, constant_text, holm, paired_difference, paired_power, seeds_needed, summarize, tost, tost_power, welch,
    welch_power,
)
from ftmed_core.variants import VARIANTS

DEFAULT_MARGIN = 1.0  # percentage points of test accuracy
ALPHA = 0.05
POWER = 0.8  # the power the seed-count advice aims for
SEED_MEAN = "seed mean"  # the pooled vs-baseline view: frameworks averaged per seed, then tested over seeds


def check_margin(margin) -> float:
    """The equivalence margin as a float; ConfigError unless it is a finite number > 0 (percentage points).

    An infinite margin makes every pair "equivalent", and zero, negative or NaN margins make TOST's
    verdict meaningless.
    """
    from ftmed_core.errors import ConfigError

    try:
        value = float(margin)
    except (TypeError, ValueError):
        raise ConfigError(f"equivalence margin must be a number of percentage points, got {margin!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"equivalence margin must be a finite number > 0 (percentage points), got {margin!r}")
    return value


@dataclass
class FrameworkCell:
    framework: str
    n_finished: int
    n_failed: int
    accuracy: list  # percent, one per finished seed
    auc: list
    loss: list
    training_seconds: list
    seconds_per_epoch: list
    parameter_count: int | None
    seeds: list
    errors: list = field(default_factory=list)
    jobs: list = field(default_factory=list)  # --jobs of each finished run that recorded it (runs side by side)

    def mean(self, name: str) -> float:
        return summarize(getattr(self, name)).mean


@dataclass
class Row:
    variant: str
    config_hash: str
    changes: str
    study_accuracy: float | None
    cells: dict  # framework -> FrameworkCell
    difference: dict  # differences["keras"] (lightning - Keras on TensorFlow), {} without both
    # variant - baseline: the headline view (SEED_MEAN with >= 2 frameworks, else the one framework) as
    # `_vs_view` builds it and `_add_vs_baseline` completes it, plus "view" and "per_framework": {fw: view}.
    vs_baseline: dict
    # lightning - each Keras column present, keyed by its label; entries as `build_rows` writes them.
    differences: dict = field(default_factory=dict)


def _cell(framework: str, records: list[RunRecord]) -> FrameworkCell:
    done = [r for r in records if r.finished]
    failed = [r for r in records if r.status == "failed"]
    per_epoch = [float(np.median(r.history["epoch_seconds"])) for r in done if r.history.get("epoch_seconds")]
    return FrameworkCell(
        framework=framework,
        n_finished=len(done),
        n_failed=len(failed),
        accuracy=[100.0 * r.test["accuracy"] for r in done],
        auc=[r.test["auc"] for r in done if r.test.get("auc") is not None],
        loss=[r.test["loss"] for r in done if r.test.get("loss") is not None],
        training_seconds=[r.training_seconds for r in done],
        seconds_per_epoch=per_epoch,
        parameter_count=(done or records)[0].parameter_count if (done or records) else None,
        seeds=sorted(r.config["seed"] for r in done),
        jobs=sorted({int(r.runtime["jobs"]) for r in done if r.runtime.get("jobs")}),
        errors=[f"seed {r.config['seed']}: {r.error}" for r in failed],
    )


def _seedless_hash(record: RunRecord) -> str:
    return replace(record.experiment, seed=0).config_hash()


def _study_accuracy(experiment) -> float | None:
    """The study's figure, only for a registry study variant run with the study's protocol (any seeds/epochs)."""
    variant = VARIANTS.get(experiment.name)
    if variant is None or variant.study_accuracy is None:
        return None
    same = replace(experiment, seed=variant.config.seed, epochs=variant.config.epochs,
                   shuffle=variant.config.shuffle)
    return variant.study_accuracy if same.config_hash() == variant.config.config_hash() else None


def _paired_accuracies(records: list[RunRecord], other: str = "keras") -> tuple[list, list, str]:
    """Lightning and `other` (a Keras label) accuracies (%), paired by seed where both finished the same >= 2 seeds.

    A seed fixes the initial weights and the batch order for both frameworks, so the two runs of a seed
    start identical and differ only by rounding: the per-seed difference is the quantity to test. With
    disjoint seed sets, Welch's unpaired comparison of all finished runs (untested where a side has fewer
    than two). With exactly one common seed and two or more per side the
    method is "not comparable": pairing needs two, and an unpaired test would count that seed's identical
    start on both sides.
    """
    by_seed = {fw: _accuracy_by_seed(records, fw) for fw in ("lightning", other)}
    common = sorted(set(by_seed["lightning"]) & set(by_seed[other]))
    if len(common) >= 2:
        return [by_seed["lightning"][s] for s in common], [by_seed[other][s] for s in common], "paired"
    if common and min(len(by_seed["lightning"]), len(by_seed[other])) >= 2:
        return [], [], "not comparable"
    return list(by_seed["lightning"].values()), list(by_seed[other].values()), "welch"


def _not_comparable_reason(common: list) -> str:
    return (f"not comparable: only seed {common[0]} finished on both sides (pairing needs >= 2 common seeds, "
            f"and an unpaired test would use seed {common[0]} on both sides)")


# What `ftmed_core.protocol` draws a run's start from, besides the seed: initial weights from the layer
# widths (input width and class count come with the data file) and the init scheme; the row order from
# the number of training rows (data file and split) and the shuffle policy.
_START_FIELDS = ("hidden_units", "init", "dataset", "size", "val_mode", "val_fraction", "shuffle")


def shares_start(a, b) -> bool:
    """Whether two ExperimentConfigs give a seed the same initial weights and the same row order, so that
    their runs pair by seed (same data file assumed, as within one comparison)."""
    return all(getattr(a, name) == getattr(b, name) for name in _START_FIELDS)


def _accuracy_by_seed(records: list[RunRecord], framework: str | None = None) -> dict:
    return {r.config["seed"]: 100.0 * r.test["accuracy"] for r in records
            if r.finished and (framework is None or r.framework == framework)}


def _seed_means(records: list[RunRecord], base_runs: list[RunRecord], frameworks: list[str]) -> tuple[dict, dict, list]:
    """(variant, baseline, left_out): per seed, the mean accuracy over the frameworks that finished that seed
    of the variant *and* of the baseline (one number per seed and side, because a seed's runs in different
    frameworks start identical and are one observation; the same frameworks on both sides, so the
    difference compares like with like). `left_out` names each framework with no such seed, with why."""
    variant = {fw: _accuracy_by_seed(records, fw) for fw in frameworks}
    base = {fw: _accuracy_by_seed(base_runs, fw) for fw in frameworks}
    left_out = []
    for fw in frameworks:
        if not variant[fw]:
            left_out.append(f"{fw}: no finished seed")
        elif not base[fw]:
            left_out.append(f"{fw}: no finished baseline seed")
        elif not set(variant[fw]) & set(base[fw]):
            left_out.append(f"{fw}: no seed finished in both variant and baseline")
    seeds = sorted({s for fw in frameworks for s in variant[fw]})
    means_v, means_b = {}, {}
    for s in seeds:
        both = [fw for fw in frameworks if s in variant[fw] and s in base[fw]]
        if both:
            means_v[s] = float(np.mean([variant[fw][s] for fw in both]))
            means_b[s] = float(np.mean([base[fw][s] for fw in both]))
    return means_v, means_b, left_out


def _vs_view(variant: dict, base: dict, pair: bool, left_out: list | None = None) -> dict:
    """variant - baseline accuracy (seed -> %). When `pair` (the variant shares the baseline's start) the
    method is paired, over the common seeds; with one common seed it is "not comparable" (a seed's two runs
    start alike, so an unpaired test would count that start on both sides), with none Welch over the two
    disjoint seed sets (or n/a where a side has fewer than 2). Without `pair`, Welch over all seeds of each side. A zero-spread difference is
    `constant` (no p-value, no interval). `left_out`: frameworks a seed-mean view could not use, with why."""
    common = sorted(set(variant) & set(base))
    extra = {"left_out": list(left_out or []), "constant": False, "reason": ""}
    reason = ""
    if not variant or not base:
        reason = "n/a: no finished seed" if not variant else "n/a: no finished baseline seed"
    elif pair and len(common) == 1 and min(len(variant), len(base)) >= 2:
        reason = _not_comparable_reason(common)
    if reason:
        nan = float("nan")
        method = "not comparable" if variant and base else ("paired" if pair else "welch")
        return {"diff": nan, "low": nan, "high": nan, "p_value": nan, "df": nan, "method": method,
                "n_a": len(variant), "n_b": len(base), "effect_size": nan, "effect_name": "d_z" if pair else "d",
                **extra, "reason": reason}
    if pair and common:
        a, b = [variant[s] for s in common], [base[s] for s in common]
        d = paired_difference(a, b)
        spread = {"sd_diff": float(np.std(np.subtract(a, b), ddof=1)) if len(a) > 1 else float("nan")}
        effect_name = "d_z"
    else:
        a, b = list(variant.values()), list(base.values())
        d = welch(a, b)
        spread = {"sd_variant": summarize(a).std, "sd_baseline": summarize(b).std}
        effect_name = "d"
    extra["constant"] = d.constant
    return {"diff": d.diff, "low": d.low, "high": d.high, "p_value": d.p_value, "df": d.df, "method": d.method,
            "n_a": d.n_a, "n_b": d.n_b, "effect_size": d.effect_size, "effect_name": effect_name, **spread,
            **extra}


def _vs_verdict(view: dict) -> str:
    """better/worse: Holm-adjusted p < ALPHA; within seed noise: these seeds did not reach it. A constant
    difference and a not-comparable view state that instead, with no test."""
    if view.get("constant"):
        return constant_text(view["diff"], min(view["n_a"], view["n_b"]), view["method"] == "paired")
    if view.get("reason"):
        return view["reason"]
    p = view.get("p_holm", float("nan"))
    if math.isnan(p):
        return "n/a (need >= 2 seeds each)"
    if p < ALPHA:
        return "better" if view["diff"] > 0 else "worse"
    return "within seed noise"


def _tost_seeds_needed(a: list, b: list, method: str, margin: float) -> int | None:
    """Seeds (paired runs) for 80 % power of the paired TOST within +-margin if the frameworks truly agree,
    with the measured spread of the per-seed differences (Welch rows: the two spreads combined, as if
    the runs were paired with no benefit from pairing)."""
    if min(len(a), len(b)) < 2:
        return None
    if method == "paired":
        sd = float(np.std(np.subtract(a, b), ddof=1))
    else:
        sd = math.hypot(summarize(a).std, summarize(b).std)
    if sd <= TIE:  # a zero measured spread says nothing about the spread to plan for
        return None
    return seeds_needed(lambda n: tost_power(n, sd, margin, ALPHA), POWER)


def _vs_seeds_needed(view: dict, margin: float, m: int) -> int | None:
    """Seeds for 80 % power to detect a change of `margin` pp with this view's test and measured spread,
    at Holm's strictest level alpha/m (so the count suffices at every step)."""
    level = ALPHA / max(1, m)
    if view["method"] == "paired":
        return seeds_needed(lambda n: paired_power(n, margin, view["sd_diff"], level), POWER)
    return seeds_needed(lambda n: welch_power(n, margin, view["sd_variant"], view["sd_baseline"], level), POWER)


def _add_vs_baseline(rows: list[Row], margin: float) -> None:
    """Holm-adjust each vs-baseline column over its variants, then add verdicts and seed-count advice."""
    views = sorted({name for row in rows for name in row.vs_baseline.get("_views", {})})
    for name in views:
        members = [row.vs_baseline["_views"][name] for row in rows if name in row.vs_baseline.get("_views", {})]
        m = sum(1 for v in members if not math.isnan(v["p_value"]))
        for view, adjusted in zip(members, holm([v["p_value"] for v in members])):
            view["p_holm"], view["holm_m"] = adjusted, m
            view["verdict"] = _vs_verdict(view)
            if not math.isnan(view["p_value"]):
                view["seeds_for_power"] = _vs_seeds_needed(view, margin, m)
    for row in rows:
        found = row.vs_baseline.pop("_views", None)
        if not found:
            continue
        per_framework = {k: v for k, v in found.items() if k != SEED_MEAN}
        headline = SEED_MEAN if SEED_MEAN in found else next(iter(found))
        row.vs_baseline = {**found[headline], "view": headline, "per_framework": per_framework}


def build_rows(records: list[RunRecord], margin: float = DEFAULT_MARGIN, baseline: str = "baseline") -> list[Row]:
    margin = check_margin(margin)
    groups: dict[tuple[str, str], list[RunRecord]] = {}
    order: list[tuple[str, str]] = []
    for record in records:
        key = (record.config["name"], _seedless_hash(record))
        if key not in groups:
            groups[key] = []
            order.append(key)
        groups[key].append(record)
    registry_order = {name: i for i, name in enumerate(VARIANTS)}
    order.sort(key=lambda k: (registry_order.get(k[0], len(registry_order)), k[0]))

    base_runs = next((groups[k] for k in order if k[0] == baseline), None)
    rows = []
    for key in order:
        recs = groups[key]
        cells = {fw: _cell(fw, [r for r in recs if r.framework == fw]) for fw in FRAMEWORKS
                 if any(r.framework == fw for r in recs)}
        differences: dict = {}
        for other in (fw for fw in cells if fw != "lightning" and "lightning" in cells):
            a, b, method = _paired_accuracies(recs, other)
            if method == "not comparable":
                common = sorted(set(_accuracy_by_seed(recs, "lightning")) & set(_accuracy_by_seed(recs, other)))
                nan = float("nan")
                differences[other] = {"diff": nan, "low": nan, "high": nan, "p_value": nan, "tost_p": nan,
                                      "margin": margin, "equivalent": False, "constant": False,
                                      "verdict": _not_comparable_reason(common), "method": method, "n": 1,
                                      "seeds_for_power": None}
                continue
            d = paired_difference(a, b) if method == "paired" else welch(a, b)
            eq = tost(a, b, margin, ALPHA, paired=method == "paired")
            differences[other] = {"diff": d.diff, "low": d.low, "high": d.high, "p_value": d.p_value,
                                  "tost_p": eq.p_value, "margin": margin, "equivalent": eq.equivalent,
                                  "constant": d.constant, "verdict": eq.verdict, "method": method, "n": len(a),
                                  "seeds_for_power": _tost_seeds_needed(a, b, method, margin)}
        difference = differences.get("keras", {})
        vs_baseline: dict = {}
        experiment = recs[0].experiment
        if base_runs is not None and key[0] != baseline:
            pair = shares_start(experiment, base_runs[0].experiment)
            frameworks = [fw for fw in FRAMEWORKS if any(r.framework == fw for r in recs)
                          and any(r.framework == fw for r in base_runs)]
            views = {fw: _vs_view(_accuracy_by_seed(recs, fw), _accuracy_by_seed(base_runs, fw), pair)
                     for fw in frameworks}
            if len(frameworks) > 1:
                means_v, means_b, left_out = _seed_means(recs, base_runs, frameworks)
                views[SEED_MEAN] = _vs_view(means_v, means_b, pair, left_out)
            vs_baseline = {"_views": views}  # completed by _add_vs_baseline once every row is known
        base_config = VARIANTS[baseline].config if baseline in VARIANTS else experiment
        # Seeds and epochs are the study's protocol, not the variant's change: leave them out of "changes".
        base_config = replace(base_config, seed=experiment.seed, epochs=experiment.epochs,
                              shuffle=experiment.shuffle)
        rows.append(Row(key[0], key[1], experiment.describe_changes(base_config), _study_accuracy(experiment),
                        cells, difference, vs_baseline, differences))
    _add_vs_baseline(rows, margin)
    return rows


def _needed_text(needed: int | None) -> str:
    return "more than 1000" if needed is None else str(needed)


def power_notes(rows: list[Row], margin: float = DEFAULT_MARGIN) -> list[str]:
    """One line per test that the runs are too few seeds for (80 % power, measured seed spread); empty when
    every shown-or-not verdict already had the seeds it needs.

    Equivalence: paired TOST within +-margin assuming the frameworks truly agree. vs baseline (headline
    view): a two-sided test detecting a change of `margin` pp at Holm's strictest level alpha/m."""
    notes = []
    tested = [r for r in rows if r.difference and not math.isnan(r.difference.get("tost_p", float("nan")))]
    not_shown = [r for r in tested if not r.difference["equivalent"]
                 and not r.difference["verdict"].startswith("different")]
    short = [r for r in not_shown
             if r.difference["seeds_for_power"] is None or r.difference["seeds_for_power"] > r.difference["n"]]
    if short:
        needed = [r.difference["seeds_for_power"] for r in short]
        top = None if None in needed else max(needed)
        per = ", ".join(f"{r.variant} {_needed_text(r.difference['seeds_for_power'])}" for r in short)
        notes.append(f"equivalence not shown for {len(not_shown)} of {len(tested)} variants: about "
                     f"{_needed_text(top)} seeds would be needed for {POWER:.0%} power at ±{margin:g} pp if the "
                     f"frameworks truly agree ({per})")
    compared = [r for r in rows if r.vs_baseline and not math.isnan(r.vs_baseline["p_value"])]
    quiet = [r for r in compared if r.vs_baseline["verdict"] == "within seed noise"]
    short = [r for r in quiet if r.vs_baseline["seeds_for_power"] is None
             or r.vs_baseline["seeds_for_power"] > r.vs_baseline["n_a"]]
    if short:
        needed = [r.vs_baseline["seeds_for_power"] for r in short]
        top = None if None in needed else max(needed)
        per = ", ".join(f"{r.variant} {_needed_text(r.vs_baseline['seeds_for_power'])}" for r in short)
        view = short[0].vs_baseline["view"]
        notes.append(f"vs baseline ({view}): no change shown for {len(quiet)} of {len(compared)} variants: about "
                     f"{_needed_text(top)} seeds would be needed to detect a ±{margin:g} pp change with "
                     f"{POWER:.0%} power after Holm's correction ({per})")
    return notes
