"""One run in its own process: `python -m ftmed.worker JOB_JSON`, started by `ftmed compare`.

Each framework trains in a fresh process so that TensorFlow and torch never share threads, memory or a
GPU, and each run is timed on its own. The thread budget arrives in the job and is set in the environment
before either framework is imported. Progress goes to stdout as JSON lines:
  {"event": "epoch", "epoch": 3, "total": 20, ...history values}
  {"event": "done", "status": "finished" | "failed", "run_key": ..., "error": ..., "reused": bool}
Exit code BUSY_EXIT (75) means another process holds the run's claim: nothing was trained or written.
If the parent `compare` dies, the worker trains on (its progress lines go nowhere) and writes its record.
"""

from __future__ import annotations

import json
import os
import sys


BUSY_EXIT = 75  # the run is claimed by another process (EX_TEMPFAIL); ftmed.grid imports it


def main(argv: list[str]) -> int:
    job = json.loads(argv[0])
    threads = str(job["runtime"]["threads"])
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = threads

    from pathlib import Path

    from ftmed.adapters import framework_train
    from ftmed_core.config import ExperimentConfig, RuntimeConfig

    config = ExperimentConfig.from_dict(job["config"])
    runtime = RuntimeConfig(**job["runtime"])

    def emit(payload: dict) -> None:
        # If `ftmed compare` died (kill -9 of the study), the pipe is gone: keep training silently, so the
        # run still finishes and writes its record, rather than fail on a progress message.
        try:
            sys.stdout.write(json.dumps(payload) + "\n")
            sys.stdout.flush()
        except (BrokenPipeError, ValueError, OSError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)

    def on_epoch(epoch: int, total: int, values: dict) -> None:
        emit({"event": "epoch", "epoch": epoch, "total": total, **{k: float(v) for k, v in values.items()}})

    from ftmed_core.runner import RunInProgress

    try:
        record = framework_train(job["framework"], runtime)(config, runtime=runtime, runs_dir=Path(job["runs_dir"]),
                                                            on_epoch=on_epoch)
    except RunInProgress as exc:  # another study claimed this run first; `compare` waits for it
        print(f"skipped: {exc}", file=sys.stderr)
        return BUSY_EXIT
    # A finished run another process completed just before this one claimed it is reused, not retrained.
    reused = record.environment.get("pid") != os.getpid()
    if runtime.mlflow and not reused:  # test metrics, record and plots: known only now
        from ftmed.tracking import finish_run

        finish_run(record, Path(job["runs_dir"]) / record.run_key, runtime.mlflow)
    emit({"event": "done", "status": record.status, "run_key": record.run_key, "error": record.error,
          "reused": reused})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
