"""The vs-baseline statistics on constructed records: no seed counted twice, pairing, Holm, seed advice.

Records are built in memory with chosen accuracies (the report reads nothing else), so every expected
number is computed here independently, with scipy or by hand.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
from scipy import stats as sps

from ftmed_core.records import RunRecord, run_key
from ftmed.reporting.rows import SEED_MEAN, build_rows, power_notes, shares_start
from ftmed.reporting.tables import to_csv, to_markdown
from ftmed_core.stats import holm, paired_power, seeds_needed, tost_power, welch_power
from ftmed_core.variants import VARIANTS

FRAMEWORKS = ("lightning", "keras")


def _record(variant: str, framework: str, seed: int, accuracy_pct: float, **changes) -> RunRecord:
    config = replace(VARIANTS[variant].config, seed=seed, epochs=2, **changes)
    return RunRecord(
        run_key=run_key(framework, config, "0" * 32), framework=framework, status="finished",
        config=config.to_dict(), runtime={}, data={"label": "constructed", "md5": "0" * 32},
        history={"epoch_seconds": [0.1, 0.1]}, test={"accuracy": accuracy_pct / 100.0, "auc": 0.9, "loss": 1.0},
        training_seconds=0.2, parameter_count=100,
    )


def _study(seeds, accuracy, frameworks=FRAMEWORKS, **changes) -> list[RunRecord]:
    """accuracy(variant, framework, seed) -> % for every study variant x framework x seed."""
    return [_record(v, fw, s, accuracy(v, fw, s), **changes) for v in ("baseline", "sigmoid-output", "lr-1e-4",
            "sgd-momentum", "wider-deeper") for fw in frameworks for s in seeds]


def _noisy(seed_sd=1.0, framework_sd=0.05, shift=None):
    """Seed effect shared by every framework (identical starts), small per-framework noise, variant shift."""
    shift = shift or {"baseline": 0.0, "sigmoid-output": 0.0, "lr-1e-4": -1.5, "sgd-momentum": -4.0,
                      "wider-deeper": 0.3}
    rng = np.random.default_rng(11)
    seed_effect = {s: rng.normal(0, seed_sd) for s in range(50)}
    variant_noise = {}

    def accuracy(variant, framework, seed):
        key = (variant, seed)
        if key not in variant_noise:
            variant_noise[key] = rng.normal(0, 0.3)
        fw_noise = rng.normal(0, framework_sd)
        return 80.0 + shift[variant] + seed_effect[seed] + variant_noise[key] + fw_noise

    return accuracy


@pytest.mark.parametrize("n", [2, 3, 5])
def test_two_frameworks_times_n_seeds_count_each_seed_once(n):
    rows = build_rows(_study(range(n), _noisy()), margin=1.0)
    for row in rows[1:]:
        views = [row.vs_baseline, *row.vs_baseline["per_framework"].values()]
        assert row.vs_baseline["view"] == SEED_MEAN and set(row.vs_baseline["per_framework"]) == set(FRAMEWORKS)
        for view in views:
            assert view["n_a"] <= n and view["n_b"] <= n  # never the 2n runs of two frameworks
            if view["method"] == "paired":
                assert view["df"] == n - 1
            else:  # Welch: n independent seeds per side, so at most 2n - 2
                assert view["df"] <= 2 * n - 2 + 1e-9


def test_seed_mean_view_averages_frameworks_per_seed_then_pairs():
    records = _study(range(4), _noisy())
    row = next(r for r in build_rows(records) if r.variant == "lr-1e-4")

    def per_seed_mean(variant):
        return [np.mean([100 * r.test["accuracy"] for r in records
                         if r.config["name"] == variant and r.config["seed"] == s]) for s in range(4)]

    ref = sps.ttest_rel(per_seed_mean("lr-1e-4"), per_seed_mean("baseline"))
    assert row.vs_baseline["p_value"] == pytest.approx(ref.pvalue, rel=1e-12)
    ci = ref.confidence_interval(0.95)
    assert (row.vs_baseline["low"], row.vs_baseline["high"]) == (pytest.approx(ci.low, rel=1e-12),
                                                                 pytest.approx(ci.high, rel=1e-12))
    d = np.subtract(per_seed_mean("lr-1e-4"), per_seed_mean("baseline"))
    assert row.vs_baseline["effect_size"] == pytest.approx(d.mean() / d.std(ddof=1), rel=1e-12)
    keras_view = row.vs_baseline["per_framework"]["keras"]
    by = {(r.config["name"], r.config["seed"]): 100 * r.test["accuracy"] for r in records if r.framework == "keras"}
    ref_k = sps.ttest_rel([by["lr-1e-4", s] for s in range(4)], [by["baseline", s] for s in range(4)])
    assert keras_view["p_value"] == pytest.approx(ref_k.pvalue, rel=1e-12)


def test_paired_for_same_start_welch_otherwise():
    rows = {r.variant: r for r in build_rows(_study(range(3), _noisy()))}
    for name in ("sigmoid-output", "lr-1e-4", "sgd-momentum"):  # same widths, init, data and shuffle
        assert rows[name].vs_baseline["method"] == "paired"
        assert all(v["method"] == "paired" for v in rows[name].vs_baseline["per_framework"].values())
    wide = rows["wider-deeper"].vs_baseline
    assert wide["method"] == "welch" and wide["effect_name"] == "d" and wide["n_a"] == wide["n_b"] == 3
    base = VARIANTS["baseline"].config
    assert shares_start(base, VARIANTS["tanh"].config)
    assert not shares_start(base, VARIANTS["torch-init"].config)
    assert not shares_start(base, replace(base, shuffle="fixed"))
    assert not shares_start(base, replace(base, val_mode="official"))


def test_holm_by_hand():
    # sorted 0.005, 0.01, 0.03, 0.04 (m = 4): 4*0.005 = 0.02; 3*0.01 = 0.03; 2*0.03 = 0.06; max(0.06, 1*0.04)
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02], abs=1e-15)
    got = holm([0.5, float("nan"), 0.4])  # NaN is not a test: m = 2
    assert got[0] == pytest.approx(0.8) and math.isnan(got[1]) and got[2] == pytest.approx(0.8)
    assert holm([0.9, 0.8]) == [1.0, 1.0] and holm([0.01, 0.02]) == [0.02, 0.02] and holm([]) == []  # capped at 1


def test_table_uses_holm_adjusted_p_and_states_it():
    rows = build_rows(_study(range(4), _noisy()))
    compared = rows[1:]
    for view_name in (None, *FRAMEWORKS):
        views = [r.vs_baseline if view_name is None else r.vs_baseline["per_framework"][view_name] for r in compared]
        raw = [v["p_value"] for v in views]
        m = len(raw)
        order = np.argsort(raw)
        expected, running = [0.0] * m, 0.0
        for rank, i in enumerate(order):  # Holm, step by step
            running = max(running, min(1.0, (m - rank) * raw[i]))
            expected[i] = running
        for v, e in zip(views, expected):
            assert v["p_holm"] == pytest.approx(e, rel=1e-12) and v["holm_m"] == m
            assert (v["verdict"] in ("better", "worse")) == (v["p_holm"] < 0.05)
    # A raw p under 0.05 that Holm lifts over it is not called a change.
    lifted = [v for r in compared for v in (r.vs_baseline, *r.vs_baseline["per_framework"].values())
              if v["p_value"] < 0.05 <= v["p_holm"]]
    assert all(v["verdict"] == "within seed noise" for v in lifted)
    md = to_markdown(rows, [])
    assert "Holm p=" in md and "(m=4)" in md and "paired n=4" in md and "welch n=4 vs 4" in md
    assert "Holm-adjusted over the m variants" in md and "d_z" in md
    header = to_csv(rows).splitlines()[0].split(",")
    assert "vs_baseline_p_holm" in header and "keras_vs_baseline_method" in header


def test_holm_changes_a_verdict():
    """Three variants each better by 1, 1.5, 2 pp on seeds 0-2 (paired t = 5.2, p = 0.035 each): alone each
    would be 'better'. Over m = 4 variants Holm multiplies the first of the three tied p-values by 4 and the
    step-down maximum carries 4 p = 0.14 to the other two (3 p, 2 p are smaller): none is called a change."""
    base = {0: 80.0, 1: 82.0, 2: 81.0}
    gain = {"baseline": [0, 0, 0], "sigmoid-output": [1.0, 1.5, 2.0], "lr-1e-4": [2.0, 1.0, 1.5],
            "sgd-momentum": [1.5, 2.0, 1.0], "wider-deeper": [0.0, 0.5, -0.5]}
    rows = build_rows(_study(range(3), lambda v, fw, s: base[s] + gain[v][s], frameworks=("keras",)))
    views = {r.variant: r.vs_baseline for r in rows[1:]}
    assert all(v["view"] == "keras" and "per_framework" in v for v in views.values())  # one framework
    raw = sps.ttest_rel([81.0, 83.5, 83.0], [80.0, 82.0, 81.0]).pvalue
    for name in ("sigmoid-output", "lr-1e-4", "sgd-momentum"):
        assert views[name]["p_value"] == pytest.approx(raw, rel=1e-12) and raw < 0.05
        assert views[name]["p_holm"] == pytest.approx(4 * raw, rel=1e-12)
        assert views[name]["verdict"] == "within seed noise"
    wide = views["wider-deeper"]  # the largest p, last step: max(carried 4 p, 1 x its own)
    assert wide["method"] == "welch" and wide["p_holm"] == pytest.approx(max(4 * raw, wide["p_value"]), rel=1e-12)


def _simulate_paired_power(n, effect, sd, alpha, trials=40000, seed=0):
    rng = np.random.default_rng(seed)
    d = rng.normal(effect, sd, (trials, n))
    t = d.mean(1) / (d.std(1, ddof=1) / np.sqrt(n))
    return float(np.mean(np.abs(t) > sps.t.ppf(1 - alpha / 2, n - 1)))


def _simulate_tost_power(n, sd, margin, alpha, true_diff=0.0, trials=40000, seed=1):
    rng = np.random.default_rng(seed)
    d = rng.normal(true_diff, sd, (trials, n))
    se = d.std(1, ddof=1) / np.sqrt(n)
    crit = sps.t.ppf(1 - alpha, n - 1)
    return float(np.mean(((d.mean(1) + margin) / se > crit) & ((d.mean(1) - margin) / se < -crit)))


def _simulate_welch_power(n, effect, sd_a, sd_b, alpha, trials=40000, seed=2):
    rng = np.random.default_rng(seed)
    a, b = rng.normal(effect, sd_a, (trials, n)), rng.normal(0, sd_b, (trials, n))
    return float(np.mean(sps.ttest_ind(a, b, axis=1, equal_var=False).pvalue < alpha))


@pytest.mark.parametrize("n,effect,sd,alpha", [(3, 1.0, 0.6, 0.05), (6, 1.0, 1.2, 0.0125), (12, 0.5, 0.9, 0.05)])
def test_paired_power_matches_simulation(n, effect, sd, alpha):
    assert paired_power(n, effect, sd, alpha) == pytest.approx(_simulate_paired_power(n, effect, sd, alpha), abs=0.01)


@pytest.mark.parametrize("n,sd,margin,true_diff", [(3, 0.3, 1.0, 0.0), (6, 0.8, 1.0, 0.0), (10, 1.2, 1.0, 0.3),
                                                    (200, 5.0, 1.0, 0.0)])
def test_tost_power_matches_simulation(n, sd, margin, true_diff):
    simulated = _simulate_tost_power(n, sd, margin, 0.05, true_diff)
    assert tost_power(n, sd, margin, 0.05, true_diff) == pytest.approx(simulated, abs=0.01)


@pytest.mark.parametrize("n,sd_a,sd_b", [(2, 0.5, 0.5), (4, 0.8, 0.8), (8, 1.5, 0.5), (5, 1.0, 0.0)])
def test_welch_power_matches_simulation(n, sd_a, sd_b):
    simulated = _simulate_welch_power(n, 1.0, sd_a, sd_b, 0.05)
    assert welch_power(n, 1.0, sd_a, sd_b, 0.05) == pytest.approx(simulated, abs=0.015)


def test_seed_advice_matches_a_simulation():
    """The printed seed count reaches 80 % power in a simulation with the measured spread; one fewer does not."""
    rows = build_rows(_study(range(3), _noisy(seed_sd=1.0, framework_sd=0.6)), margin=1.0)
    notes = power_notes(rows, margin=1.0)
    assert any(n.startswith("equivalence not shown for ") and "seeds would be needed" in n for n in notes)
    checked = 0
    for row in rows:
        d = row.difference
        if d["equivalent"] or d["seeds_for_power"] <= d["n"]:
            continue
        a, b = row.cells["lightning"].accuracy, row.cells["keras"].accuracy
        sd = float(np.std(np.subtract(a, b), ddof=1))
        needed = d["seeds_for_power"]
        assert f"{row.variant} {needed}" in notes[0]
        assert _simulate_tost_power(needed, sd, 1.0, 0.05) >= 0.8 - 0.01
        assert _simulate_tost_power(needed - 1, sd, 1.0, 0.05) < 0.8 + 0.01
        checked += 1
    assert checked >= 2
    vs_note = next(n for n in notes if n.startswith(f"vs baseline ({SEED_MEAN}): no change shown for"))
    rows_by = {r.variant: r.vs_baseline for r in rows}
    paired, welch_view = rows_by["lr-1e-4"], rows_by["wider-deeper"]  # paired and Welch, both under-powered
    assert paired["method"] == "paired" and welch_view["method"] == "welch"
    for view in (paired, welch_view):
        assert view["verdict"] == "within seed noise" and view["seeds_for_power"] > view["n_a"]
    level = 0.05 / paired["holm_m"]  # Holm's strictest step
    n = paired["seeds_for_power"]
    assert f"lr-1e-4 {n}" in vs_note
    assert _simulate_paired_power(n, 1.0, paired["sd_diff"], level) >= 0.8 - 0.01
    assert _simulate_paired_power(n - 1, 1.0, paired["sd_diff"], level) < 0.8 + 0.01
    n = welch_view["seeds_for_power"]
    assert f"wider-deeper {n}" in vs_note
    sds = welch_view["sd_variant"], welch_view["sd_baseline"]
    assert _simulate_welch_power(n, 1.0, *sds, level) >= 0.8 - 0.015
    assert _simulate_welch_power(n - 1, 1.0, *sds, level) < 0.8 + 0.015


def test_no_advice_when_the_study_has_the_seeds_it_needs():
    # Frameworks agree to 0.01 pp per seed and variants move by 5+ pp: everything is shown already.
    shift = {"baseline": 0.0, "sigmoid-output": 5.0, "lr-1e-4": -5.0, "sgd-momentum": -8.0, "wider-deeper": 6.0}
    rows = build_rows(_study(range(5), _noisy(seed_sd=0.3, framework_sd=0.01, shift=shift)), margin=1.0)
    assert all(r.difference["equivalent"] for r in rows)
    assert power_notes(rows, 1.0) == [] and "Seeds needed" not in to_markdown(rows, [])


def test_seeds_needed_is_the_smallest_n_reaching_the_target():
    power = lambda n: paired_power(n, 1.0, 1.0, 0.05)  # noqa: E731
    n = seeds_needed(power)
    assert power(n) >= 0.8 > power(n - 1)
    assert seeds_needed(lambda n: paired_power(n, 1e-3, 10.0, 0.05)) is None  # beyond 1000 seeds


def test_report_command_prints_the_seed_advice_under_the_table(tmp_path, tiny_synth_dir):
    """`ftmed report` on written records: the advice line appears when the study is under-powered."""
    from typer.testing import CliRunner

    from cli.main import app
    from ftmed_core.runner import FitResult, run_experiment

    def fit_for(framework):
        def fit(config, runtime, data, weights, run_dir, on_epoch=None):
            # Frameworks disagree by a few points per seed: equivalence within 1 pp cannot be shown.
            rng = np.random.default_rng([config.seed, len(framework)])
            n = len(data.y_test)
            predicted = np.where(rng.random(n) < 0.6, data.y_test, (data.y_test + 1) % data.n_classes)
            logits = np.zeros((n, data.n_classes), dtype=np.float32)
            logits[np.arange(n), predicted] = 3.0
            hist = {"train_loss": [1.0], "train_acc": [0.5], "val_loss": [1.0], "val_acc": [0.5],
                    "epoch_seconds": [0.1]}
            return FitResult(hist, logits, 0.1, {})
        return fit

    runs = tmp_path / "runs"
    for name in ("baseline", "lr-1e-4"):
        for seed in (0, 1, 2):
            config = replace(VARIANTS[name].config, epochs=1, seed=seed, data_dir=str(tiny_synth_dir))
            for framework in FRAMEWORKS:
                run_experiment(framework, fit_for(framework), config, runs_dir=runs)
    result = CliRunner().invoke(app, ["report", str(runs)], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    flat = " ".join(result.output.split())
    assert "seeds: equivalence not shown for" in flat and "seeds would be needed" in flat
    assert "Seeds needed:" in (runs / "comparison.md").read_text()


def _failed(variant: str, framework: str, seed: int) -> RunRecord:
    config = replace(VARIANTS[variant].config, seed=seed, epochs=2)
    return RunRecord(run_key=run_key(framework, config, "0" * 32), framework=framework, status="failed",
                     config=config.to_dict(), runtime={}, data={"label": "constructed", "md5": "0" * 32},
                     error="constructed failure")


def _views(row):
    return [row.vs_baseline, *row.vs_baseline["per_framework"].values()]


_BASE = {0: 80.0, 1: 82.0, 2: 81.0, 3: 79.5, 4: 80.7}
_ONE_IMAGE = 100 / 7180  # one PathMNIST test image, in pp


def _constant_study(seeds, frameworks=FRAMEWORKS):
    """sigmoid-output equals the baseline seed for seed, lr-1e-4 is 0.5 pp higher in every seed, sgd-momentum
    one test image lower in every seed; wider-deeper is noisy (a real test), all in every framework."""
    shift = {"baseline": 0.0, "sigmoid-output": 0.0, "lr-1e-4": 0.5, "sgd-momentum": -_ONE_IMAGE}
    noise = {0: 0.4, 1: -0.3, 2: 0.1, 3: 0.6, 4: -0.2}

    def accuracy(variant, framework, seed):
        if variant == "wider-deeper":
            return _BASE[seed] + 1.0 + noise[seed]
        return _BASE[seed] + shift[variant]

    return _study(seeds, accuracy, frameworks=frameworks)


@pytest.mark.parametrize("n", [2, 3])
def test_zero_spread_differences_get_words_not_p_values(n):
    """Identical and constant-shift variants: no p, no interval, no better/worse, not in Holm's m, no advice."""
    rows = {r.variant: r for r in build_rows(_constant_study(range(n)), margin=1.0)}
    expected = {"sigmoid-output": f"identical in all {n} seeds",
                "lr-1e-4": f"the same shift (+0.50 pp) in all {n} seeds",
                "sgd-momentum": f"the same shift (-0.01 pp) in all {n} seeds"}
    for name, words in expected.items():
        for view in _views(rows[name]):
            assert view["verdict"] == words and view["constant"]
            assert math.isnan(view["p_value"]) and math.isnan(view["low"]) and math.isnan(view["high"])
            assert "seeds_for_power" not in view
    tested = _views(rows["wider-deeper"])
    assert all(v["holm_m"] == 1 and not math.isnan(v["p_value"]) for v in tested)  # m counts only real tests
    assert all(v["p_holm"] == pytest.approx(v["p_value"], rel=1e-12) for v in tested)
    md = to_markdown(list(rows.values()), [])
    assert "p=0.000" not in md and "[+0.50, +0.50]" not in md
    lines = {line.split(" | ")[0].strip("| "): line for line in md.splitlines() if line.startswith("| ")}
    assert f"paired n={n}: the same shift (+0.50 pp) in all {n} seeds" in lines["lr-1e-4"]
    assert "better" not in lines["lr-1e-4"] and "worse" not in lines["sgd-momentum"]
    assert "within seed noise" not in lines["sigmoid-output"]
    # The frameworks agree exactly in every seed: TOST says so and claims no equivalence, and gives no advice.
    for row in rows.values():
        assert row.difference["verdict"] == f"identical in all {n} seeds"
        assert not row.difference["equivalent"] and row.difference["seeds_for_power"] is None
    assert not any(note.startswith("equivalence") for note in power_notes(list(rows.values()), 1.0))


