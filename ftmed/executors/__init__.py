"""Where `ftmed compare` runs its grid: a process pool on this machine, or one Ray task per run on a cluster.

An executor takes the runs the resumable plan says are missing and guarantees that each of them ends with a
record in the runs folder, finished or failed; a run that cannot even report (its process or node died)
gets a failed record naming why, and the others go on. `compare` decides what to run and renders the report;
the executor only decides where each run trains. The interface (`Executor`):

  default_threads(cores)   threads per run when the user did not say (`--threads 0`)
  describe(threads)        one line for the plan summary
  run(todo, ...)           train every job, showing an overall bar with ETA and per-run epoch bars; returns
                           the jobs another process had claimed (not run here)

The package:
  local.py       `LocalExecutor`: `jobs` worker processes side by side on this machine
  ray_driver.py  `RayExecutor`: submits one Ray task per run, collects events and results, writes each result
  ray_task.py    what runs inside a Ray task (a fresh worker process per run)
  reporting.py   what both share: the progress display, the per-run line, the failed-record writer

Ray is optional (`pip install 'ftmed[ray]'`); it is imported only when the ray executor runs, and nothing
here imports a framework or rich at import time (`ftmed --help` stays light).
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Protocol

from ftmed.executors.local import LocalExecutor
from ftmed.executors.ray_driver import RayExecutor
from ftmed.executors.ray_task import DATA_CACHE, TASK_NAME, materialize_data

__all__ = ["DATA_CACHE", "TASK_NAME", "Executor", "ExecutorName", "LocalExecutor", "RayExecutor",
           "make_executor", "materialize_data"]

ExecutorName = Enum("ExecutorName", {"local": "local", "ray": "ray"}, type=str)


class Executor(Protocol):
    def default_threads(self, cores: int) -> int: ...

    def describe(self, threads: int) -> str: ...

    def run(self, todo: list, runtime, source: dict, runs_dir: Path, data_path: Path) -> list: ...


def make_executor(name: str, address: str | None, jobs: int) -> Executor:
    """The executor for `--executor NAME`; raises ConfigError (one line in the CLI) for what cannot work."""
    from ftmed_core.errors import ConfigError

    if name == "local":
        if address is not None:
            raise ConfigError("--address is for --executor ray; the local executor runs on this machine")
        return LocalExecutor(jobs)
    if name == "ray":
        return RayExecutor(address)
    raise ConfigError(f"unknown executor {name!r}; choose one of: local, ray")
