"""The cross-framework comparison: reads run records only, and renders the table as markdown, CSV and JSON.

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
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from ftmed_core.records import FRAMEWORKS, RunRecord, atomic_write_text, load_probabilities
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


def _fmt(value, spec: str = ".2f", empty: str = "n/a") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return empty
    return format(value, spec)


def _acc_text(cell: FrameworkCell) -> str:
    s = summarize(cell.accuracy)
    text = f"{_fmt(s.mean)} ± {_fmt(s.std)} (n={s.n})" if s.n else "n/a"
    return text + (f", {cell.n_failed} failed" if cell.n_failed else "")


def _seconds_text(cell: FrameworkCell) -> str:
    """Median seconds per epoch, mean over seeds; '(2 side by side)' when the runs shared the machine's cores
    with others (--jobs > 1), so that the figure is not read as a run's time alone."""
    text = _fmt(cell.mean("seconds_per_epoch"), ".2f")
    shared = [j for j in cell.jobs if j > 1]
    if shared and text != "n/a":
        text += f" ({'/'.join(map(str, cell.jobs))} side by side)"
    return text


def title(records: list[RunRecord]) -> str:
    labels = sorted({r.data.get("label", r.data.get("dataset", "?")) for r in records})
    epochs = sorted({r.config["epochs"] for r in records})
    shuffles = sorted({r.experiment.shuffle for r in records})
    text = (f"ftmed comparison on {', '.join(labels)}, {'/'.join(map(str, epochs))} epoch(s), "
            f"shuffle {'/'.join(shuffles)}")
    if any(r.synthetic for r in records):
        text += " -- SYNTHETIC DATA, not PathMNIST: the numbers show the tool, not the study's results"
    return text


def compared_with_lightning(frameworks) -> list[str]:
    """The Keras columns each compared with Lightning (at least `keras`, so the table keeps its shape)."""
    return [fw for fw in frameworks if fw != "lightning"] or ["keras"]


def difference_columns(other: str) -> list[str]:
    """The two column names of lightning - `other`: 'Δacc L−K [95% CI]', 'equivalence' for keras (TensorFlow),
    'Δacc L−K[jax] [95% CI]', 'equivalence L−K[jax]' for keras[jax]."""
    short = "K" + other[len("keras"):]
    return [f"Δacc L−{short} [95% CI]", "equivalence" if other == "keras" else f"equivalence L−{short}"]


def table_columns(frameworks) -> list[str]:
    columns = ["variant", "changes", "study acc %"]
    for fw in frameworks:
        columns += [f"{fw} acc %", f"{fw} AUC", f"{fw} loss", f"{fw} train s", f"{fw} s/epoch"]
    columns.append("params")
    for other in compared_with_lightning(frameworks):
        columns += difference_columns(other)
    columns += vs_baseline_columns(frameworks)
    return columns


def vs_baseline_columns(frameworks) -> list[str]:
    """One vs-baseline column per framework, plus the per-seed mean over frameworks when there are several."""
    columns = [f"{fw} vs baseline" for fw in frameworks]
    return columns + ([f"vs baseline ({SEED_MEAN})"] if len(frameworks) > 1 else [])


def _vs_text(view: dict | None) -> str:
    """'-2.10 pp [-3.40, -0.80], d_z=-2.9; paired n=3, Holm p=0.012 (m=4): worse'; a constant or
    not-comparable view gives its verdict alone (no interval, no p); frameworks a seed-mean view left out
    follow in parentheses."""
    if not view:
        return ""
    n = f"n={view['n_a']}" if view["method"] == "paired" else f"n={view['n_a']} vs {view['n_b']}"
    if view.get("constant") or view.get("reason"):
        text = f"{view['method']} {n}: {view['verdict']}" if view.get("constant") else view["verdict"]
    else:
        ci = f"[{_fmt(view['low'], '+.2f')}, {_fmt(view['high'], '+.2f')}]"
        text = (f"{_fmt(view['diff'], '+.2f')} pp {ci}, {view['effect_name']}={_fmt(view['effect_size'], '+.1f')}; "
                f"{view['method']} {n}, Holm p={_fmt(view['p_holm'], '.3f')} (m={view['holm_m']}): "
                f"{view['verdict']}")
    if view.get("left_out"):
        text += f" ({'; '.join(view['left_out'])}: left out)"
    return text


