"""`ftmed compare`: the study's grid of variants x frameworks x seeds, each run in its own process, then the
comparison table and plots. Resumable: finished runs are skipped; Ctrl-C loses at most the runs in flight."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Optional

import typer

from cli.options import (
    AcceleratorOpt, DataDirOpt, DatasetOpt, DevicesOpt, EpochsOpt, MarginOpt, MlflowOpt, MlflowUriOpt,
    PrecisionOpt, RunsDirOpt, SizeOpt, ThreadsOpt, VariantsFileOpt, mlflow_target, value,
)


@dataclass
class Job:
    framework: str
    config: object  # ExperimentConfig
    run_key: str

    @property
    def label(self) -> str:
        return f"{self.config.name} / {self.framework} / seed {self.config.seed}"


def plan(variants, frameworks, seeds, epochs, dataset, size, data_dir, data_md5, precision) -> list[Job]:
    from ftmed_core.records import run_key

    jobs = []
    for variant in variants:
        for seed in seeds:
            for framework in frameworks:
                config = replace(variant.config, seed=seed, data_dir=str(data_dir) if data_dir else None,
                                 **{k: v for k, v in (("epochs", epochs), ("dataset", dataset), ("size", size))
                                    if v is not None})
                jobs.append(Job(framework, config, run_key(framework, config, data_md5, precision)))
    return jobs


def record_crash(job: Job, runtime, data_source: dict, runs_dir: Path, error: str) -> None:
    """The worker died without writing a record (killed, out of memory): record the run as failed."""
    from ftmed_core.records import new_record, read_record, write_record

    run_dir = runs_dir / job.run_key
    if read_record(run_dir) is not None:
        return
    record = new_record(job.framework, job.config, runtime, data_source)
    record.status, record.error, record.finished_at = "failed", error, time.time()
    write_record(run_dir, record)


def compare(
    variants: Annotated[Optional[str], typer.Option("--variants", help="study, all, a group, or comma-separated names (default: study; with --variants-file: baseline plus the file's, 'file' = all of the file's).")] = None,
    frameworks: Annotated[str, typer.Option("--frameworks", help="Comma-separated: lightning,keras.")] = "lightning,keras",
    seeds: Annotated[str, typer.Option("--seeds", help="Comma-separated seeds, e.g. 0,1,2.")] = "0,1,2",
    epochs: EpochsOpt = None,
    dataset: DatasetOpt = None,
    size: SizeOpt = None,
    data_dir: DataDirOpt = None,
    runs_dir: RunsDirOpt = Path("runs"),
    variants_file: VariantsFileOpt = None,
    jobs: Annotated[int, typer.Option("--jobs", "-j", help="Runs side by side, each with cores/jobs threads.")] = 1,
    threads: ThreadsOpt = 0,
    accelerator: AcceleratorOpt = "auto",
    devices: DevicesOpt = 1,
    precision: PrecisionOpt = "32",
    margin: MarginOpt = 1.0,
    tensorboard: Annotated[bool, typer.Option("--tensorboard", help="Also log each run to TensorBoard.")] = False,
    mlflow: MlflowOpt = False,
    mlflow_uri: MlflowUriOpt = None,
) -> None:
    """Run variants x frameworks x seeds (resumable) and write the cross-framework comparison."""
    import ftmed

    comparison = ftmed.compare(
        variants=variants, frameworks=frameworks, seeds=seeds, epochs=epochs, dataset=dataset, size=size,
        data_dir=data_dir, runs_dir=runs_dir, variants_file=variants_file, jobs=jobs, threads=threads,
        accelerator=value(accelerator), devices=devices, precision=value(precision), margin=margin,
        tensorboard=tensorboard, mlflow=mlflow_target(mlflow, mlflow_uri),
    )
    outputs, records = comparison.outputs, comparison.records
    print_table(outputs["rows"], records)
    typer.echo(f"wrote {outputs['markdown']}, {outputs['csv'].name}, {outputs['json'].name}, "
               f"{len(outputs['plots'])} plots in {runs_dir / 'plots'}, "
               f"{len(outputs['predictions'])} medmnist prediction files in {runs_dir / 'predictions'}")
    if comparison.failed:
        typer.echo(f"{len(comparison.failed)} run(s) failed; see the table's 'Failed runs' list", err=True)
        raise typer.Exit(1)


def run_all(todo: list[Job], runtime, source: dict, runs_dir: Path, jobs: int) -> None:
    """Run `todo` in worker processes, `jobs` at a time, with an overall bar and per-run epoch bars."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    console = Console(stderr=True)
    interactive = console.is_terminal
    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TimeRemainingColumn(), console=console, disable=not interactive)
    pending = list(todo)
    active: dict = {}  # Popen -> (job, task id)
    with progress:
        overall = progress.add_task("runs", total=len(todo))
        try:
            while pending or active:
                while pending and len(active) < jobs:
                    job = pending.pop(0)
                    spec = {"framework": job.framework, "config": job.config.to_dict(),
                            "runtime": runtime.to_dict(), "runs_dir": str(runs_dir)}
                    # stderr goes to a file, not a pipe: a chatty run must never block on a full pipe.
                    log_path = runs_dir / "logs" / f"{job.run_key}.log"
                    log_path.parent.mkdir(exist_ok=True)
                    with open(log_path, "w") as log:
                        proc = subprocess.Popen([sys.executable, "-m", "cli.worker", json.dumps(spec)],
                                                stdout=subprocess.PIPE, stderr=log, text=True, bufsize=1)
                    os.set_blocking(proc.stdout.fileno(), False)
                    task = progress.add_task(f"  {job.label}", total=job.config.epochs)
                    active[proc] = (job, task, [], log_path)
                time.sleep(0.2)
                for proc in list(active):
                    job, task, buffer, log_path = active[proc]
                    for line in _read_lines(proc, buffer):
                        try:
                            event = json.loads(line)
                        except ValueError:
                            continue
                        if event.get("event") == "epoch":
                            progress.update(task, completed=event["epoch"])
                    if proc.poll() is None:
                        continue
                    del active[proc]
                    progress.remove_task(task)
                    progress.advance(overall)
                    if proc.returncode != 0:
                        tail = log_path.read_text(errors="replace").strip().splitlines()[-1:] or ["no output"]
                        record_crash(job, runtime, source, runs_dir,
                                     f"worker process died (exit code {proc.returncode}): {tail[0]} "
                                     f"(log: {log_path})")
                    _report_done(console, job, runs_dir)
        except KeyboardInterrupt:
            for proc in active:
                proc.terminate()
            for proc in active:
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
            raise