def test_one_seed_supports_no_test():
    rows = build_rows(_constant_study([0]), margin=1.0)
    for row in rows[1:]:
        for view in _views(row):
            assert math.isnan(view["p_value"]) and view["verdict"].startswith("n/a") and not view["constant"]
        assert row.difference["verdict"].startswith("n/a")


def test_seed_mean_leaves_out_a_framework_that_failed_every_seed():
    """keras fails every seed of lr-1e-4: the headline uses lightning's 3 paired seeds and names keras."""
    records = [r for r in _study(range(3), _noisy()) if not (r.config["name"] == "lr-1e-4" and r.framework == "keras")]
    records += [_failed("lr-1e-4", "keras", s) for s in range(3)]
    rows = {r.variant: r for r in build_rows(records)}
    head = rows["lr-1e-4"].vs_baseline
    assert head["view"] == SEED_MEAN and head["method"] == "paired" and head["n_a"] == head["n_b"] == 3
    assert head["left_out"] == ["keras: no finished seed"]
    light = head["per_framework"]["lightning"]
    assert head["diff"] == pytest.approx(light["diff"], rel=1e-12)  # lightning alone, keras's baseline not mixed in
    assert head["p_value"] == pytest.approx(light["p_value"], rel=1e-12)
    md = to_markdown(list(rows.values()), [])
    line = next(l for l in md.splitlines() if l.startswith("| lr-1e-4 "))
    assert "(keras: no finished seed: left out)" in line and "welch n=0" not in line and "paired n=3" in line
    keras = head["per_framework"]["keras"]
    assert keras["method"] == "paired" and keras["verdict"] == "n/a: no finished seed" and keras["holm_m"] == 3
    assert rows["sgd-momentum"].vs_baseline["left_out"] == []


