"""`ftmed report RUNS_DIR`: re-render every comparison output from existing records; trains nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from cli.options import MarginOpt


def report(
    runs_dir: Annotated[Path, typer.Argument(help="A runs directory written by ftmed compare or ftmed train.")],
    margin: MarginOpt = 1.0,
    out: Annotated[Optional[Path], typer.Option("--out", help="Folder for the report (default: RUNS_DIR).")] = None,
    predictions: Annotated[bool, typer.Option("--predictions/--no-predictions", help="Also write the medmnist prediction files (one CSV per run).")] = True,
) -> None:
    """Rebuild comparison.md/.csv/.json, the plots and the medmnist prediction files from run records.

    Damaged runs are left out with one line each (exit code 1 once the report is written). Runs made on
    different data files get one table per file.
    """
    import ftmed
    from cli.compare import print_table

    outputs = ftmed.report(runs_dir, margin, out_dir=out, predictions=predictions)
    for group in outputs["groups"]:
        print_table(group["rows"], group["records"], margin, group["heading"] if len(outputs["groups"]) > 1 else None)
    n_records = sum(len(group["records"]) for group in outputs["groups"])
    if len(outputs["groups"]) > 1:
        from ftmed.atlas import write_atlas

        atlas = write_atlas(runs_dir, outputs["groups"])
        written = [atlas["csv"].name] + ([atlas["png"].name] if atlas["png"] else [])
        typer.echo(f"wrote the atlas over {len(outputs['groups'])} data files: {atlas['markdown']}, "
                   f"{', '.join(written)}")
        typer.echo(f"these runs used {len(outputs['groups'])} different data files: one table per file, "
                   f"never pooled", err=True)
    typer.echo(f"wrote {outputs['markdown']} and {len(outputs['plots'])} plots from {n_records} records")
    for exc in outputs["damaged"]:
        typer.echo(f"left out: {exc}", err=True)
    if outputs["damaged"]:
        raise typer.Exit(1)
