"""The local executor: `jobs` worker processes side by side on this machine, each run in its own
`python -m ftmed.worker` process that writes its record into the runs folder itself."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from ftmed.executors.reporting import report_done, study_progress, write_failed_record
from ftmed.worker import BUSY_EXIT  # the worker's exit code for a run another process has claimed


class LocalExecutor:
    """`jobs` worker processes side by side on this machine (`run_all`)."""

    def __init__(self, jobs: int):
        self.jobs = jobs

    def default_threads(self, cores: int) -> int:
        return max(1, cores // self.jobs)

    def describe(self, threads: int) -> str:
        return f"{self.jobs} at a time, {threads} thread(s) each"

    def run(self, todo, runtime, source, runs_dir, data_path=None) -> list:
        return run_all(todo, runtime, source, runs_dir, self.jobs)


def run_all(todo: list, runtime, source: dict, runs_dir: Path, jobs: int) -> list:
    """Run `todo` in worker processes, `jobs` at a time, with an overall bar and per-run epoch bars.
    Each worker loads the data file its config names; `source` describes it for a crash record (a job's
    own `source` first: a grid over several files).

    Returns the jobs a worker found claimed by another process (not trained here, no record written).
    """
    from rich.console import Console

    console = Console(stderr=True)
    progress = study_progress(console)
    pending = list(todo)
    busy: list = []
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
                        proc = subprocess.Popen([sys.executable, "-m", "ftmed.worker", json.dumps(spec)],
                                                stdout=subprocess.PIPE, stderr=log, text=True, bufsize=1)
                    os.set_blocking(proc.stdout.fileno(), False)
                    task = progress.add_task(f"  {job.label}", total=job.config.epochs)
                    active[proc] = (job, task, [], log_path, {})
                time.sleep(0.2)
                for proc in list(active):
                    job, task, buffer, log_path, done = active[proc]
                    for line in _read_lines(proc, buffer):
                        try:
                            event = json.loads(line)
                        except ValueError:
                            continue
                        if event.get("event") == "epoch":
                            progress.update(task, completed=event["epoch"])
                        elif event.get("event") == "done":
                            done.update(event)
                    if proc.poll() is None:
                        continue
                    del active[proc]
                    progress.remove_task(task)
                    progress.advance(overall)
                    if proc.returncode == BUSY_EXIT:
                        busy.append(job)
                        console.print(f"skipped {job.label}: another process is training it", highlight=False)
                        continue
                    if proc.returncode != 0:
                        tail = log_path.read_text(errors="replace").strip().splitlines()[-1:] or ["no output"]
                        record_crash(job, runtime, job.source or source, runs_dir,
                                     f"worker process died (exit code {proc.returncode}): {tail[0]} "
                                     f"(log: {log_path})")
                    report_done(console, job, runs_dir, bool(done.get("reused")))
        except KeyboardInterrupt:
            for proc in active:
                proc.terminate()
            for proc in active:
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
            raise
    return busy


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


def record_crash(job, runtime, data_source: dict, runs_dir: Path, error: str) -> None:
    """The worker died without writing a record (killed, out of memory): record the run as failed.

    Only under the run's claim, and only where no record exists: a run another process has claimed (or
    finished) meanwhile is left to it.
    """
    from ftmed_core.locks import run_lock_path, try_claim
    from ftmed_core.records import RecordDamaged, read_record

    run_dir = runs_dir / job.run_key
    claimed = try_claim(run_lock_path(run_dir))
    if claimed is None:
        return
    with claimed:
        try:
            if read_record(run_dir) is not None:
                return
        except RecordDamaged:
            return  # the next compare moves it aside and redoes it
        write_failed_record(job, runtime, data_source, runs_dir, error)
