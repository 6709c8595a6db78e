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
    import ftmed
    from cli.compare import print_table

    comparison = ftmed.load_runs(runs_dir, margin=margin)
    outputs = comparison.write()
    print_table(outputs["rows"], comparison.records)
    typer.echo(f"wrote {outputs['markdown']} and {len(outputs['plots'])} plots from {len(comparison.records)} records")
