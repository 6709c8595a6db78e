"""Faults a study must survive: kill -9 of a worker and of the whole study, two studies on one runs folder,
a full disk, damaged records and arrays, runs on different data files, bad margins and seeds. Each case:
nothing finished is lost, no traceback, one line naming what happened and what to do."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from cli.main import app
from ftmed_core import locks
from ftmed_core.config import ExperimentConfig
from ftmed_core.errors import ConfigError
from ftmed_core.records import RecordDamaged, list_records, read_record, scan_records
from ftmed_core.runner import FitResult, RunInProgress, run_experiment
from ftmed_core.synth import write_synthetic
from ftmed_core.variants import VARIANTS

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "CUDA_VISIBLE_DEVICES": "", "TF_CPP_MIN_LOG_LEVEL": "3"}


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def assert_one_line_error(result, *fragments, code=2):
    assert result.exit_code == code, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def ftmed(*args, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "cli.main", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=ENV, cwd=ROOT, **kwargs)


def _fake_fit(target: float = 0.6):
    """A deterministic stand-in for a framework (report and record tests only): hits `target` accuracy."""

    def fit(config, runtime, data, weights, run_dir, on_epoch=None):
        rng = np.random.default_rng(config.seed)
        n = len(data.y_test)
        predicted = np.where(rng.random(n) < target, data.y_test, (data.y_test + 1) % data.n_classes)
        logits = rng.normal(0, 0.1, (n, data.n_classes)).astype(np.float32)
        logits[np.arange(n), predicted] += 3.0
        hist = {"train_loss": [1.0], "train_acc": [0.5], "val_loss": [1.1], "val_acc": [0.45],
                "epoch_seconds": [0.2]}
        return FitResult(hist, logits, 0.4, {})

    return fit


def _populate(runs: Path, data_dir: Path, seeds=(0, 1), variants=("baseline",)) -> list:
    out = []
    for name in variants:
        for seed in seeds:
            config = replace(VARIANTS[name].config, epochs=1, seed=seed, data_dir=str(data_dir))
            for framework in ("lightning", "keras"):
                out.append(run_experiment(framework, _fake_fit(), config, runs_dir=runs))
    return out


# ------------------------------------------------------------------------------------------------ claims


def test_a_claim_excludes_others_and_dies_with_its_process(tmp_path):
    path = tmp_path / ".locks" / "run.lock"
    held = locks.try_claim(path)
    assert held is not None and locks.try_claim(path) is None and locks.is_claimed(path)
    assert f"pid {os.getpid()}" in locks.holder(path)
    held.release()
    assert not locks.is_claimed(path)
    # A process that holds the claim and is killed with SIGKILL leaves nothing stuck.
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from ftmed_core import locks; "
                               "c = locks.try_claim(sys.argv[1]); print('held', flush=True); time.sleep(60)",
                               str(path)], stdout=subprocess.PIPE, text=True, env=ENV)
    assert holder.stdout.readline().strip() == "held"
    assert locks.is_claimed(path)
    with pytest.raises(TimeoutError, match="still claimed by pid"):
        locks.claim(path, timeout=0.3)
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    with locks.claim(path, timeout=5):
        pass


def test_a_run_claimed_elsewhere_is_not_trained_twice(tmp_path, tiny_synth_dir):
    config = replace(VARIANTS["baseline"].config, epochs=1, data_dir=str(tiny_synth_dir))
    first = run_experiment("keras", _fake_fit(), config, runs_dir=tmp_path)
    run_dir = tmp_path / first.run_key
    with locks.try_claim(locks.run_lock_path(run_dir)):
        with pytest.raises(RunInProgress, match="being trained by another process"):
            run_experiment("keras", _fake_fit(), config, runs_dir=tmp_path, force=True)
    assert read_record(run_dir).finished_at == first.finished_at  # untouched
    assert not list(tmp_path.glob("*.replaced-*"))


def test_train_of_a_run_in_flight_is_one_line(tmp_path, tiny_synth_dir):
    from ftmed_core.data import load_experiment_data
    from ftmed_core.runner import data_summary

    config = ExperimentConfig(data_dir=str(tiny_synth_dir), epochs=1)
    runs = tmp_path / "runs"
    from ftmed_core.records import run_key

    key = run_key("lightning", config, data_summary(load_experiment_data(config))["md5"])
    with locks.try_claim(locks.run_lock_path(runs / key)):
        result = invoke("train", "-f", "lightning", "--epochs", "1", "--data-dir", tiny_synth_dir,
                        "--runs-dir", runs, "--threads", "1")
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert result.exit_code == 2 and len(lines) == 1 and "being trained by another process" in lines[0]
    assert not (runs / key).exists()


def test_reports_are_written_by_one_process_at_a_time(tmp_path, tiny_synth_dir):
    import threading

    from ftmed.reporting.render import render

    runs = tmp_path / "runs"
    _populate(runs, tiny_synth_dir)
    outputs = {}
    with locks.try_claim(locks.report_lock_path(runs)):  # another process is writing the report
        writer = threading.Thread(target=lambda: outputs.update(render(runs)))
        writer.start()
        writer.join(timeout=1.0)
        assert writer.is_alive() and not (runs / "comparison.md").exists()
    writer.join(timeout=60)
    assert not writer.is_alive() and outputs["markdown"].is_file()
    assert not locks.is_claimed(locks.report_lock_path(runs))


# ------------------------------------------------------------------------------------------------ kills


def _wait_for(predicate, timeout=240.0, what="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _worker_pid(runs: Path, run_key: str) -> int:
    text = locks.holder(runs / locks.LOCK_DIR / f"{run_key}.lock") or ""
    return int(text.split()[1])


@pytest.mark.slow
def test_kill_9_of_a_worker_then_rerun_resumes_the_run(synth_dir, tmp_path):
    runs = tmp_path / "runs"
    args = ["compare", "--variants", "baseline", "--frameworks", "lightning", "--seeds", "0", "--epochs", "40",
            "--data-dir", synth_dir, "--runs-dir", runs, "--threads", "1"]
    study = ftmed(*args)
    _wait_for(lambda: any(runs.glob("*/checkpoints/last.ckpt")), what="the first checkpoint")
    run_key = next(runs.glob("*/checkpoints/last.ckpt")).parent.parent.name
    os.kill(_worker_pid(runs, run_key), signal.SIGKILL)
    out, err = study.communicate(timeout=240)
    assert study.returncode == 1 and "Traceback" not in err
    failed = read_record(runs / run_key)
    assert failed.status == "failed" and "worker process died (exit code -9)" in failed.error

    again = ftmed(*args)
    out, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    record = read_record(runs / run_key)
    assert record.finished and len(record.history["train_loss"]) == 40
    assert 1 <= record.environment["resumed_after_epoch"] < 40  # went on from the killed run's last epoch


@pytest.mark.slow
def test_kill_9_of_the_whole_study_loses_nothing_finished(tiny_synth_dir, tmp_path):
    runs = tmp_path / "runs"
    args = ["compare", "--variants", "baseline", "--frameworks", "lightning", "--seeds", "0,1,2", "--epochs", "2",
            "--data-dir", tiny_synth_dir, "--runs-dir", runs, "--threads", "1"]
    study = ftmed(*args)
    _wait_for(lambda: runs.is_dir() and any(r.finished for r in list_records(runs)), what="a finished run")
    study.send_signal(signal.SIGKILL)  # no handler runs: its worker is orphaned and trains on
    study.communicate(timeout=60)
    before = {r.run_key: r for r in list_records(runs) if r.finished}

    again = ftmed(*args)
    out, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    assert "Traceback" not in err and "3 runs planned" in out
    after = {r.run_key: r for r in list_records(runs)}
    assert len(after) == 3 and all(r.finished for r in after.values())
    for key, record in before.items():  # finished runs were reused, not retrained
        assert after[key].finished_at == record.finished_at
    assert not list(runs.glob("*.replaced-*")) and not list(runs.glob("*.damaged-*"))


@pytest.mark.slow
def test_two_studies_on_one_runs_folder_train_each_run_once(tiny_synth_dir, tmp_path):
    """The issue's case: the same `compare` started twice, 2 s apart, on one runs folder."""
    runs = tmp_path / "runs"
    args = ["compare", "--variants", "baseline", "--frameworks", "lightning", "--seeds", "0,1", "--epochs", "3",
            "--data-dir", tiny_synth_dir, "--runs-dir", runs, "--threads", "1"]
    first = ftmed(*args)
    time.sleep(2)
    second = ftmed(*args)
    results = [p.communicate(timeout=400) for p in (first, second)]
    for proc, (out, err) in zip((first, second), results):
        assert proc.returncode == 0, err
        assert "Traceback" not in err and "fieldnames" not in err
    trained = sum(err.count("done   baseline") for _, err in results)
    assert trained == 2, results  # each run trained by exactly one of the two processes
    records = list_records(runs)
    assert len(records) == 2 and all(r.finished for r in records)
    assert not list(runs.glob("*.replaced-*"))
    md = (runs / "comparison.md").read_text()
    assert "| baseline |" in md and "(n=2)" in md  # the last report written saw both runs


