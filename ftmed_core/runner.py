"""The life of one run, the same for both frameworks: claim, data, initial weights, fit, test metrics, record.

An adapter supplies only `fit(...)`; everything that must mean the same in both frameworks (the data
protocol, initial weights, final metrics, what "finished" and "failed" mean, where records go) is here.
"""

from __future__ import annotations

import math
import os
import shutil
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol

import numpy as np

from ftmed_core.config import ExperimentConfig, RuntimeConfig, check_model_fits
from ftmed_core.data import ExperimentData, load_experiment_data
from ftmed_core.errors import RunError
from ftmed_core.locks import holder, run_lock_path, try_claim
from ftmed_core.frameworks import effective_loss
from ftmed_core.medmnist_info import dataset_info
from ftmed_core.metrics import test_metrics
from ftmed_core.tasks import head_for
from ftmed_core.protocol import Weights, initial_weights, parameter_count
from ftmed_core.records import (
    RecordDamaged,
    RunRecord,
    base_environment,
    check_arrays,
    new_record,
    read_record,
    write_record,
)


class NonFiniteLoss(RuntimeError):
    """Training produced a NaN or infinite loss; the run is recorded as failed, with the history so far."""

    def __init__(self, epoch: int, value: float, where: str = "train_loss", history: dict | None = None):
        super().__init__(f"non-finite {where} ({value}) at epoch {epoch}; try a smaller learning rate")
        self.epoch, self.value, self.where, self.history = epoch, value, where, history

    def __reduce__(self):  # picklable across process boundaries despite the custom signature
        return (NonFiniteLoss, (self.epoch, self.value, self.where, self.history))


def check_finite(value: float, epoch: int, where: str = "train_loss", history: dict | None = None) -> None:
    """Raise NonFiniteLoss for NaN/inf; `history` (the epochs so far) then goes into the failed record."""
    if not math.isfinite(value):
        raise NonFiniteLoss(epoch, value, where, history)


@dataclass
class FitResult:
    """What an adapter's `fit` returns."""

    history: dict  # the shared HISTORY_KEYS, one value per epoch
    test_logits: np.ndarray  # pre-activation test outputs, (N, n_classes)
    training_seconds: float  # wall time of the training loop (fit), excluding data loading and testing
    environment: dict = field(default_factory=dict)  # library versions, device, threads


EpochCallback = Callable[[int, int, dict], None]  # (epoch 1-based, total epochs, that epoch's history)


class FitFunction(Protocol):
    def __call__(self, config: ExperimentConfig, runtime: RuntimeConfig, data: ExperimentData,
                 weights: Weights, run_dir: Path, on_epoch: EpochCallback | None = None) -> FitResult: ...


def resolve_threads(runtime: RuntimeConfig) -> int:
    """The intra-op thread count a run uses: the explicit setting, else one per core this process may use."""
    if runtime.threads > 0:
        return runtime.threads
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def data_summary(data: ExperimentData) -> dict:
    return {
        **data.source,
        "dataset": data.dataset,
        "label": data.label,
        "size": data.size,
        "val_mode": data.val_mode,
        "n_train": int(len(data.y_train)),
        "n_val": int(len(data.y_val)),
        "n_test": int(len(data.y_test)),
        "input_dim": data.input_dim,
        "n_classes": data.n_classes,
        "class_names": list(data.class_names),
        "task": dataset_info(data.dataset, trainable=False).task,  # medmnist's; how it trains: ftmed_core.tasks
    }


class RunInProgress(RunError):
    """Another live process has claimed this run (see `ftmed_core.locks`)."""

    def __init__(self, run_dir: Path, who: str | None = None):
        self.run_dir, self.who = Path(run_dir), who
        super().__init__(f"run {Path(run_dir).name} is being trained by another process "
                         f"({who or 'holder unknown'}); wait for it to finish, then rerun to reuse its result")

    def __reduce__(self):
        return (RunInProgress, (self.run_dir, self.who))


def _move_aside(run_dir: Path, mark: str) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target = run_dir.with_name(f"{run_dir.name}.{mark}-{stamp}")
    n = 1
    while target.exists():
        target = run_dir.with_name(f"{run_dir.name}.{mark}-{stamp}-{n}")
        n += 1
    shutil.move(str(run_dir), str(target))
    return target