def table_cells(row: Row, frameworks) -> list[str]:
    out = [row.variant, row.changes, _fmt(row.study_accuracy, ".2f", "")]
    for fw in frameworks:
        cell = row.cells.get(fw)
        if cell is None:
            out += ["", "", "", "", ""]
            continue
        out += [_acc_text(cell), _fmt(cell.mean("auc"), ".4f"), _fmt(cell.mean("loss"), ".4f"),
                _fmt(cell.mean("training_seconds"), ".1f"), _seconds_text(cell)]
    params = next((c.parameter_count for c in row.cells.values() if c.parameter_count), None)
    out.append(f"{params:,}" if params else "n/a")
    for other in compared_with_lightning(frameworks):
        d = row.differences.get(other) or (row.difference if other == "keras" else {})
        if d and d["method"] == "not comparable":
            out += ["n/a", d["verdict"]]
        elif d and d.get("constant"):
            out += [f"{_fmt(d['diff'], '+.2f')} (no spread)", d["verdict"]]
        elif d:
            ci = f"[{_fmt(d['low'], '+.2f')}, {_fmt(d['high'], '+.2f')}]" if not math.isnan(d["low"]) else "[n/a]"
            out += [f"{_fmt(d['diff'], '+.2f')} {ci}", d["verdict"]]
        else:
            out += ["", ""]
    b = row.vs_baseline
    views = [b.get("per_framework", {}).get(fw) for fw in frameworks]
    if len(frameworks) > 1:
        views.append(b if b.get("view") == SEED_MEAN else None)
    out += [_vs_text(v) if b else "(baseline)" for v in views]
    return out


def frameworks_in(rows: list[Row]) -> list[str]:
    present = {fw for row in rows for fw in row.cells}
    return [fw for fw in FRAMEWORKS if fw in present]


