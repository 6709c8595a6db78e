"""The report's rows rendered: the markdown table with its notes, the CSV and the JSON, and their files.

Given the same rows, the same bytes: the committed sample report is checked by re-rendering it. Runs made
on different data files get one table per file in the same comparison.md (`write_grouped_tables`).
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

from ftmed_core.records import FRAMEWORKS, RunRecord, atomic_write_text
from ftmed_core.stats import summarize

from ftmed.reporting.rows import ALPHA, DEFAULT_MARGIN, SEED_MEAN, FrameworkCell, Row, power_notes


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


def write_tables(rows: list[Row], records: list[RunRecord], out_dir: Path, margin: float = DEFAULT_MARGIN,
                 tail: str = "") -> dict:
    """comparison.md/.csv/.json for runs on one data file; `tail` is appended to the markdown."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "markdown": out_dir / "comparison.md",
        "csv": out_dir / "comparison.csv",
        "json": out_dir / "comparison.json",
    }
    atomic_write_text(paths["markdown"], to_markdown(rows, records, margin) + tail)
    atomic_write_text(paths["csv"], to_csv(rows))
    atomic_write_text(paths["json"], to_json(rows, records, margin))
    return paths


def _prefixed_csv(text: str, values: list[str], header: list[str], with_header: bool) -> str:
    rows = list(csv.reader(io.StringIO(text)))
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    if with_header:
        writer.writerow(header + rows[0])
    for row in rows[1:]:
        writer.writerow(values + row)
    return out.getvalue()


def data_heading(records: list[RunRecord]) -> str:
    """'data file PATH (MD5 0123abcd)' for one data group (the path the first of its runs read)."""
    data = records[0].data
    return f"data file {data.get('path') or data.get('label') or '?'} (MD5 {str(data.get('md5') or '?')[:8]})"


def write_grouped_tables(rendered: list[dict], out_dir: Path, margin: float, tail: str = "") -> dict:
    """comparison.md/.csv/.json for runs on several data files: `rendered` holds one {"rows", "records"}
    per file; one table per file, the CSV with leading `data_file`, `data_md5` columns, the JSON a
    `data_groups` list; `tail` is appended to the markdown."""
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
    atomic_write_text(paths["markdown"], intro + "\n".join(markdown) + tail)
    atomic_write_text(paths["csv"], csv_text)
    atomic_write_text(paths["json"], json.dumps({"data_groups": groups_json}, indent=2) + "\n")
    return paths