def retire_finished_run(run_dir: Path) -> Path:
    """Move a finished run aside (never delete it) so that a forced rerun cannot overwrite it."""
    return _move_aside(Path(run_dir), "replaced")


def set_damaged_aside(run_dir: Path) -> Path:
    """Move a run whose record or arrays are damaged to `<run>.damaged-<time>` (kept, never reported)."""
    return _move_aside(Path(run_dir), "damaged")


def inspect_run(run_dir: Path) -> RunRecord | None:
    """The run's record if it is usable (a finished one with its test arrays); RecordDamaged otherwise."""
    record = read_record(run_dir)
    if record is not None:
        check_arrays(run_dir, record)
    return record


@dataclass
class Triage:
    """Where each of a study's runs stands, by run key (see `triage_runs`)."""

    finished: list = field(default_factory=list)
    failed: list = field(default_factory=list)  # a failed record exists
    missing: list = field(default_factory=list)  # no record yet (never started, interrupted, killed, damaged)
    in_flight: list = field(default_factory=list)  # claimed by another live process
    damaged: list = field(default_factory=list)  # one message per run moved aside as damaged


def triage_runs(runs_dir: str | Path, run_keys: list[str]) -> Triage:
    """Sort runs by state, each looked at under its claim; damaged runs are moved aside (and listed as missing).

    A snapshot: a run free now may be claimed a moment later, which `run_experiment` detects
    (RunInProgress) when it claims the run for training.
    """
    runs_dir = Path(runs_dir)
    state = Triage()
    for key in run_keys:
        run_dir = runs_dir / key
        claimed = try_claim(run_lock_path(run_dir), stamp=False)
        if claimed is None:
            state.in_flight.append(key)
            continue
        with claimed:
            try:
                record = inspect_run(run_dir)
            except RecordDamaged as exc:
                aside = set_damaged_aside(run_dir)
                state.damaged.append(f"{exc.path} is damaged ({exc.reason}); moved the run to {aside.name}, "
                                     f"it will be trained again")
                record = None
        if record is None:
            state.missing.append(key)
        else:
            (state.finished if record.finished else state.failed).append(key)
    return state


def _warn(message: str) -> None:
    print(f"ftmed: {message}", file=sys.stderr, flush=True)


def run_experiment(
    framework: str,
    fit: FitFunction,
    config: ExperimentConfig,
    runtime: RuntimeConfig | None = None,
    run_dir: str | Path | None = None,
    runs_dir: str | Path = "runs",
    data: ExperimentData | None = None,
    force: bool = False,
    on_epoch: EpochCallback | None = None,
    rank_zero: bool = True,
) -> RunRecord:
    """Train `config` with `fit` and write its record; reuse a finished identical run unless `force`.

    `rank_zero=False` is for the non-zero ranks of a multi-process run started by an external launcher
    (torchrun, SLURM): they train the same way but neither read, write nor retire records.

    A failure inside training (non-finite loss, out of memory, a crash) is recorded with status "failed"
    and its error, and the record is returned: a study goes on past one bad run. KeyboardInterrupt is not
    caught, so an interrupted run leaves no record; the next call resumes it from the per-epoch state the
    adapter keeps in `run_dir` (its last finished epoch), as it does a killed run.

    Claims and damage (rank zero only): the run is claimed (`ftmed_core.locks`) before its record is read,
    until the new one is written; RunInProgress (a RunError) when another live process holds the claim.
    A run whose record or test arrays are damaged (`inspect_run`) is moved to `<run>.damaged-<time>`, one
    line says so on stderr, and it is trained again. A network too large for this machine's memory is a
    ConfigError before anything is claimed or written.
    """
    runtime = runtime or RuntimeConfig()
    data = data if data is not None else load_experiment_data(config)
    check_model_fits(config, data.input_dim, data.n_classes)  # a network too big for memory: no claim, no folder
    record = new_record(framework, config, runtime, data_summary(data))
    run_dir = Path(run_dir) if run_dir is not None else Path(runs_dir) / record.run_key
    if not rank_zero:
        return _train(fit, config, runtime, data, run_dir, record, on_epoch, rank_zero)
    # The claim is held from before the existing record is read until the new one is written, so one
    # run is trained by one process at a time; the kernel drops it if this process dies.
    claimed = try_claim(run_lock_path(run_dir))
    if claimed is None:
        raise RunInProgress(run_dir, holder(run_lock_path(run_dir)))
    with claimed:
        try:
            existing = inspect_run(run_dir)
        except RecordDamaged as exc:
            aside = set_damaged_aside(run_dir)
            _warn(f"{exc.path} is damaged ({exc.reason}); moved the run to {aside.name} and training it again")
            existing = None
        if existing is not None and existing.finished:
            if not force:
                return existing
            retire_finished_run(run_dir)
        return _train(fit, config, runtime, data, run_dir, record, on_epoch, rank_zero)


