"""The cross-framework comparison: reads run records only, and renders the table as markdown, CSV and JSON.

One row per variant. Per framework: test accuracy mean ± std over seeds, AUC, loss, training time,
seconds per epoch, parameter count. Across frameworks: the accuracy difference (lightning - keras), paired
by seed (Welch where fewer than two seeds are common), with a 95 % CI and a TOST equivalence verdict
against a stated margin. Versus the baseline: the variant's
accuracy change over all its runs (both frameworks pooled) with a Welch p-value, and whether it stands out
from seed noise -- the study drew its conclusions from single runs. Accuracies are in percent.
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
from ftmed_core.stats import paired_difference, summarize, tost, welch
from ftmed_core.variants import VARIANTS

DEFAULT_MARGIN = 1.0  # percentage points of test accuracy
ALPHA = 0.05


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

    def mean(self, name: str) -> float:
        return summarize(getattr(self, name)).mean


@dataclass
class Row:
    variant: str
    config_hash: str
    changes: str
    study_accuracy: float | None
    cells: dict  # framework -> FrameworkCell
    difference: dict  # lightning - keras accuracy: diff, low, high, p_value, tost_p, verdict
    vs_baseline: dict  # diff, p_value, verdict


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
        errors=[f"seed {r.config['seed']}: {r.error}" for r in failed],
    )


def _seedless_hash(record: RunRecord) -> str:
    return replace(record.experiment, seed=0).config_hash()


def _study_accuracy(experiment) -> float | None:
    """The study's figure, only for a registry study variant run with the study's protocol (any seeds/epochs)."""
    variant = VARIANTS.get(experiment.name)
    if variant is None or variant.study_accuracy is None:
        return None
    same = replace(experiment, seed=variant.config.seed, epochs=variant.config.epochs)
    return variant.study_accuracy if same.config_hash() == variant.config.config_hash() else None


def _paired_accuracies(records: list[RunRecord]) -> tuple[list, list, str]:
    """Lightning and Keras accuracies (%), paired by seed where both finished the same >= 2 seeds.

    A seed fixes the initial weights and the batch order for both frameworks, so the two runs of a seed
    start identical and differ only by rounding: the per-seed difference is the quantity to test. With
    fewer than two common seeds, fall back to Welch's unpaired comparison of all finished runs.
    """
    by_seed = {fw: {r.config["seed"]: 100.0 * r.test["accuracy"] for r in records
                    if r.finished and r.framework == fw} for fw in FRAMEWORKS}
    common = sorted(set(by_seed["lightning"]) & set(by_seed["keras"]))
    if len(common) >= 2:
        return [by_seed["lightning"][s] for s in common], [by_seed["keras"][s] for s in common], "paired"
    return list(by_seed["lightning"].values()), list(by_seed["keras"].values()), "welch"


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

    def pooled_accuracy(recs):
        return [100.0 * r.test["accuracy"] for r in recs if r.finished]

    base_runs = next((groups[k] for k in order if k[0] == baseline), None)
    rows = []
    for key in order:
        recs = groups[key]
        cells = {fw: _cell(fw, [r for r in recs if r.framework == fw]) for fw in FRAMEWORKS
                 if any(r.framework == fw for r in recs)}
        difference: dict = {}
        if set(cells) == set(FRAMEWORKS):
            a, b, method = _paired_accuracies(recs)
            d = paired_difference(a, b) if method == "paired" else welch(a, b)
            eq = tost(a, b, margin, ALPHA, paired=method == "paired")
            difference = {"diff": d.diff, "low": d.low, "high": d.high, "p_value": d.p_value,
                          "tost_p": eq.p_value, "margin": margin, "equivalent": eq.equivalent,
                          "verdict": eq.verdict, "method": method, "n": len(a)}
        vs_baseline: dict = {}
        if base_runs is not None and key[0] != baseline:
            d = welch(pooled_accuracy(recs), pooled_accuracy(base_runs))
            if math.isnan(d.p_value):
                verdict = "n/a (need >= 2 runs each)"
            elif d.p_value < ALPHA:
                verdict = "better" if d.diff > 0 else "worse"
            else:
                verdict = "within seed noise"
            vs_baseline = {"diff": d.diff, "low": d.low, "high": d.high, "p_value": d.p_value, "verdict": verdict}
        experiment = recs[0].experiment
        base_config = VARIANTS[baseline].config if baseline in VARIANTS else experiment
        # Seeds and epochs are the study's protocol, not the variant's change: leave them out of "changes".
        base_config = replace(base_config, seed=experiment.seed, epochs=experiment.epochs)
        rows.append(Row(key[0], key[1], experiment.describe_changes(base_config), _study_accuracy(experiment),
                        cells, difference, vs_baseline))
    return rows


def _fmt(value, spec: str = ".2f", empty: str = "n/a") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return empty
    return format(value, spec)


def _acc_text(cell: FrameworkCell) -> str:
    s = summarize(cell.accuracy)
    text = f"{_fmt(s.mean)} ± {_fmt(s.std)} (n={s.n})" if s.n else "n/a"
    return text + (f", {cell.n_failed} failed" if cell.n_failed else "")


def title(records: list[RunRecord]) -> str:
    labels = sorted({r.data.get("label", r.data.get("dataset", "?")) for r in records})
    epochs = sorted({r.config["epochs"] for r in records})
    text = f"ftmed comparison on {', '.join(labels)}, {'/'.join(map(str, epochs))} epoch(s)"
    if any(r.synthetic for r in records):
        text += " -- SYNTHETIC DATA, not PathMNIST: the numbers show the tool, not the study's results"
    return text


def table_columns(frameworks) -> list[str]:
    columns = ["variant", "changes", "study acc %"]
    for fw in frameworks:
        columns += [f"{fw} acc %", f"{fw} AUC", f"{fw} loss", f"{fw} train s", f"{fw} s/epoch"]
    columns += ["params", "Δacc L−K [95% CI]", "equivalence", "vs baseline (pooled)"]
    return columns


def table_cells(row: Row, frameworks) -> list[str]:
    out = [row.variant, row.changes, _fmt(row.study_accuracy, ".2f", "")]
    for fw in frameworks:
        cell = row.cells.get(fw)
        if cell is None:
            out += ["", "", "", "", ""]
            continue
        out += [_acc_text(cell), _fmt(cell.mean("auc"), ".4f"), _fmt(cell.mean("loss"), ".4f"),
                _fmt(cell.mean("training_seconds"), ".1f"), _fmt(cell.mean("seconds_per_epoch"), ".2f")]
    params = next((c.parameter_count for c in row.cells.values() if c.parameter_count), None)
    out.append(f"{params:,}" if params else "n/a")
    d = row.difference
    if d:
        ci = f"[{_fmt(d['low'], '+.2f')}, {_fmt(d['high'], '+.2f')}]" if not math.isnan(d["low"]) else "[n/a]"
        out += [f"{_fmt(d['diff'], '+.2f')} {ci}", d["verdict"]]
    else:
        out += ["", ""]
    b = row.vs_baseline
    out.append(f"{_fmt(b['diff'], '+.2f')} pp, p={_fmt(b['p_value'], '.3f')}: {b['verdict']}" if b else "(baseline)")
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
        f"Accuracy: test accuracy in %, mean ± sample std over seeds. Δacc: lightning − keras with a 95 % CI, "
        f"paired by seed (a seed gives both frameworks the same initial weights and batch order; Welch's "
        f"unpaired CI where fewer than 2 seeds are common). "
        f"Equivalence: TOST at α={ALPHA} against ±{margin:g} pp on the same differences. vs baseline: the variant's accuracy change "
        f"over all its runs (both frameworks pooled), Welch p-value; 'within seed noise' means the study's "
        f"single-run difference could be luck. study acc %: the study's single Keras run on PathMNIST.",
    ]
    failures = [e for row in rows for c in row.cells.values() for e in c.errors]
    if failures:
        lines += ["", "Failed runs:"] + [f"- {e}" for e in failures]
    return "\n".join(lines) + "\n"


def to_csv(rows: list[Row]) -> str:
    frameworks = frameworks_in(rows)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    header = ["variant", "config_hash", "changes", "study_accuracy"]
    for fw in frameworks:
        header += [f"{fw}_{k}" for k in ("n", "failed", "acc_mean", "acc_std", "auc_mean", "loss_mean",
                                         "train_seconds_mean", "seconds_per_epoch_mean", "params")]
    header += ["diff", "diff_low", "diff_high", "diff_p", "tost_p", "equivalent", "vs_baseline_diff",
               "vs_baseline_p", "vs_baseline_verdict"]
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
        d, b = row.difference, row.vs_baseline
        values += [d.get("diff"), d.get("low"), d.get("high"), d.get("p_value"), d.get("tost_p"),
                   d.get("equivalent"), b.get("diff"), b.get("p_value"), b.get("verdict")]
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
                "difference": row.difference, "vs_baseline": row.vs_baseline,
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
        name = f"{flag}_test_[AUC]{r.test['auc']:.3f}_[ACC]{r.test['accuracy']:.3f}@{r.run_key}.csv"
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
    from ftmed_core import plots

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
           baseline: str = "baseline") -> dict:
    """Every report output for `records` (default: all usable records in `runs_dir`), written into `runs_dir`.

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
    with claim(report_lock_path(runs_dir), stamp=False):  # stamp=False: a report run changes no file but its outputs
        if single:
            paths = write_tables(rendered[0]["rows"], records, runs_dir, margin)
        else:
            paths = _write_grouped_tables(rendered, runs_dir, margin)
        for group in rendered:
            plot_dir = runs_dir / "plots"
            if not single:
                plot_dir = plot_dir / f"data-{str(group['records'][0].data.get('md5'))[:8]}"
            group["plots"] = _plot_group(runs_dir, group["records"], group["rows"], baseline, plot_dir)
        paths["predictions"] = write_predictions(records, runs_dir, runs_dir / "predictions")
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
