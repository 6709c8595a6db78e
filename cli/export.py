"""`ftmed export RUN_DIR...`: finished runs as ONNX models (`ftmed.export`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, List, Optional

import typer


def export(
    run_dirs: Annotated[List[Path], typer.Argument(help="Finished run directories (runs/<run key>).")],
    format: Annotated[str, typer.Option("--format", help="Export format: onnx.")] = "onnx",
    out: Annotated[Optional[Path], typer.Option("--out", help="Folder for the files, named <run key>.onnx (default: model.onnx in each run directory).")] = None,
    with_preprocessing: Annotated[bool, typer.Option("--with-preprocessing/--no-preprocessing", help="Take uint8 images as MedMNIST stores them (H x W or H x W x C); /255 and flatten run in the graph.")] = False,
) -> None:
    """Write each run's final model as ONNX: input `input`, outputs `logits` and `probabilities`, a dynamic
    batch axis, and the run's metadata (ftmed version, framework, config hash, data MD5, test accuracy)."""
    import ftmed

    for path in ftmed.export(run_dirs, format=format, out=out, with_preprocessing=with_preprocessing):
        typer.echo(f"wrote {path}")