# ------------------------------------------------------------------------------------------------ full disk


def test_full_disk_while_writing_a_record_then_rerun_resumes(tmp_path, tiny_synth_dir, monkeypatch):
    """ENOSPC while the finished run writes its arrays and record: one line, exit 1, the other run's record
    untouched; with space again, the rerun goes on from the saved last epoch instead of retraining."""
    import ftmed_core.records as records_mod

    runs = tmp_path / "runs"
    common = ["train", "-f", "lightning", "--epochs", "2", "--data-dir", tiny_synth_dir, "--runs-dir", runs,
              "--threads", "1"]
    assert invoke(*common, "--seed", "0").exit_code == 0
    before = {p: p.read_bytes() for p in runs.rglob("*") if p.is_file() and ".locks" not in p.parts}
    real = records_mod.atomic_write_bytes
    final_files = {"record.json", "history.csv", "test_probabilities.npy", "test_logits.npy", "test_labels.npy"}

    def full(path, payload):
        if Path(path).name in final_files:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, payload)

    monkeypatch.setattr(records_mod, "atomic_write_bytes", full)
    result = invoke(*common, "--seed", "1")
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert result.exit_code == 1 and len(lines) == 1 and "disk full while writing" in lines[0], result.output
    assert "Traceback" not in result.output
    assert all(p.read_bytes() == data for p, data in before.items())  # seed 0's run is intact

    monkeypatch.setattr(records_mod, "atomic_write_bytes", real)
    result = invoke(*common, "--seed", "1")
    assert result.exit_code == 0, result.output
    seed1 = [r for r in list_records(runs) if r.config["seed"] == 1]
    assert len(seed1) == 1 and seed1[0].finished and seed1[0].environment["resumed_after_epoch"] == 2


