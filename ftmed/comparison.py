"""`Comparison`: a set of run records and everything the report derives from them, as Python objects.

The tables are built from the report's own rows (`ftmed.reporting.rows.build_rows`) and its CSV, so whatever
columns the report has, the DataFrame has; the figures are the report's plots as matplotlib `Figure`s.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

from ftmed_core.records import RunRecord
from ftmed.reporting.rows import DEFAULT_MARGIN


def _pandas():
    try:
        import pandas
    except ImportError:
        from ftmed_core.errors import ConfigError

        raise ConfigError("Comparison tables need pandas: pip install pandas") from None
    return pandas


def _inline_figures() -> None:
    """In a Jupyter kernel, make sure a `Figure` displays as a PNG even when `%matplotlib inline` has not
    run (a pyplot-free Figure has no formatter otherwise); a format the user chose is left alone."""
    import sys

    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    if shell is None or not hasattr(shell, "display_formatter"):
        return
    from matplotlib.figure import Figure

    formatters = shell.display_formatter.formatters
    for mime in ("image/png", "image/svg+xml", "application/pdf", "image/jpeg"):
        try:
            formatters[mime].lookup_by_type(Figure)
            return
        except KeyError:
            continue
    from IPython.core.pylabtools import select_figure_formats

    select_figure_formats(shell, {"png"})


@dataclass
class Comparison:
    """Run records of one comparison (a `compare` grid or a runs folder), with the report's views of them.

    Attributes:
        records: the `RunRecord`s, finished and failed.
        runs_dir: where the runs (and their arrays, used by the confusion plots) lie.
        margin: the equivalence margin, in accuracy percentage points.
        outputs: the files written by `compare` or `write()` (markdown, csv, json, plots, predictions).
        exports: after `compare(..., export="onnx")`, the exported files and one line per failed export.

    Example:
        >>> comparison = ftmed.load_runs("runs")            # doctest: +SKIP
        >>> comparison.table[["lightning_acc_mean", "keras_acc_mean"]]
    """

    records: list[RunRecord]
    runs_dir: Path
    margin: float = DEFAULT_MARGIN
    baseline: str = "baseline"
    outputs: dict = field(default_factory=dict, repr=False)
    # Planned runs with no usable record (`compare`), and runs left out as damaged (`load_runs`).
    missing: int = 0
    damaged: list = field(default_factory=list, repr=False)
    # `compare(..., export=...)`: {"written": [paths], "failed": [lines]} (`ftmed.onnx_export.export_finished`).
    exports: dict | None = field(default=None, repr=False)

    # The rows built from `records` when no written report holds them (see `rows`), built once.
    _built_rows: list | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def rows(self) -> list:
        """The report's rows (`ftmed.reporting.rows.Row`), one per variant: those the written report was
        rendered from (`outputs["rows"]`, after `compare` or `write()`), else built from `records` once."""
        if "rows" in self.outputs:
            return self.outputs["rows"]
        if self._built_rows is None:
            from ftmed.reporting.rows import build_rows

            self._built_rows = build_rows(self.records, self.margin, self.baseline)
        return self._built_rows

    @property
    def title(self) -> str:
        from ftmed.reporting.tables import title

        return title(self.records)

    @property
    def synthetic(self) -> bool:
        """True when any run trained on a SYNTHETIC file: its numbers show the tool, not the study."""
        return any(r.synthetic for r in self.records)

    @property
    def failed(self) -> list[RunRecord]:
        return [r for r in self.records if not r.finished]

    @property
    def table(self):
        """The comparison as a pandas DataFrame, one row per variant (index), the report's CSV columns
        (accuracies in %, AUC, loss, timings per framework, the L−K difference and its CI, TOST, vs baseline).
        `table.attrs["title"]` carries the report's title (it says SYNTHETIC where it applies)."""
        from ftmed.reporting.tables import to_csv

        frame = _pandas().read_csv(io.StringIO(to_csv(self.rows)), index_col="variant")
        frame.attrs["title"] = self.title
        return frame

    @property
    def runs(self):
        """One DataFrame row per run: variant, framework, seed, status, the test metrics (`test_*`, accuracy
        as a fraction), training seconds, epochs, error."""
        rows = []
        for r in self.records:
            row = {"variant": r.config["name"], "framework": r.framework, "seed": r.config["seed"],
                   "status": r.status, "epochs": r.config["epochs"]}
            row.update({f"test_{k}": v for k, v in r.test.items()})
            row.update({"training_seconds": r.training_seconds, "synthetic": r.synthetic,
                        "run_key": r.run_key, "error": r.error})
            rows.append(row)
        return _pandas().DataFrame(rows)

    @property
    def markdown(self) -> str:
        """The report's markdown (what `comparison.md` holds)."""
        from ftmed.reporting.tables import to_markdown

        return to_markdown(self.rows, self.records, self.margin)

    def figures(self) -> dict:
        """The report's plots as matplotlib `Figure`s (they display inline in a notebook), keyed by the name
        of their PNG: `accuracy_bars`, `curves_<variant>`, `confusion_<framework>` (the baseline's)."""
        from ftmed.reporting import plots

        _inline_figures()

        subtitle = " [SYNTHETIC DATA]" if self.synthetic else ""
        figures = {"accuracy_bars": plots.accuracy_bars_figure(self.rows, subtitle)}
        for row in self.rows:
            figures[f"curves_{row.variant}"] = plots.curves_figure(self.records, row.variant, subtitle)
        names = {r.config["name"] for r in self.records}
        variant = self.baseline if self.baseline in names else (self.rows[0].variant if self.rows else None)
        for framework in sorted({r.framework for r in self.records}):
            figures[f"confusion_{framework}"] = plots.confusion_figure(self.records, Path(self.runs_dir), framework,
                                                                       variant, subtitle)
        return {name: fig for name, fig in figures.items() if fig is not None}

    def write(self) -> dict:
        """Write every report output into `runs_dir` (what `ftmed report` writes) and return their paths."""
        from ftmed.reporting.render import render

        self.outputs = render(self.runs_dir, self.records, self.margin, self.baseline)
        return self.outputs

    def _repr_markdown_(self) -> str:
        return self.markdown

    def __repr__(self) -> str:
        finished = sum(r.finished for r in self.records)
        return (f"Comparison({len(self.rows)} variant(s), {finished} finished / {len(self.records)} run(s) in "
                f"{self.runs_dir}{', SYNTHETIC data' if self.synthetic else ''})")
