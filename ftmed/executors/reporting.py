"""What both executors share: the study's progress display, the one line per finished run, and the
record written for a run that ended without writing one itself."""

from __future__ import annotations

import time
from pathlib import Path


def study_progress(console):
    """The progress display: an overall bar with ETA plus one epoch bar per run in flight (shown only on a
    terminal; in a log, the per-run lines of `report_done` tell the story)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeRemainingColumn(), console=console, disable=not console.is_terminal)


def report_done(console, job, runs_dir: Path, reused: bool = False) -> None:
    """One line for a run that has ended: its test accuracy and time, or why it failed."""
    from ftmed_core.records import RecordDamaged, read_record

    try:
        record = read_record(runs_dir / job.run_key)
    except RecordDamaged as exc:
        console.print(f"FAILED {job.label}: {exc}", highlight=False)
        return
    if record is not None and record.finished and reused:
        console.print(f"reused {job.label}: finished by another process meanwhile", highlight=False)
    elif record is not None and record.finished:
        console.print(f"done   {job.label}: test acc {100 * record.test['accuracy']:.2f} %, "
                      f"{record.training_seconds:.1f} s", highlight=False)
    else:
        console.print(f"FAILED {job.label}: {record.error if record else 'no record written'}", highlight=False)


def write_failed_record(job, runtime, source: dict, runs_dir: Path, error: str,
                        executor: dict | None = None) -> None:
    """Write a failed record saying `error` for a run that returned none of its own.

    The caller holds the run's claim and has decided that no record worth keeping is there; `executor`,
    when given, goes to the record's environment["executor"].
    """
    from ftmed_core.records import new_record, write_record

    record = new_record(job.framework, job.config, runtime, source)
    record.status, record.error, record.finished_at = "failed", error, time.time()
    if executor is not None:
        record.environment["executor"] = executor
    write_record(runs_dir / job.run_key, record)
