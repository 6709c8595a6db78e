"""`ftmed compare`: parse the options, call `ftmed.compare` (the grid runner lives in `ftmed.grid`), print the
table. Resumable: finished runs are skipped, and a run interrupted or killed mid-training resumes from its
last finished epoch. Several `compare` may share one runs folder."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from cli.options import (
    AcceleratorOpt, CudaGraphsOpt, DataDirOpt, DatasetOpt, DevicesOpt, EpochsOpt, MarginOpt, MlflowOpt,
    MlflowUriOpt, PrecisionOpt, RunsDirOpt, ShuffleOpt, SizeOpt, StepsPerExecutionOpt, ThreadsOpt, VariantsFileOpt,
    mlflow_target, value,
)
from ftmed.executors import ExecutorName
from ftmed.grid import CPU_JOBS, GPU_JOBS


def compare(
    variants: Annotated[Optional[str], typer.Option("--variants", help="study, all, a group, or comma-separated names (default: study; with --variants-file: baseline plus the file's, 'file' = all of the file's).")] = None,
    frameworks: Annotated[str, typer.Option("--frameworks", help="Comma-separated: lightning, keras (TensorFlow), keras[jax], keras[torch].")] = "lightning,keras",
    seeds: Annotated[str, typer.Option("--seeds", help="Comma-separated seeds, e.g. 0,1,2.")] = "0,1,2",
    epochs: EpochsOpt = None,
    dataset: DatasetOpt = None,
    size: SizeOpt = None,
    datasets: Annotated[Optional[str], typer.Option("--datasets", help="Several data files: comma-separated flags or all-2d; each with every --sizes, into one runs folder (all files must be present).")] = None,
    atlas: Annotated[bool, typer.Option("--atlas", help="With --datasets/--sizes: also write atlas.md/.csv/.png (data files x variants) over the whole runs folder.")] = False,
    sizes: Annotated[Optional[str], typer.Option("--sizes", help="Comma-separated image sizes for --datasets, e.g. 28,64 (default 28).")] = None,
    data_dir: DataDirOpt = None,
    runs_dir: RunsDirOpt = Path("runs"),
    variants_file: VariantsFileOpt = None,
    jobs: Annotated[Optional[int], typer.Option("--jobs", "-j", help=f"Runs side by side, each with cores/jobs threads (default: {CPU_JOBS} on CPU, at most one per core; {GPU_JOBS} on one GPU; 1 times each run alone).")] = None,
    threads: ThreadsOpt = 0,
    accelerator: AcceleratorOpt = "auto",
    devices: DevicesOpt = 1,
    precision: PrecisionOpt = "32",
    steps_per_execution: StepsPerExecutionOpt = 0,
    cuda_graphs: CudaGraphsOpt = None,
    margin: MarginOpt = 1.0,
    shuffle: ShuffleOpt = None,
    tensorboard: Annotated[bool, typer.Option("--tensorboard", help="Also log each run to TensorBoard.")] = False,
    mlflow: MlflowOpt = False,
    mlflow_uri: MlflowUriOpt = None,
    executor: Annotated[ExecutorName, typer.Option("--executor", help="local: worker processes on this machine; ray: one Ray task per run on a Ray cluster (pip install 'ftmed[ray]'; docs/cluster.md).")] = "local",
    address: Annotated[Optional[str], typer.Option("--address", help="Ray cluster address (host:port, auto, ray://host:port); default: $RAY_ADDRESS, a cluster started here, else a new local one.")] = None,
    export: Annotated[Optional[str], typer.Option("--export", help="After the grid, export every finished run: onnx (-> <run dir>/model.onnx; ftmed export).")] = None,
) -> None:
    """Run variants x frameworks x seeds (resumable) and write the cross-framework comparison."""
    import ftmed

    several = datasets is not None or sizes is not None  # then a dict {(dataset, size): Comparison}
    result = ftmed.compare(
        variants=variants, frameworks=frameworks, seeds=seeds, epochs=epochs, dataset=dataset, size=size,
        data_dir=data_dir, runs_dir=runs_dir, variants_file=variants_file, jobs=jobs, threads=threads,
        accelerator=value(accelerator), devices=devices, precision=value(precision),
        steps_per_execution=steps_per_execution, cuda_graphs=cuda_graphs, margin=margin, shuffle=value(shuffle),
        tensorboard=tensorboard, mlflow=mlflow_target(mlflow, mlflow_uri), executor=value(executor),
        address=address, datasets=(datasets or "pathmnist") if several else None,
        sizes=(sizes or "28") if several else None, atlas=atlas, export=export,
    )
    if several:
        bad = False
        for (name, image_size), comparison in result.items():
            print_table(comparison.rows, comparison.records, margin, f"{name} {image_size} px")
            bad = bad or bool(comparison.failed or comparison.outputs["damaged"] or comparison.missing)
        typer.echo(f"wrote {len(result)} data files' runs and tables into {runs_dir} (ftmed report {runs_dir})")
        if atlas:
            typer.echo(f"wrote the atlas: {runs_dir / 'atlas.md'}, atlas.csv, atlas.png")
        if _exports_failed(result) or bad:
            raise typer.Exit(1)
        return
    comparison = result
    outputs, records = comparison.outputs, comparison.records
    print_table(comparison.rows, records, margin)
    typer.echo(f"wrote {outputs['markdown']}, {outputs['csv'].name}, {outputs['json'].name}, "
               f"{len(outputs['plots'])} plots in {runs_dir / 'plots'}, "
               f"{len(outputs['predictions'])} medmnist prediction files in {runs_dir / 'predictions'}")
    if comparison.failed:
        typer.echo(f"{len(comparison.failed)} run(s) failed; see the table's 'Failed runs' list", err=True)
    if _exports_failed(comparison) or comparison.failed or outputs["damaged"] or comparison.missing:
        raise typer.Exit(1)


def _exports_failed(result) -> bool:
    """Print one line per failed export (--export); whether there was any."""
    from ftmed.onnx_export import export_failures

    lines = export_failures(result)
    for line in lines:
        typer.echo(line, err=True)
    return bool(lines)


def print_table(rows, records, margin: float = 1.0, heading: str | None = None) -> None:
    """A compact terminal view; comparison.md/.csv carry every column. `heading` names the data file.
    Under it, the seed-count advice."""
    from rich.console import Console
    from rich.table import Table

    from ftmed.reporting.rows import power_notes
    from ftmed.reporting.tables import (
        compared_with_lightning, difference_columns, frameworks_in, table_cells, table_columns, title,
        vs_baseline_columns,
    )

    frameworks = frameworks_in(rows)
    columns = table_columns(frameworks)
    keep = ["variant", "study acc %", *(f"{fw} acc %" for fw in frameworks), *(f"{fw} s/epoch" for fw in frameworks),
            *(c for fw in compared_with_lightning(frameworks) for c in difference_columns(fw)),
            *vs_baseline_columns(frameworks)]
    index = [columns.index(c) for c in keep if c in columns]
    table = Table(title=title(records) + (f" -- {heading}" if heading else ""), title_justify="left")
    for i in index:
        table.add_column(columns[i], overflow="fold")
    for row in rows:
        cells = table_cells(row, frameworks)
        table.add_row(*(cells[i] for i in index))
    console = Console(width=max(140, Console().width))
    console.print(table)
    for note in power_notes(rows, margin):
        console.print(f"seeds: {note}", highlight=False)
