"""What runs inside a Ray task: one run, trained in a fresh Ray worker process on some node.

The task fetches the data file from the object store into a per-node cache (MD5-checked on arrival), runs
`ftmed.worker.main` (the very code a local run executes) into a node-local temp folder, forwards epoch
events to the driver's progress box, and returns the run's files for the driver to write.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

DATA_CACHE = "ftmed-ray-data"  # per-node cache of data files: $TMPDIR/ftmed-ray-data/<md5>/
TASK_NAME = "ftmed_run"  # the worker's process title while it trains: ray::ftmed_run
LOG_TAIL_BYTES = 1 << 20


def train_in_task(spec: dict, data: dict, box) -> dict:
    """Train one run on this node and return what the driver needs to write its run directory.

    Returns {"files": {relative path: bytes}, "left_behind": [...], "log": str, "node": hostname,
    "data_copy": path} or, if the run could not start (data did not arrive intact, the worker code raised),
    {"error": "...", "log": ..., "node": ...}. A crash of this process is seen by the driver as a Ray error.
    """
    import platform

    node = platform.node()
    if box is not None:
        box.put.remote({"event": "start", "run_key": spec["run_key"], "node": node, "pid": os.getpid()})
    if not spec["gpus"]:
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # only the GPUs Ray assigned: none
    work = Path(tempfile.mkdtemp(prefix=f"ftmed-ray-run-{os.getpid()}-"))  # a killed task leaves it behind
    log_path = work / "worker.log"
    saved_stdout = sys.stdout
    try:
        log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(log_fd, 2)  # native libraries' stderr too: the same as a local run's log
        sys.stderr = os.fdopen(log_fd, "w", buffering=1)
        sys.stdout = _EventStream(box, spec["run_key"], sys.stderr)
        try:
            data_dir = materialize_data(data)
            job = {"framework": spec["framework"], "config": {**spec["config"], "data_dir": str(data_dir)},
                   "runtime": spec["runtime"], "runs_dir": str(work / "runs")}
            from ftmed import worker

            worker.main([json.dumps(job)])
        except Exception as exc:  # the run never produced a record: say why
            sys.stderr.flush()
            return {"error": f"{type(exc).__name__}: {exc}", "log": _tail(log_path), "node": node}
        sys.stderr.flush()
        run_dir = work / "runs" / spec["run_key"]
        files, left = {}, []
        for path in sorted(p for p in run_dir.rglob("*") if p.is_file()):
            rel = path.relative_to(run_dir).as_posix()
            if path.stat().st_size > spec["max_artifact_bytes"] and not rel.startswith(("record.", "test_")):
                left.append(rel)
            else:
                files[rel] = path.read_bytes()
        return {"files": files, "left_behind": left, "log": _tail(log_path), "node": node,
                "node_id": _node_id(), "data_copy": str(data_dir / data["name"]), "run_dir": str(run_dir)}
    finally:
        sys.stdout = saved_stdout
        shutil.rmtree(work, ignore_errors=True)


def _node_id() -> str | None:
    import ray

    try:
        return ray.get_runtime_context().get_node_id()
    except Exception:
        return None


class _EventStream(io.TextIOBase):
    """Stands in for the worker's stdout: its JSON-lines epoch events go to the driver's progress box, other
    lines to the run's log. A text stream (isatty() False, no fileno()) for libraries that inspect stdout."""

    encoding = "utf-8"

    def __init__(self, box, run_key: str, log):
        super().__init__()
        self.box, self.run_key, self.log, self.pending = box, run_key, log, ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self.pending += text
        *lines, self.pending = self.pending.split("\n")
        for line in lines:
            try:
                event = json.loads(line)
            except ValueError:
                self.log.write(line + "\n")
                continue
            if isinstance(event, dict) and event.get("event") == "epoch" and self.box is not None:
                self.box.put.remote({"event": "epoch", "run_key": self.run_key, "epoch": event["epoch"]})
        return len(text)


def materialize_data(data: dict) -> Path:
    """The folder holding this node's copy of the data file, fetched chunk by chunk from the object store
    unless an intact copy (same MD5) is already cached there. Raises DataError if the copy is not intact."""
    import ray

    from ftmed_core.data import memo_md5
    from ftmed_core.errors import DataError

    folder = Path(tempfile.gettempdir()) / DATA_CACHE / data["md5"]
    target = folder / data["name"]
    if target.is_file() and target.stat().st_size == data["size"] and memo_md5(target) == data["md5"]:
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{data['name']}.", suffix=".part", dir=folder)
    digest = hashlib.md5(usedforsecurity=False)
    try:
        with os.fdopen(fd, "wb") as out:
            for ref in data["chunks"]:
                block = ray.get(ref)
                digest.update(block)
                out.write(block)
        if digest.hexdigest() != data["md5"]:
            os.unlink(tmp)
            with contextlib.suppress(OSError):
                folder.rmdir()  # only if no other copy is there
            raise DataError(f"data file {data['name']} arrived with MD5 {digest.hexdigest()}, "
                            f"expected {data['md5']}")
        os.replace(tmp, target)  # concurrent tasks on one node each write their own part; any rename wins
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return folder


def _tail(path: Path) -> str:
    try:
        with open(path, "rb") as handle:
            handle.seek(max(0, path.stat().st_size - LOG_TAIL_BYTES))
            return handle.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
