"""`ftmed variants`: the registry, with what each variant changes and why."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from ftmed_core.variants import BASELINE, GROUPS


def variants(
    group: Annotated[Optional[str], typer.Argument(help=f"A group ({', '.join(GROUPS)}) or names.")] = "all",
    file: Annotated[Optional[Path], typer.Option("--file", help="List the variants of this TOML file instead (validated).")] = None,
) -> None:
    """List the experiment variants: name, what differs from the baseline, and what it tests."""
    import ftmed

    chosen = ftmed.variants(group, file=file)
    table = Table(title=f"ftmed variants{f' in {file}' if file else ''} (differences from baseline)")
    for column in ("variant", "group", "changes vs baseline", "purpose", "study acc %"):
        table.add_column(column)
    for variant in chosen:
        study = f"{variant.study_accuracy:.2f}" if variant.study_accuracy is not None else ""
        table.add_row(variant.name, variant.group, variant.config.describe_changes(BASELINE), variant.purpose, study)
    Console().print(table)