def to_markdown(rows: list[Row], records: list[RunRecord], margin: float = DEFAULT_MARGIN) -> str:
    frameworks = frameworks_in(rows)
    columns = table_columns(frameworks)
    lines = [f"# {title(records)}", "",
             "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(c.replace("|", "/") for c in table_cells(row, frameworks)) + " |")
    lines += [
        "",
        f"Accuracy: test accuracy in %, mean ± sample std over seeds. Δacc: lightning − keras with a 95 % CI "
        f"(L−K: Keras on TensorFlow; L−K[jax], L−K[torch]: Keras on those backends, each against Lightning), "
        f"paired by seed (a seed gives both frameworks the same initial weights and batch order; Welch's "
        f"unpaired CI where the two seed sets are disjoint, 'not comparable' where they share one seed). "
        f"Equivalence: TOST at α={ALPHA} against ±{margin:g} pp on the same differences. "
        f"s/epoch: median seconds per epoch, mean over seeds; '(k side by side)': k runs shared the machine's "
        f"cores (--jobs k), so the figure is a shared-core time (--jobs 1 times each run alone). "
        f"vs baseline: variant − baseline accuracy in pp with its 95 % CI and effect size, per framework"
        + (f" and for the per-seed mean over frameworks ({SEED_MEAN}: a seed's runs start identical in every "
           f"framework, so they count once; for each seed only the frameworks that finished both that seed of the "
           f"variant and of the baseline, and a framework with no such seed is named and left out)"
           if len(frameworks) > 1 else "")
        + f"; 'paired' = paired t test by seed (the variant starts from the baseline's initial weights and "
        f"batch order), effect d_z = mean difference / sd of the differences; 'Welch' = Welch's unequal-variance "
        f"t test, effect d = difference / sqrt of the mean of the two variances; n = seeds per side. "
        f"p-values are Holm-adjusted over the m variants compared with the baseline in that column (the CIs "
        f"are not adjusted). Verdicts: 'better'/'worse' = Holm-adjusted p < {ALPHA} in that direction; "
        f"'within seed noise' = these seeds did not reach Holm-adjusted p < {ALPHA} (not evidence that there is "
        f"no difference, nor that the study's single-run difference was luck); 'identical in all n seeds' / "
        f"'the same shift (+x pp) in all n seeds' = every seed's difference is the same, which leaves no spread "
        f"to test against: no p-value, no interval, not counted in Holm's m; 'not comparable' = the two sides "
        f"share only one seed (too few to pair, and an unpaired test would use that seed on both sides). "
        f"TOST: 'equivalent (±m)' = both one-sided p < {ALPHA}; 'different (beyond ±m)' = the 90 % CI lies "
        f"outside ±m; 'not shown equivalent' = neither. study acc %: the study's single Keras run on PathMNIST.",
    ]
    notes = power_notes(rows, margin)
    if notes:
        lines += ["", "Seeds needed:"] + [f"- {n}" for n in notes]
    failures = [e for row in rows for c in row.cells.values() for e in c.errors]
    if failures:
        lines += ["", "Failed runs:"] + [f"- {e}" for e in failures]
    return "\n".join(lines) + "\n"


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


def to_csv(rows: list[Row]) -> str:
    frameworks = frameworks_in(rows)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    header = ["variant", "config_hash", "changes", "study_accuracy"]
    for fw in frameworks:
        header += [f"{fw}_{k}" for k in ("n", "failed", "acc_mean", "acc_std", "auc_mean", "loss_mean",
                                         "train_seconds_mean", "seconds_per_epoch_mean", "params")]
    others = compared_with_lightning(frameworks)
    diff_keys = ["diff", "diff_low", "diff_high", "diff_p", "tost_p", "equivalent", "tost_seeds_for_power"]
    for other in others:  # keras (TensorFlow) keeps the plain names; keras[jax] -> keras[jax]_diff, ...
        header += diff_keys if other == "keras" else [f"{other}_{k}" for k in diff_keys]
    # The headline vs-baseline view (seed mean over frameworks, or the one framework), then each framework's.
    vs_fields = ("diff", "low", "high", "p_value", "p_holm", "holm_m", "method", "n_a", "n_b", "effect_name",
                 "effect_size", "verdict", "seeds_for_power")
    views = ["", *(f"{fw}_" for fw in frameworks)] if len(frameworks) > 1 else [""]
    header += [f"{prefix}vs_baseline_{k}" for prefix in views for k in vs_fields]
    writer.writerow(header)
    for row in rows:
        values = [row.variant, row.config_hash, row.changes, row.study_accuracy]
        for fw in frameworks:
            c = row.cells.get(fw)
            if c is None:
                values += [""] * 9
                continue
            s = summarize(c.accuracy)
            values += [c.n_finished, c.n_failed, s.mean, s.std, c.mean("auc"), c.mean("loss"),
                       c.mean("training_seconds"), c.mean("seconds_per_epoch"), c.parameter_count]
        for other in others:
            d = row.differences.get(other) or (row.difference if other == "keras" else {})
            values += [d.get("diff"), d.get("low"), d.get("high"), d.get("p_value"), d.get("tost_p"),
                       d.get("equivalent"), d.get("seeds_for_power")]
        b = row.vs_baseline
        values += [b.get(k) for k in vs_fields]
        if len(frameworks) > 1:
            for fw in frameworks:
                view = b.get("per_framework", {}).get(fw, {})
                values += [view.get(k) for k in vs_fields]
        writer.writerow(["" if v is None or (isinstance(v, float) and math.isnan(v)) else v for v in values])
    return out.getvalue()


def _clean(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def to_json(rows: list[Row], records: list[RunRecord], margin: float = DEFAULT_MARGIN) -> str:
    payload = {
        "title": title(records),
        "synthetic": any(r.synthetic for r in records),
        "margin_pp": margin,
        "alpha": ALPHA,
        "rows": [
            {
                "variant": row.variant, "config_hash": row.config_hash, "changes": row.changes,
                "study_accuracy": row.study_accuracy,
                "frameworks": {fw: c.__dict__ for fw, c in row.cells.items()},
                "difference": row.difference, "differences": row.differences, "vs_baseline": row.vs_baseline,
            }
            for row in rows
        ],
        "runs": [{"run_key": r.run_key, "framework": r.framework, "variant": r.config["name"],
                  "seed": r.config["seed"], "status": r.status, "test": r.test, "error": r.error}
                 for r in records],
    }
    return json.dumps(_clean(payload), indent=2) + "\n"


def write_predictions(records: list[RunRecord], runs_dir: Path, out_dir: Path) -> list[Path]:
    """Test probabilities in medmnist's standard evaluation file naming, so that
    `python -m medmnist evaluate FILE` re-scores them independently (against the data file at its root)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for r in records:
        if not r.finished:
            continue
        probabilities = load_probabilities(runs_dir / r.run_key)
        size = r.config["size"]
        flag = r.config["dataset"] + ("" if size == 28 else f"_{size}")
        auc = r.test.get("auc")  # None where the test split lacks a class (a tiny file): named "nan"
        name = f"{flag}_test_[AUC]{float('nan') if auc is None else auc:.3f}_[ACC]{r.test['accuracy']:.3f}@{r.run_key}.csv"
        buffer = io.StringIO()
        for i, row in enumerate(probabilities):
            buffer.write(f"{i}," + ",".join(repr(float(v)) for v in row) + "\n")
        path = out_dir / name
        atomic_write_text(path, buffer.getvalue())
        written.append(path)
    return written


def write_tables(rows: list[Row], records: list[RunRecord], out_dir: Path, margin: float = DEFAULT_MARGIN) -> dict:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "markdown": out_dir / "comparison.md",
        "csv": out_dir / "comparison.csv",
        "json": out_dir / "comparison.json",
    }
    atomic_write_text(paths["markdown"], to_markdown(rows, records, margin))
    atomic_write_text(paths["csv"], to_csv(rows))
    atomic_write_text(paths["json"], to_json(rows, records, margin))
    return paths


def data_groups(records: list[RunRecord]) -> list[list[RunRecord]]:
    """`records` split by the MD5 of the data file they were trained on (first-seen order).

    Runs on different files are never pooled: seeds, accuracies and the statistics only mean something on
    one file. A record without an MD5 is grouped under "?".
    """
    groups: dict[str, list[RunRecord]] = {}
    for record in records:
        groups.setdefault(str(record.data.get("md5") or "?"), []).append(record)
    return list(groups.values())


def data_heading(records: list[RunRecord]) -> str:
    """'data file PATH (MD5 0123abcd)' for one data group (the path the first of its runs read)."""
    data = records[0].data
    return f"data file {data.get('path') or data.get('label') or '?'} (MD5 {str(data.get('md5') or '?')[:8]})"


def _usable(records: list[RunRecord], runs_dir: Path) -> tuple[list[RunRecord], list]:
    """The records whose test arrays can be read (finished runs only are checked), and the damage found."""
    from ftmed_core.records import RecordDamaged, check_arrays

    usable, damaged = [], []
    for record in records:
        try:
            check_arrays(runs_dir / record.run_key, record)
        except RecordDamaged as exc:
            damaged.append(exc)
            continue
        usable.append(record)
    return usable, damaged


def _plot_group(runs_dir: Path, records: list[RunRecord], rows: list[Row], baseline: str, plot_dir: Path) -> list:
    subtitle = " [SYNTHETIC DATA]" if any(r.synthetic for r in records) else ""
    plot_dir.mkdir(parents=True, exist_ok=True)
    from ftmed.reporting import plots

    drawn = [plots.curves(records, row.variant, plot_dir, subtitle) for row in rows]
    drawn.append(plots.accuracy_bars(rows, plot_dir, subtitle))
    confusion_variant = baseline if any(r.config["name"] == baseline for r in records) else rows[0].variant
    for framework in FRAMEWORKS:
        drawn.append(plots.confusion(records, runs_dir, framework, confusion_variant, plot_dir, subtitle))
    return [p for p in drawn if p is not None]


def _prefixed_csv(text: str, values: list[str], header: list[str], with_header: bool) -> str:
    rows = list(csv.reader(io.StringIO(text)))
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    if with_header:
        writer.writerow(header + rows[0])
    for row in rows[1:]:
        writer.writerow(values + row)
    return out.getvalue()


def render(runs_dir: str | Path, records: list[RunRecord] | None = None, margin: float = DEFAULT_MARGIN,
           baseline: str = "baseline", out_dir: str | Path | None = None, predictions: bool = True) -> dict:
    """Every report output for `records` (default: all usable records in `runs_dir`), written into `out_dir`
    (default: `runs_dir`); `predictions=False` skips the medmnist prediction files (one CSV per run).
    Given the same records, the outputs are the same bytes (tables, and plots: see `plots._save`).

    One process writes a runs folder's report at a time (`ftmed_core.locks.report_lock_path`), each file
    atomically. Runs whose record or test arrays are damaged are left out and listed under "damaged"
    (RecordDamaged, one per run). Runs made on different data files (MD5) are never pooled: each file gets
    its own table, titled with the file, in the same comparison.md; comparison.csv gains leading
    `data_file`, `data_md5` columns and comparison.json a `data_groups` list; plots go to
    `plots/data-<md5[:8]>/`. With one data file the outputs are as they always were.
    """
    from ftmed_core.errors import RunError
    from ftmed_core.locks import claim, report_lock_path
    from ftmed_core.records import scan_records

    margin = check_margin(margin)
    runs_dir = Path(runs_dir)
    out_dir = runs_dir if out_dir is None else Path(out_dir)
    damaged: list = []
    if records is None:
        records, damaged = scan_records(runs_dir)
    records, bad_arrays = _usable(records, runs_dir)
    damaged += bad_arrays
    if not records:
        what = f"no usable run records ({len(damaged)} damaged: {damaged[0]})" if damaged else "no run records"
        raise RunError(f"{runs_dir} holds {what}; run `ftmed compare` or `ftmed train` first")
    rendered = [{"records": group, "rows": build_rows(group, margin, baseline)} for group in data_groups(records)]
    single = len(rendered) == 1
    with claim(report_lock_path(out_dir), stamp=False):  # stamp=False: a report run changes no file but its outputs
        if single:
            paths = write_tables(rendered[0]["rows"], records, out_dir, margin)
        else:
            out_dir.mkdir(parents=True, exist_ok=True)
            paths = _write_grouped_tables(rendered, out_dir, margin)
        for group in rendered:
            plot_dir = out_dir / "plots"
            if not single:
                plot_dir = plot_dir / f"data-{str(group['records'][0].data.get('md5'))[:8]}"
            group["plots"] = _plot_group(runs_dir, group["records"], group["rows"], baseline, plot_dir)
        paths["predictions"] = (write_predictions(records, runs_dir, out_dir / "predictions")
                                if predictions else [])
    paths["plots"] = [p for group in rendered for p in group["plots"]]
    paths["rows"] = [row for group in rendered for row in group["rows"]]
    paths["groups"] = [{"heading": data_heading(g["records"]), "rows": g["rows"], "records": g["records"]}
                       for g in rendered]
    paths["damaged"] = damaged
    return paths


def _write_grouped_tables(rendered: list[dict], out_dir: Path, margin: float) -> dict:
    paths = {"markdown": out_dir / "comparison.md", "csv": out_dir / "comparison.csv",
             "json": out_dir / "comparison.json"}
    markdown, csv_text, groups_json = [], "", []
    for i, group in enumerate(rendered):
        rows, records = group["rows"], group["records"]
        heading = data_heading(records)
        first, rest = to_markdown(rows, records, margin).split("\n", 1)
        markdown.append(f"{first} -- {heading}\n{rest}")
        data = records[0].data
        csv_text += _prefixed_csv(to_csv(rows), [str(data.get("path", "")), str(data.get("md5", ""))],
                                  ["data_file", "data_md5"], with_header=i == 0)
        groups_json.append({"data_file": data.get("path"), "data_md5": data.get("md5"),
                            **json.loads(to_json(rows, records, margin))})
    intro = (f"Runs on {len(rendered)} different data files: one table per file, never pooled "
             f"(the seeds and statistics only mean something on one file).\n\n")
    atomic_write_text(paths["markdown"], intro + "\n".join(markdown))
    atomic_write_text(paths["csv"], csv_text)
    atomic_write_text(paths["json"], json.dumps({"data_groups": groups_json}, indent=2) + "\n")
    return paths