# ------------------------------------------------------------------------------------------------ damage


def _damage(run_dir: Path, how: str) -> Path:
    record_path = run_dir / "record.json"
    payload = json.loads(record_path.read_text())
    if how == "list":
        record_path.write_text("[]")
    elif how == "no accuracy":
        del payload["test"]["accuracy"]
        record_path.write_text(json.dumps(payload))
    elif how == "no hidden_units":
        del payload["config"]["hidden_units"]
        record_path.write_text(json.dumps(payload))
    elif how == "truncated":
        record_path.write_bytes(record_path.read_bytes()[:200])
    elif how == "random probabilities":
        (run_dir / "test_probabilities.npy").write_bytes(np.random.default_rng(0).bytes(500))
        return run_dir / "test_probabilities.npy"
    return record_path


DAMAGES = ["list", "no accuracy", "no hidden_units", "truncated", "random probabilities"]


@pytest.mark.parametrize("how", DAMAGES)
def test_damaged_run_is_named_in_one_line(tmp_path, tiny_synth_dir, how):
    runs = tmp_path / "runs"
    records = _populate(runs, tiny_synth_dir)
    bad = _damage(runs / records[0].run_key, how)
    with pytest.raises(RecordDamaged) as caught:
        scan = scan_records(runs)
        raise scan[1][0]
    assert caught.value.path == bad and "moves its folder aside" in str(caught.value)
    assert len(scan[0]) == len(records) - 1


def test_report_leaves_damaged_runs_out_and_goes_on(tmp_path, tiny_synth_dir):
    runs = tmp_path / "runs"
    records = _populate(runs, tiny_synth_dir, seeds=(0, 1, 2), variants=("baseline", "sgd-momentum"))
    bad = [_damage(runs / record.run_key, how) for record, how in zip(records, DAMAGES)]
    result = CliRunner().invoke(app, ["report", str(runs)])
    assert result.exit_code == 1 and "Traceback" not in result.output
    left_out = [line for line in result.output.splitlines() if line.startswith("left out: ")]
    assert len(left_out) == len(bad) and all(any(str(p) in line for line in left_out) for p in bad)
    payload = json.loads((runs / "comparison.json").read_text())
    assert len(payload["runs"]) == len(records) - len(bad)


