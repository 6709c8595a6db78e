"""`ftmed compare --executor ray` on a real two-node Ray cluster on this machine (CPU only).

The cluster (the `cluster` fixture of conftest.py: a head and a second worker node, one CPU each) is
started once for the module and torn down at the end. The grid is the same 2 variants x 2 frameworks x 2 seeds x 1 epoch as tests/test_compare_e2e.py;
both executors must produce bitwise-identical test outputs and histories, since a Ray task runs the same
worker code with the same thread count in a fresh process.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from cli.main import app
from conftest import SHIPPED_TO_RAY
from ftmed_core.data import file_md5
from ftmed_core.records import list_records

GRID = ["--variants", "baseline,sgd-momentum", "--seeds", "0,1", "--epochs", "1", "--threads", "1"]
COMPUTED = ("train_loss", "train_acc", "val_loss", "val_acc")  # epoch_seconds is a timing, not a result


def test_ray_executor_without_ray_is_one_line(tiny_synth_dir, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    result = CliRunner().invoke(app, ["compare", *GRID, "--data-dir", str(tiny_synth_dir),
                                      "--runs-dir", str(tmp_path / "runs"), "--executor", "ray"])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert lines == ["error: --executor ray needs Ray, which is not installed: pip install 'ftmed[ray]'"]
    assert not (tmp_path / "runs").exists()


def test_address_without_the_ray_executor_is_one_line(tiny_synth_dir, tmp_path):
    result = CliRunner().invoke(app, ["compare", *GRID, "--data-dir", str(tiny_synth_dir),
                                      "--runs-dir", str(tmp_path / "runs"), "--address", "127.0.0.1:6379"])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        "error: --address is for --executor ray; the local executor runs on this machine"]


@pytest.mark.slow
def test_an_unreachable_ray_head_is_one_line_not_minutes_of_retries(tiny_synth_dir, tmp_path):
    pytest.importorskip("ray")
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = CliRunner().invoke(app, ["compare", *GRID, "--data-dir", str(tiny_synth_dir), "--runs-dir",
                                      str(tmp_path / "runs"), "--executor", "ray", "--address", f"127.0.0.1:{port}"])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        f"error: cannot reach a Ray head at 127.0.0.1:{port} (Connection refused); start one with "
        f"`ray start --head --port {port}` or check the address"]


def _descendant_pids_titled(prefix: bytes) -> list[int]:
    """Processes started (indirectly) by this test process whose title starts with `prefix`."""
    me, found = os.getpid(), []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if not (entry / "cmdline").read_bytes().startswith(prefix):
                continue
            pid = int(entry.name)
            while pid > 1 and pid != me:
                pid = int((Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[1])
            if pid == me:
                found.append(int(entry.name))
        except (OSError, ValueError, IndexError):
            continue
    return found


def _kill_first_task(killed: list, stop: threading.Event) -> None:
    """SIGKILL the first Ray worker that starts training a run (its title is ray::ftmed_run)."""
    from ftmed.executors import TASK_NAME

    while not stop.is_set():
        pids = _descendant_pids_titled(f"ray::{TASK_NAME}".encode())
        if pids:
            time.sleep(1.0)  # let it get into the run (importing its framework, loading data)
            os.kill(pids[0], signal.SIGKILL)
            killed.append(pids[0])
            return
        time.sleep(0.1)


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the Ray worker to kill through /proc")
def test_ray_grid_is_bitwise_identical_to_local_and_a_killed_worker_is_redone(cluster, tiny_synth_dir, tmp_path):
    common = ["compare", *GRID, "--data-dir", str(tiny_synth_dir)]
    SHIPPED_TO_RAY.append(file_md5(tiny_synth_dir / "pathmnist.npz"))
    local_runs, ray_runs = tmp_path / "local", tmp_path / "ray"
    result = CliRunner().invoke(app, [*common, "--runs-dir", str(local_runs), "--jobs", "2"])
    assert result.exit_code == 0, result.output

    # 1. On the cluster, with one worker killed mid-run: that run is recorded failed, the rest finish.
    ray_args = [*common, "--runs-dir", str(ray_runs), "--executor", "ray", "--address", cluster.address]
    killed, stop = [], threading.Event()
    killer = threading.Thread(target=_kill_first_task, args=(killed, stop), daemon=True)
    killer.start()
    try:
        result = CliRunner().invoke(app, ray_args)
    finally:
        stop.set()
        killer.join()
    assert killed, "no Ray worker was seen running a task"
    for leftover in Path(tempfile.gettempdir()).glob(f"ftmed-ray-run-{killed[0]}-*"):
        shutil.rmtree(leftover)  # the killed task's temp folder (it had no chance to remove it)
    assert result.exit_code == 1, result.output
    assert "one Ray task per run" in result.output and "Ray cluster: 2 node(s)" in result.output
    records = list_records(ray_runs)
    failed = [r for r in records if not r.finished]
    assert len(records) == 8 and len(failed) == 1
    assert failed[0].error.startswith("Ray WorkerCrashedError: the worker process died mid-run")

    # 2. Rerun: only the failed run trains again.
    result = CliRunner().invoke(app, ray_args)
    assert result.exit_code == 0, result.output
    assert "(7 already finished)" in result.output

    # 3. Same bits as the local executor, from both nodes, written as if trained here.
    local = {r.run_key: r for r in list_records(local_runs)}
    remote = {r.run_key: r for r in list_records(ray_runs)}
    assert local.keys() == remote.keys() and len(local) == 8
    assert all(r.finished for r in remote.values())
    assert len({r.environment["executor"]["node_id"] for r in remote.values()}) == 2
    for key, here in local.items():
        there = remote[key]
        for name in ("test_logits.npy", "test_probabilities.npy", "test_labels.npy"):
            a, b = np.load(local_runs / key / name), np.load(ray_runs / key / name)
            assert a.dtype == b.dtype and a.tobytes() == b.tobytes(), (key, name)
        assert {k: there.history[k] for k in COMPUTED} == {k: here.history[k] for k in COMPUTED}, key
        assert there.test == here.test and there.config == here.config and there.data == here.data
        assert (ray_runs / key / "history.csv").read_text().splitlines()[0] == "epoch,train_loss,train_acc,val_loss,val_acc,epoch_seconds"
        local_files = sorted(p.relative_to(local_runs / key) for p in (local_runs / key).rglob("*") if p.is_file())
        ray_files = sorted(p.relative_to(ray_runs / key) for p in (ray_runs / key).rglob("*") if p.is_file())
        assert ray_files == local_files, key
        for value in there.environment.values():
            assert "ftmed-ray-run-" not in str(value)  # no path into a node's temp folder survives
    assert (ray_runs / "comparison.md").is_file() and len(list((ray_runs / "logs").glob("*.log"))) == 8


@pytest.mark.slow
def test_a_run_asking_for_more_than_any_node_has_is_one_line(cluster, tiny_synth_dir, tmp_path):
    """No node has a GPU: a run asking for one would wait forever, so the study stops before starting."""
    result = CliRunner().invoke(app, ["compare", *GRID, "--data-dir", str(tiny_synth_dir), "--runs-dir",
                                      str(tmp_path / "runs"), "--executor", "ray", "--address", cluster.address,
                                      "--accelerator", "gpu"])
    assert result.exit_code == 2
    assert result.output.strip().splitlines()[-1] == (
        "error: each run asks for 1 GPU(s) but the largest Ray node has 0; use --accelerator cpu, fewer "
        "--devices, or add GPU nodes")
    assert list_records(tmp_path / "runs") == []


@pytest.mark.slow
def test_the_data_file_arrives_md5_checked_through_the_object_store(cluster, tmp_path):
    import ray

    from ftmed.executors import materialize_data
    from ftmed_core.errors import DataError

    payload = np.random.default_rng(0).integers(0, 256, size=3 << 20, dtype=np.uint8).tobytes()
    source = tmp_path / "sample.npz"
    source.write_bytes(payload)
    ray.init(address=cluster.address, log_to_driver=False)
    try:
        chunks = [ray.put(payload[:1 << 20]), ray.put(payload[1 << 20:])]
        good = {"name": source.name, "md5": file_md5(source), "size": len(payload), "chunks": chunks}
        SHIPPED_TO_RAY.append(good["md5"])
        fetch = ray.remote(max_retries=0)(materialize_data)
        folder = Path(ray.get(fetch.remote(good)))
        assert file_md5(folder / source.name) == good["md5"]
        bad = {**good, "md5": "0" * 32}
        with pytest.raises(ray.exceptions.RayTaskError) as caught:
            ray.get(fetch.remote(bad))
        assert isinstance(caught.value.cause, DataError)
        assert "arrived with MD5" in str(caught.value.cause) and not (folder.parent / bad["md5"] / source.name).exists()
    finally:
        ray.shutdown()
