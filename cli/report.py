"""`ftmed report RUNS_DIR`: re-render every comparison output from existing records; trains nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cli.options import MarginOpt


def report(
    runs_dir: Annotated[Path, typer.Argument(help="A runs directory written by ftmed compare or ftmed train.")],
    margin: MarginOpt = 1.0,
) -> None:
    """Rebuild comparison.md/.csv/.json, the plots and the medmnist prediction files from run records."""
    from cli.compare import print_table
    from ftmed_core.records import list_records
    from ftmed_core.report import render

    records = list_records(runs_dir)
    outputs = render(runs_dir, records, margin)
    print_table(outputs["rows"], records, margin)
    typer.echo(f"wrote {outputs['markdown']} and {len(outputs['plots'])} plots from {len(records)} records")