def _read_lines(proc, buffer: list) -> list[str]:
    try:
        chunk = proc.stdout.read()
    except (BlockingIOError, TypeError):
        chunk = None
    if not chunk:
        return []
    buffer.append(chunk)
    text = "".join(buffer)
    lines = text.split("\n")
    buffer[:] = [lines[-1]]
    return [line for line in lines[:-1] if line.strip()]


def _report_done(console, job: Job, runs_dir: Path) -> None:
    from ftmed_core.records import read_record

    record = read_record(runs_dir / job.run_key)
    if record is not None and record.finished:
        console.print(f"done   {job.label}: test acc {100 * record.test['accuracy']:.2f} %, "
                      f"{record.training_seconds:.1f} s", highlight=False)
    else:
        console.print(f"FAILED {job.label}: {record.error if record else 'no record written'}", highlight=False)


def print_table(rows, records) -> None:
    """A compact terminal view; comparison.md/.csv carry every column."""
    from rich.console import Console
    from rich.table import Table

    from ftmed_core.report import frameworks_in, table_cells, table_columns, title

    frameworks = frameworks_in(rows)
    columns = table_columns(frameworks)
    keep = ["variant", "study acc %", *(f"{fw} acc %" for fw in frameworks), *(f"{fw} s/epoch" for fw in frameworks),
            "Δacc L−K [95% CI]", "equivalence", "vs baseline (pooled)"]
    index = [columns.index(c) for c in keep if c in columns]
    table = Table(title=title(records), title_justify="left")
    for i in index:
        table.add_column(columns[i], overflow="fold")
    for row in rows:
        cells = table_cells(row, frameworks)
        table.add_row(*(cells[i] for i in index))
    Console(width=max(140, Console().width)).print(table)