def show_progress(runtime: RuntimeConfig) -> bool:
    """Whether an adapter shows a progress bar: `runtime.progress`, or when None, whether stderr is a terminal."""
    return sys.stderr.isatty() if runtime.progress is None else bool(runtime.progress)


def make_train(framework: str, fit: FitFunction, rank_zero: Callable[[], bool] = lambda: True):
    """An adapter's public `train`: `run_experiment(framework, fit, ...)` with the adapter's `fit`.

    `rank_zero` is asked at each call whether this process reads, claims and writes records (an adapter
    that runs under external launchers answers from the launcher's rank variables).
    """
    def train(config: ExperimentConfig, run_dir: str | Path | None = None, runtime: RuntimeConfig | None = None,
              runs_dir: str | Path = "runs", data: ExperimentData | None = None, force: bool = False,
              on_epoch: EpochCallback | None = None) -> RunRecord:
        """Train `config` and write its run record under `run_dir` (default `runs_dir/<run key>`), reusing a
        finished identical run unless `force`; see `ftmed_core.runner.run_experiment`."""
        return run_experiment(framework, fit, config, runtime=runtime, run_dir=run_dir, runs_dir=runs_dir,
                              data=data, force=force, on_epoch=on_epoch, rank_zero=rank_zero())

    return train


def _train(fit: FitFunction, config: ExperimentConfig, runtime: RuntimeConfig, data: ExperimentData,
           run_dir: Path, record: RunRecord, on_epoch: EpochCallback | None, rank_zero: bool) -> RunRecord:
    run_dir.mkdir(parents=True, exist_ok=True)
    record.environment = base_environment()
    record.parameter_count = parameter_count(config, data.input_dim, data.n_classes)
    weights = initial_weights(config, data.input_dim, data.n_classes)
    try:
        result = fit(config, runtime, data, weights, run_dir, on_epoch=on_epoch)
        logits = np.asarray(result.test_logits, dtype=np.float32)
        if not np.all(np.isfinite(logits)):
            raise NonFiniteLoss(config.epochs, float("nan"), "test output")
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as exc:  # recorded, not hidden: the record carries the error and its traceback tail
        record.status = "failed"
        record.error = f"{type(exc).__name__}: {exc}"
        if isinstance(exc, NonFiniteLoss) and exc.history:
            record.history = {k: [float(v) for v in vals] for k, vals in exc.history.items()}
        record.environment["traceback"] = traceback.format_exc(limit=8)[-4000:]
        record.finished_at = time.time()
        if rank_zero:
            write_record(run_dir, record)
        return record

    task = dataset_info(config.dataset).task
    # The test loss in the formula the framework trained on (keras[jax]/keras[torch]: see ftmed_core.frameworks).
    loss = effective_loss(record.framework, config.loss)
    metrics, probabilities = test_metrics(logits, data.y_test, config.output_activation, loss, task)
    record.environment.update(result.environment)
    record.environment["loss_formula"] = loss
    record.environment["head_activation"] = head_for(config.dataset, config.output_activation)[1]
    record.history = {k: [float(v) for v in vals] for k, vals in result.history.items()}
    record.test = metrics
    record.training_seconds = float(result.training_seconds)
    record.status = "finished"
    record.finished_at = time.time()
    if rank_zero:
        write_record(run_dir, record, probabilities=probabilities, logits=logits, labels=data.y_test)
    return record
