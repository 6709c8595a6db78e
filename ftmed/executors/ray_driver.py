"""The Ray executor's driver side: every run as one Ray task, results written back into the runs folder.

- a task is a fresh Ray worker process (`max_calls=1`) that runs `ftmed.worker.main` (see ray_task.py), the
  very code a local run executes, so TF and torch state never leaks between runs and both executors
  compute the same bits;
- resources are declared per task from the runtime: `num_cpus` = threads per run, `num_gpus` = devices when
  the run uses GPUs (the task then sees only the GPUs Ray gave it, and none otherwise);
- no shared filesystem: each data file travels through Ray's object store (read in 32 MiB chunks, put once
  per study however many runs and files the grid has, cached per node and MD5-checked on arrival); the run trains into a node-local temp folder and returns its
  record, arrays, history, log and the framework's files (those over `max_artifact_bytes` stay behind and
  are listed in the record) to the driver, which writes them with the core's atomic record writers,
  record last;
- a task that raised, or whose worker or node died, is recorded as a failed run; Ray's automatic retries are
  off (`max_retries=0`), so such a run is redone by rerunning the same command, like a local one.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path

from ftmed.executors.ray_task import TASK_NAME, train_in_task
from ftmed.executors.reporting import report_done, study_progress, write_failed_record

RUNTIME_ENV_VAR = "FTMED_RAY_RUNTIME_ENV"  # JSON for ray.init(runtime_env=...): how workers get ftmed
CHUNK_BYTES = 32 << 20  # data file pieces in the object store: neither end holds the whole file in memory


def import_ray():
    """Ray, or a ConfigError saying how to install it."""
    from ftmed_core.errors import ConfigError

    try:
        import ray
    except ImportError:
        raise ConfigError("--executor ray needs Ray, which is not installed: pip install 'ftmed[ray]'") from None
    return ray


class RayExecutor:
    """Every run as one Ray task on the cluster at `address` (None: $RAY_ADDRESS, a cluster started on this
    machine with `ray start`, else a new local Ray instance). All missing runs are submitted at once; Ray
    starts each when a node has its CPUs/GPUs free, so `--jobs` plays no part."""

    def __init__(self, address: str | None = None, max_artifact_bytes: int = 256 << 20):
        import_ray()  # fail before any data is loaded
        if address is not None:
            _check_reachable(address)
        self.address = address
        self.max_artifact_bytes = max_artifact_bytes

    def default_threads(self, cores: int) -> int:
        # One thread per run: for small models two single-thread runs side by side beat one two-thread run
        # (SPEED_NOTES), and a cluster has more runs than cores. Big images: pass --threads.
        return 1

    def describe(self, threads: int) -> str:
        return f"one Ray task per run on {self.address or 'the default Ray cluster'}, {threads} CPU(s) each"

    def run(self, todo, runtime, source, runs_dir, data_path) -> list:
        """Submit `todo`; returns the jobs another process had claimed (`ftmed_core.locks`), not run here.

        The driver holds each submitted run's claim in the runs folder from submission until it has
        written the result, so two studies (local or Ray) sharing a runs folder never train a run twice.
        """
        ray = import_ray()
        from rich.console import Console

        from ftmed_core.locks import run_lock_path, try_claim

        claims, busy = {}, []
        for job in todo:
            claim = try_claim(run_lock_path(Path(runs_dir) / job.run_key))
            if claim is None:
                busy.append(job)
            else:
                claims[job.run_key] = claim
        todo = [job for job in todo if job.run_key in claims]
        try:
            self._run(ray, todo, runtime, source, runs_dir, data_path, claims, Console)
        finally:
            for claim in claims.values():
                claim.release()
        return busy

    def _run(self, ray, todo, runtime, source, runs_dir, data_path, claims, Console) -> None:
        if not todo:
            return
        connected_here = not ray.is_initialized()
        if connected_here:
            _connect(ray, self.address)
        box = None
        refs: dict = {}
        try:
            cpus, gpus = _task_resources(ray, runtime)
            console = Console(stderr=True)
            console.print(_cluster_line(ray, cpus, gpus), highlight=False)
            # Each data file goes into the object store once per study, whatever the number of runs on it
            # (and is fetched once per node: `materialize_data` caches it there by MD5).
            files: dict = {}
            for job in todo:
                md5 = (job.source or source)["md5"]
                if md5 not in files:
                    files[md5] = _put_file(ray, Path(job.data_path or data_path), md5)
            box = _progress_box(ray)
            task = ray.remote(max_calls=1, max_retries=0, retry_exceptions=False)(train_in_task).options(
                name=TASK_NAME, num_cpus=cpus, num_gpus=gpus)
            for job in todo:
                spec = {"framework": job.framework, "config": job.config.to_dict(), "runtime": runtime.to_dict(),
                        "run_key": job.run_key, "gpus": gpus, "max_artifact_bytes": self.max_artifact_bytes}
                refs[task.remote(spec, files[(job.source or source)["md5"]], box)] = job
            self._collect(ray, refs, box, runtime, source, Path(runs_dir), console, claims)
        except KeyboardInterrupt:
            for ref in refs:
                ray.cancel(ref, force=True)
            raise
        finally:
            if box is not None:
                ray.kill(box)
            if connected_here:
                ray.shutdown()

    def _collect(self, ray, refs, box, runtime, source, runs_dir, console, claims) -> None:
        progress = study_progress(console)
        by_key = {job.run_key: job for job in refs.values()}
        bars: dict = {}  # run_key -> progress task id
        with progress:
            overall = progress.add_task("runs", total=len(refs))
            while refs:
                ready, _ = ray.wait(list(refs), num_returns=len(refs), timeout=0.5)
                pending = {job.run_key for job in refs.values()}
                for event in _drain(ray, box):
                    job = by_key.get(event.get("run_key"))
                    if job is None or job.run_key not in pending:
                        continue  # already collected: its events arrived after its result
                    if event["event"] == "start" and job.run_key not in bars:
                        bars[job.run_key] = progress.add_task(f"  {job.label} @ {event['node']}",
                                                              total=job.config.epochs)
                    elif event["event"] == "epoch" and job.run_key in bars:
                        progress.update(bars[job.run_key], completed=event["epoch"])
                for ref in ready:
                    job = refs.pop(ref)
                    try:
                        write_result(job, ray.get(ref), runtime, job.source or source, runs_dir)
                    except ray.exceptions.RayError as exc:
                        record_failed(job, runtime, job.source or source, runs_dir, describe_ray_error(exc))
                    claims.pop(job.run_key).release()  # written: another study may now read or redo it
                    if job.run_key in bars:
                        progress.remove_task(bars.pop(job.run_key))
                    progress.advance(overall)
                    report_done(console, job, runs_dir)


def _connect(ray, address: str | None) -> None:
    import logging

    from ftmed_core.errors import ConfigError

    kwargs = {}
    if os.environ.get(RUNTIME_ENV_VAR):
        try:
            kwargs["runtime_env"] = json.loads(os.environ[RUNTIME_ENV_VAR])
        except ValueError as exc:
            raise ConfigError(f"${RUNTIME_ENV_VAR} is not valid JSON ({exc})") from None
    try:
        # Workers' output goes to each run's log (runs/logs/), not to this terminal.
        ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING, **kwargs)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"cannot connect to the Ray cluster at {address or 'the default address'}: {first}") from None


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """A host:port head must accept a TCP connection: Ray itself would retry for minutes, logging each try."""
    import socket

    from ftmed_core.errors import ConfigError

    if address == "auto" or "://" in address:
        return  # Ray resolves these itself, and fails fast
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ConfigError(f"--address {address!r} is not host:port (e.g. 10.0.0.1:6379), 'auto' or ray://host:port")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as exc:
        raise ConfigError(f"cannot reach a Ray head at {address} ({exc.strerror or exc}); start one with "
                          f"`ray start --head --port {port}` or check the address") from None


def _task_resources(ray, runtime) -> tuple[int, int]:
    """(num_cpus, num_gpus) one run asks for, checked against the largest node so no task waits forever."""
    from ftmed_core.errors import ConfigError

    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    most_cpus = max((r.get("CPU", 0) for r in nodes), default=0)
    most_gpus = max((r.get("GPU", 0) for r in nodes), default=0)
    cpus = max(1, runtime.threads)
    if runtime.accelerator == "gpu" or (runtime.accelerator == "auto" and most_gpus > 0):
        gpus = runtime.devices
    else:
        gpus = 0
    if cpus > most_cpus:
        raise ConfigError(f"each run asks for {cpus} CPU(s) (--threads) but the largest Ray node has "
                          f"{most_cpus:g}; pass --threads {int(most_cpus) or 1} or add larger nodes")
    if gpus > most_gpus:
        raise ConfigError(f"each run asks for {gpus} GPU(s) but the largest Ray node has {most_gpus:g}; "
                          f"use --accelerator cpu, fewer --devices, or add GPU nodes")
    return cpus, gpus


def _cluster_line(ray, cpus: int, gpus: int) -> str:
    total = ray.cluster_resources()
    nodes = sum(1 for n in ray.nodes() if n.get("Alive"))
    return (f"Ray cluster: {nodes} node(s), {total.get('CPU', 0):g} CPU(s), {total.get('GPU', 0):g} GPU(s); "
            f"each run asks for {cpus} CPU(s)" + (f" and {gpus} GPU(s)" if gpus else ""))


def _put_file(ray, path: Path, md5: str) -> dict:
    """Put the data file into the object store in chunks; the MD5 must be the one the plan was made with."""
    from ftmed_core.errors import DataError

    digest, chunks, size = hashlib.md5(usedforsecurity=False), [], 0
    with open(path, "rb") as handle:
        while block := handle.read(CHUNK_BYTES):
            digest.update(block)
            chunks.append(ray.put(block))
            size += len(block)
    if digest.hexdigest() != md5:
        raise DataError(f"{path} changed while the study was being planned (MD5 {digest.hexdigest()}, "
                        f"expected {md5}); rerun the command")
    return {"name": path.name, "md5": md5, "size": size, "chunks": chunks}


class _ProgressBox:
    """A mailbox actor: tasks post start/epoch events, the driver drains them twice a second."""

    def __init__(self):
        self.events: list = []

    def put(self, event: dict) -> None:
        self.events.append(event)

    def drain(self) -> list:
        events, self.events = self.events, []
        return events


def _progress_box(ray):
    options = {"num_cpus": 0, "max_restarts": 0}
    try:  # next to the driver, so a worker node's death takes no progress with it
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        here = ray.get_runtime_context().get_node_id()
        options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(here, soft=True)
    except Exception:  # Ray Client drivers have no node of their own; anywhere will do
        pass
    return ray.remote(_ProgressBox).options(**options).remote()


def _drain(ray, box) -> list:
    try:
        return ray.get(box.drain.remote(), timeout=10)
    except ray.exceptions.RayError:
        return []  # progress is a nicety; results still arrive through the task returns


# ---- back on the driver -------------------------------------------------------------------------------------

def write_result(job, payload: dict, runtime, source: dict, runs_dir: Path) -> None:
    """Write a task's result into runs_dir/<run_key>/ with the core's atomic writers, the record last.

    The record keeps what the worker measured; its config and data path are the driver's (the worker
    trained on its node-local copy of the same file, named with the node under environment["executor"]).
    """
    import numpy as np

    from ftmed_core.records import RECORD_FILE, RunRecord, atomic_write_bytes, atomic_write_text, write_record

    log_dir = runs_dir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(log_dir / f"{job.run_key}.log", payload.get("log", ""))
    if "error" in payload:
        record_failed(job, runtime, source, runs_dir,
                      f"Ray task on {payload['node']} failed before training: {payload['error']} "
                      f"(log: {log_dir / f'{job.run_key}.log'})")
        return
    files = dict(payload["files"])
    if RECORD_FILE not in files:
        record_failed(job, runtime, source, runs_dir, f"Ray task on {payload['node']} wrote no record "
                      f"(log: {log_dir / f'{job.run_key}.log'})")
        return
    record = RunRecord.from_dict(json.loads(files.pop(RECORD_FILE)))
    if record.run_key != job.run_key:
        record_failed(job, runtime, source, runs_dir, f"Ray task returned run {record.run_key}, expected "
                      f"{job.run_key} (a different ftmed version or data file on {payload['node']}?)")
        return
    run_dir = runs_dir / job.run_key
    record.config = job.config.to_dict()
    record.data["path"] = source["path"]
    record.environment = {k: _relocate(v, payload["run_dir"], run_dir) for k, v in record.environment.items()}
    record.environment["executor"] = {"name": "ray", "node": payload["node"], "node_id": payload["node_id"],
                                      "data_copy": payload["data_copy"], "left_behind": payload["left_behind"]}
    arrays = {}
    for name in ("probabilities", "logits", "labels"):
        blob = files.pop(f"test_{name}.npy", None)
        arrays[name] = None if blob is None else np.load(io.BytesIO(blob), allow_pickle=False)
    files.pop("history.csv", None)  # write_record derives it from the record
    for rel, blob in files.items():
        target = run_dir / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(target, blob)
    write_record(run_dir, record, **arrays)


def _relocate(value, node_dir: str, run_dir: Path):
    """Paths into the node's temp run folder (checkpoints) point at the run folder the driver wrote."""
    if isinstance(value, str) and value.startswith(node_dir):
        return str(run_dir) + value[len(node_dir):]
    return value


def record_failed(job, runtime, source: dict, runs_dir: Path, error: str) -> None:
    """A failed record for a run whose task returned no record; a finished record is never replaced.
    The driver holds the run's claim meanwhile."""
    from ftmed_core.records import read_record

    existing = read_record(runs_dir / job.run_key)
    if existing is not None and existing.finished:
        return
    write_failed_record(job, runtime, source, runs_dir, error, executor={"name": "ray"})


def describe_ray_error(exc: BaseException) -> str:
    """One line for a failed record: what Ray says happened to the task."""
    name = type(exc).__name__
    cause = getattr(exc, "cause", None)
    if cause is not None and not isinstance(cause, type(exc)):
        return f"Ray task raised {type(cause).__name__}: {str(cause).strip().splitlines()[0][:300]}"
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    detail = next((line for line in lines if not line.startswith(("(", "Traceback"))), lines[0] if lines else "")
    hint = {
        "WorkerCrashedError": "the worker process died mid-run (killed, or out of memory)",
        "NodeDiedError": "the node running it died",
        "OutOfMemoryError": "Ray's memory monitor killed it",
    }.get(name)
    return f"Ray {name}: {hint + '; ' if hint else ''}{detail[:300]}"
