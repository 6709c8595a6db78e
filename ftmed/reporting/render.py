"""`render`: every report output for a runs folder, written under the report lock.

Reads the records (leaving damaged runs out), splits them by data file, builds the rows
(`ftmed.reporting.rows`), writes the tables (`ftmed.reporting.tables`), the plots
(`ftmed.reporting.plots`) and the prediction files (`ftmed.reporting.predictions`).
"""

from __future__ import annotations

from pathlib import Path

from ftmed_core.records import FRAMEWORKS, RunRecord

from ftmed.reporting.predictions import write_predictions
from ftmed.reporting.rows import DEFAULT_MARGIN, Row, build_rows, check_margin
from ftmed.reporting.tables import data_heading, write_grouped_tables, write_tables


def data_groups(records: list[RunRecord]) -> list[list[RunRecord]]:
    """`records` split by the MD5 of the data file they were trained on (first-seen order).

    Runs on different files are never pooled: seeds, accuracies and the statistics only mean something on
    one file. A record without an MD5 is grouped under "?".
    """
    groups: dict[str, list[RunRecord]] = {}
    for record in records:
        groups.setdefault(str(record.data.get("md5") or "?"), []).append(record)
    return list(groups.values())


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

    from ftmed.onnx_export import export_section

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
    # ONNX Runtime's check of each exported run, after the tables ("" where no run was exported)
    exports = "".join(export_section(g["rows"], g["records"], runs_dir) for g in rendered)
    with claim(report_lock_path(out_dir), stamp=False):  # stamp=False: a report run changes no file but its outputs
        if single:
            paths = write_tables(rendered[0]["rows"], records, out_dir, margin, tail=exports)
        else:
            out_dir.mkdir(parents=True, exist_ok=True)
            paths = write_grouped_tables(rendered, out_dir, margin, tail=exports)
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