def test_seed_mean_per_seed_uses_frameworks_that_finished_variant_and_baseline():
    """keras misses seed 2 of the variant: seed 2's mean is lightning's alone on both sides."""
    records = [r for r in _study(range(3), _noisy())
               if not (r.config["name"] == "lr-1e-4" and r.framework == "keras" and r.config["seed"] == 2)]
    head = next(r for r in build_rows(records) if r.variant == "lr-1e-4").vs_baseline
    acc = {(r.config["name"], r.framework, r.config["seed"]): 100 * r.test["accuracy"] for r in records}
    diffs = [np.mean([acc["lr-1e-4", fw, s] for fw in FRAMEWORKS]) - np.mean([acc["baseline", fw, s] for fw in FRAMEWORKS])
             for s in (0, 1)] + [acc["lr-1e-4", "lightning", 2] - acc["baseline", "lightning", 2]]
    ref = sps.ttest_1samp(diffs, 0.0)
    assert head["method"] == "paired" and head["n_a"] == 3 and head["left_out"] == []
    assert head["p_value"] == pytest.approx(ref.pvalue, rel=1e-12)


def test_overlapping_seed_sets_never_use_a_seed_on_both_sides():
    """lightning {0,1,2} vs keras {2,3,4}: one common seed, not comparable; {0,1,2} vs {1,2,3}: paired on 1, 2."""
    acc = _noisy()
    one = [_record("baseline", "lightning", s, acc("baseline", "lightning", s)) for s in (0, 1, 2)]
    one += [_record("baseline", "keras", s, acc("baseline", "keras", s)) for s in (2, 3, 4)]
    d = build_rows(one)[0].difference
    assert d["method"] == "not comparable" and math.isnan(d["p_value"]) and not d["equivalent"]
    assert "seed 2" in d["verdict"] and d["verdict"].startswith("not comparable")
    two = [_record("baseline", "lightning", s, acc("baseline", "lightning", s)) for s in (0, 1, 2)]
    two += [_record("baseline", "keras", s, acc("baseline", "keras", s)) for s in (1, 2, 3)]
    d = build_rows(two)[0].difference
    by = {(r.framework, r.config["seed"]): 100 * r.test["accuracy"] for r in two}
    ref = sps.ttest_rel([by["lightning", s] for s in (1, 2)], [by["keras", s] for s in (1, 2)])
    assert d["method"] == "paired" and d["n"] == 2 and d["p_value"] == pytest.approx(ref.pvalue, rel=1e-12)
    disjoint = [_record("baseline", "lightning", s, acc("baseline", "lightning", s)) for s in (0, 1)]
    disjoint += [_record("baseline", "keras", s, acc("baseline", "keras", s)) for s in (2, 3)]
    assert build_rows(disjoint)[0].difference["method"] == "welch"
    # vs baseline, same start: variant seeds {0,1,2} vs baseline {2,3,4} share only seed 2.
    vs = [_record("baseline", "lightning", s, acc("baseline", "lightning", s)) for s in (2, 3, 4)]
    vs += [_record("lr-1e-4", "lightning", s, acc("lr-1e-4", "lightning", s)) for s in (0, 1, 2)]
    view = build_rows(vs)[1].vs_baseline
    assert view["method"] == "not comparable" and math.isnan(view["p_value"]) and "seed 2" in view["verdict"]
    assert view["holm_m"] == 0


def test_seconds_per_epoch_say_how_many_runs_shared_the_cores():
    from ftmed.reporting.tables import table_cells, table_columns

    shared = [replace(r, runtime={"jobs": 2}) for r in _study(range(2), _noisy())]
    alone = [replace(r, runtime={"jobs": 1}) for r in _study(range(2), _noisy())]
    unknown = _study(range(2), _noisy())  # records that did not note --jobs claim nothing
    texts = {}
    for name, records in (("shared", shared), ("alone", alone), ("unknown", unknown)):
        row = build_rows(records)[0]
        texts[name] = dict(zip(table_columns(FRAMEWORKS), table_cells(row, FRAMEWORKS)))["keras s/epoch"]
    assert texts == {"shared": "0.10 (2 side by side)", "alone": "0.10", "unknown": "0.10"}
    assert "'(k side by side)': k runs shared the machine's cores" in to_markdown(build_rows(shared), [])