@pytest.mark.slow
def test_compare_moves_damaged_runs_aside_and_redoes_them(tiny_synth_dir, tmp_path):
    runs = tmp_path / "runs"
    args = ["compare", "--variants", "baseline", "--frameworks", "lightning", "--seeds", "0,1,2", "--epochs", "1",
            "--data-dir", tiny_synth_dir, "--runs-dir", runs, "--threads", "1"]
    assert invoke(*args).exit_code == 0
    records = sorted(list_records(runs), key=lambda r: r.config["seed"])
    _damage(runs / records[0].run_key, "truncated")
    _damage(runs / records[1].run_key, "random probabilities")
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    assert result.output.count("is damaged") == 2 and "(1 already finished)" in result.output
    after = {r.run_key: r for r in list_records(runs)}
    assert len(after) == 3 and all(r.finished for r in after.values())
    assert after[records[2].run_key].finished_at == records[2].finished_at
    for record in records[:2]:
        kept = list(runs.glob(f"{record.run_key}.damaged-*"))
        assert len(kept) == 1 and (kept[0] / "record.json").exists()  # the damaged copy is kept
        assert after[record.run_key].finished_at > record.finished_at


def test_an_unreadable_lightning_checkpoint_is_moved_aside_and_the_run_starts_over(tiny_synth_dir, tmp_path):
    import lightning_ft
    from ftmed_core.config import RuntimeConfig

    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "checkpoints" / "last.ckpt").write_bytes(b"PK\x03\x04 not a checkpoint")
    config = ExperimentConfig(data_dir=str(tiny_synth_dir), epochs=1)
    record = lightning_ft.train(config, run_dir=run_dir, runtime=RuntimeConfig(accelerator="cpu", threads=1,
                                                                               progress=False))
    assert record.finished and record.environment["resumed_after_epoch"] == 0
    assert list(tmp_path.glob("run/checkpoints.unusable-*/last.ckpt"))


def test_load_checkpoint_refuses_pickled_code(tmp_path, monkeypatch):
    """`weights_only=True` is passed explicitly: with torch's old default (False before torch 2.6, which
    the environment variable below restores for calls that leave it unset) the object would be unpickled."""
    import pickle

    import torch

    from lightning_ft.training import load_checkpoint

    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {}, "payload": ConfigError("arbitrary object")}, path)
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        load_checkpoint(path)


# ------------------------------------------------------------------------------------------------ data


def test_report_never_pools_runs_on_different_data_files(tmp_path):
    runs = tmp_path / "runs"
    files = []
    for seed in (1, 2):  # the same dataset regenerated with another seed: same name, other MD5
        folder = tmp_path / f"data{seed}"
        write_synthetic(folder, "pathmnist", 28, scale=0.01, seed=seed)
        _populate(runs, folder, seeds=(0,))
        files.append(folder)
    result = CliRunner().invoke(app, ["report", str(runs)])
    assert result.exit_code == 0, result.output
    assert "2 different data files" in result.output
    md = (runs / "comparison.md").read_text()
    titles = [line for line in md.splitlines() if line.startswith("# ")]
    assert len(titles) == 2
    for folder in files:  # one table per file, whatever their order
        assert sum(f"data file {folder / 'pathmnist.npz'} (MD5 " in title for title in titles) == 1
    assert len({t.split("MD5 ")[1] for t in titles}) == 2
    assert "n=2" not in md  # seed 0 is never counted twice
    import csv

    rows = list(csv.DictReader(open(runs / "comparison.csv")))
    assert len(rows) == 2 and len({r["data_md5"] for r in rows}) == 2
    groups = json.loads((runs / "comparison.json").read_text())["data_groups"]
    assert [len(g["runs"]) for g in groups] == [2, 2]


# ------------------------------------------------------------------------------------------------ input


@pytest.mark.parametrize("margin", ["inf", "-1", "nan", "0"])
def test_margin_must_be_finite_and_positive(tmp_path, tiny_synth_dir, margin):
    from ftmed.reporting.rows import build_rows

    runs = tmp_path / "runs"
    records = _populate(runs, tiny_synth_dir, seeds=(0, 1))
    assert_one_line_error(invoke("report", runs, "--margin", margin), "--margin", "finite number > 0")
    with pytest.raises(ConfigError, match="finite number > 0"):
        build_rows(records, float(margin))


@pytest.mark.parametrize("seed", ["4294967296", "-1"])
def test_seed_out_of_numpy_range_is_refused_before_anything_runs(tmp_path, tiny_synth_dir, seed):
    runs = tmp_path / "runs"
    result = invoke("train", "-f", "keras", "--seed", seed, "--data-dir", tiny_synth_dir, "--runs-dir", runs)
    assert_one_line_error(result, "seed must be an integer from 0 to 4294967295")
    result = invoke("compare", "--seeds", f"0,{seed}", "--data-dir", tiny_synth_dir, "--runs-dir", runs)
    assert_one_line_error(result, "seeds must be integers from 0 to 4294967295")
    assert not runs.exists()
    with pytest.raises(ConfigError):
        ExperimentConfig(seed=int(seed))
    ExperimentConfig(seed=2**32 - 1)  # the largest both frameworks accept
