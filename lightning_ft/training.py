"""One run through Lightning: `fit` (the adapter function the core's runner calls) and `train`.

`train(config, run_dir)` = `ftmed_core.runner.run_experiment("lightning", fit, ...)`: the core loads the
data, draws the initial weights, calls `fit`, computes test metrics and writes the record.

Trainer settings come from `RuntimeConfig` only. Notes on the choices:
- threads: `torch.set_num_threads(resolve_threads(runtime))` in every process (spawned DDP workers too).
- determinism: `seed_everything(config.seed)` + `Trainer(deterministic=...)`; on CUDA also
  CUBLAS_WORKSPACE_CONFIG=:4096:8 and TF32 off, so GPU matmuls are full float32 like the Keras reference.
- DDP: `strategy="ddp"` is run as `ddp_spawn` unless the processes were started by an external launcher
  (torchrun/SLURM set LOCAL_RANK; then every rank calls `train` and only global rank 0 writes the record).
  Lightning's plain "ddp" re-executes `sys.argv` for the other ranks,
  which from pytest or a notebook re-runs the whole test session; spawn works from anywhere. Under spawn,
  the workers get pickled copies: the caller's `on_epoch` callback is replayed in the calling process
  after training (it cannot run live), the history comes back through `lightning_history.json` written by
  rank 0, and Lightning loads rank 0's final weights back into the caller's model for the test logits.
- quiet: no model summary, no sanity validation, Lightning's info banners muted; a progress bar only when
  `runtime.progress` (None: when stderr is a terminal).
- outputs in the run directory: `csv/` (CSVLogger), `checkpoints/last.ckpt` and `checkpoints/best-*.ckpt`
  (best val_acc), `lightning_history.json`.
- resume: last.ckpt is saved at the end of every training epoch and holds the full training state plus the
  history; a rerun in the same run directory resumes from it (`resumable_checkpoint`), bitwise identical
  to an uninterrupted run on CPU (tests/test_resume.py). `csv/metrics.csv` then covers the epochs since the
  resume, `csv/metrics-before-epoch-N.csv` the ones before (the record's history covers all). Checkpoints
  are read with `weights_only=True`.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import logging
import os
import shutil
import sys
import time
import warnings
from pathlib import Path

import lightning
import lightning.pytorch as L
import numpy as np
import torch
import torchmetrics
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from ftmed_core.config import ExperimentConfig, RuntimeConfig
from ftmed_core.data import ExperimentData
from ftmed_core.errors import ConfigError
from ftmed_core.protocol import Weights
from ftmed_core.records import HISTORY_KEYS
from ftmed_core.runner import EpochCallback, FitResult, make_train, resolve_threads, show_progress
from lightning_ft.datamodule import MedMNISTDataModule
from lightning_ft.fast import FastDataModule, FastMLPSystem, describe, plan_fast_path
from lightning_ft.model import predict_logits
from lightning_ft.system import MLPSystem

HISTORY_FILE = "lightning_history.json"
_QUIET_LOGGERS = ("lightning.pytorch", "lightning.fabric", "lightning")
_QUIET_WARNINGS = (
    r".*does not have many workers.*",
    r".*Checkpoint directory .* exists and is not empty.*",
    r".*Experiment logs directory .* exists and is not empty.*",  # a resumed run; its old metrics.csv is kept
    r".*`isinstance\(treespec, LeafSpec\)` is deprecated.*",
    r".*GPU available but not used.*",
    r".*The number of training batches .* is smaller than the logging interval.*",
    r".*found an empty training set.*",
    r".*It is recommended to use `self.log\(.*sync_dist=True.*",  # our epoch metrics are reduced already
)


class _WorkerSetup(Callback):
    """Per-process settings that must also hold in spawned DDP workers (which start from scratch)."""

    def __init__(self, threads: int):
        self.threads = threads

    def setup(self, trainer, pl_module, stage: str) -> None:
        torch.set_num_threads(self.threads)

    def __setstate__(self, state: dict) -> None:
        # Unpickling is the first thing that happens in a ddp_spawn worker, before Lightning's
        # "Initializing distributed" banners: the earliest point to quiet them there.
        self.__dict__.update(state)
        torch.set_num_threads(self.threads)
        _quiet_loggers()
        for pattern in _QUIET_WARNINGS:
            warnings.filterwarnings("ignore", message=pattern)


def _quiet_loggers() -> None:
    for name in _QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


@contextlib.contextmanager
def _quiet():
    levels = {name: logging.getLogger(name).level for name in _QUIET_LOGGERS}
    _quiet_loggers()
    with warnings.catch_warnings():
        for pattern in _QUIET_WARNINGS:
            warnings.filterwarnings("ignore", message=pattern)
        try:
            yield
        finally:
            for name, level in levels.items():
                logging.getLogger(name).setLevel(level)


def _externally_launched() -> bool:
    return "LOCAL_RANK" in os.environ or "TORCHELASTIC_RUN_ID" in os.environ


def resolve_strategy(runtime: RuntimeConfig) -> str:
    """The Lightning strategy name for `runtime.strategy` (see the module docstring for "ddp")."""
    if runtime.strategy == "ddp" and not _externally_launched():
        return "ddp_spawn"
    return runtime.strategy


def check_runtime(runtime: RuntimeConfig) -> None:
    """ConfigError, before a run is claimed, for a request Lightning would refuse or quietly change mid-run:
    an accelerator this machine lacks, several CPU devices without a DDP strategy (Lightning's default would
    re-execute the command once per device), 16-bit mixed precision on CPU (Lightning would train in bf16 and
    record two different precisions), an unknown strategy name."""
    from lightning.pytorch.strategies import StrategyRegistry

    if runtime.accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ConfigError(f"accelerator {runtime.accelerator!r}: torch sees no CUDA GPU on this machine; "
                          "use --accelerator cpu (or auto)")
    mps = getattr(torch.backends, "mps", None)
    if runtime.accelerator == "mps" and not (mps is not None and mps.is_available()):
        raise ConfigError("accelerator 'mps': torch sees no Apple MPS device on this machine; use --accelerator cpu "
                          "(or auto)")
    known = ("auto", *StrategyRegistry.available_strategies())
    if runtime.strategy not in known:
        raise ConfigError(f"unknown Lightning strategy {runtime.strategy!r}; choose auto, ddp, ddp_spawn, or one of "
                          f"Lightning's registered strategies")
    on_cpu = runtime.accelerator == "cpu" or (runtime.accelerator == "auto" and not _uses_cuda(runtime)
                                              and not (mps is not None and mps.is_available()))
    if on_cpu and runtime.devices > 1 and not runtime.strategy.startswith("ddp"):
        raise ConfigError(f"devices={runtime.devices} on CPU needs --strategy ddp (one process per device); "
                          "for speed on one machine use --devices 1 and --threads, or compare --jobs")
    if on_cpu and runtime.precision == "16-mixed":
        raise ConfigError("precision 16-mixed needs a CUDA GPU; on CPU use --precision 32 (parity) or bf16-mixed")


def _uses_cuda(runtime: RuntimeConfig) -> bool:
    return runtime.accelerator in ("gpu", "cuda") or (runtime.accelerator == "auto" and torch.cuda.is_available())


def _cuda_determinism() -> None:
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False


def _device_string(trainer: L.Trainer) -> str:
    device = trainer.strategy.root_device
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return str(device)


class _HistoryInCheckpoint(Callback):
    """Carries the system's per-epoch history in every checkpoint and puts it back on resume."""

    KEY = "ftmed_history"

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        checkpoint[self.KEY] = [dict(row) for row in pl_module.history]

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        pl_module.history = [dict(row) for row in checkpoint.get(self.KEY, [])]


LAST_CHECKPOINT = Path("checkpoints") / "last.ckpt"


def resumable_checkpoint(run_dir: Path, config: ExperimentConfig, input_dim: int,
                         n_classes: int) -> tuple[Path, int] | None:
    """(`run_dir`'s last.ckpt, epochs it holds) if a rerun can resume from it, else None (one line on
    stderr says why not).

    Usable means: it loads with `weights_only=True`, it is a full training checkpoint (optimizer and loop
    state, history), and it was written for this config (same hash) and data shape. An unusable one is
    moved aside as `checkpoints.unusable-<time>`, never deleted, and the run starts from epoch 1.
    """
    path = Path(run_dir) / LAST_CHECKPOINT
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        hp = state["hyper_parameters"]
        problem = None
        if not all(k in state for k in ("state_dict", "optimizer_states", "loops", "epoch",
                                        _HistoryInCheckpoint.KEY)):
            problem = "it is not a full training checkpoint"
        elif ExperimentConfig.from_dict(hp["config"]).config_hash() != config.config_hash():
            problem = "it was written for another configuration"
        elif (hp["input_dim"], hp["n_classes"]) != (input_dim, n_classes):
            problem = "it was written for other data"
        elif len(state[_HistoryInCheckpoint.KEY]) != state["epoch"] + 1:
            problem = "its history does not match its epoch"
    except Exception as exc:  # any unreadable or foreign file: start over rather than fail the run
        problem = f"it cannot be read ({type(exc).__name__}: {str(exc)[:80]})"
    if problem is None:
        return path, int(state["epoch"]) + 1
    if _is_rank_zero():
        aside = path.parent.with_name(f"checkpoints.unusable-{time.strftime('%Y%m%d-%H%M%S')}")
        shutil.move(str(path.parent), str(aside))
        print(f"lightning_ft: not resuming from {path}: {problem}; moved to {aside.name}, training from epoch 1",
              file=sys.stderr, flush=True)
    return None


def fit(config: ExperimentConfig, runtime: RuntimeConfig, data: ExperimentData, weights: Weights,
        run_dir: Path, on_epoch: EpochCallback | None = None) -> FitResult:
    """Train `config` from `weights` with Lightning; the core's `FitFunction`."""
    run_dir = Path(run_dir)
    threads = resolve_threads(runtime)
    torch.set_num_threads(threads)
    if _uses_cuda(runtime):
        _cuda_determinism()
    strategy = resolve_strategy(runtime)
    spawned = strategy.endswith("_spawn")
    progress = show_progress(runtime)
    history_path = run_dir / HISTORY_FILE
    resume_from = resumable_checkpoint(run_dir, config, data.input_dim, data.n_classes)
    metrics_csv = run_dir / "csv" / "metrics.csv"
    if _is_rank_zero() and resume_from is not None and metrics_csv.is_file():
        # CSVLogger starts metrics.csv afresh; keep the epochs logged before the kill beside it.
        metrics_csv.replace(metrics_csv.with_name(f"metrics-before-epoch-{resume_from[1] + 1}.csv"))
    if _is_rank_zero() and resume_from is None:
        # Leftovers of an earlier failed or interrupted attempt in this run directory must not be read
        # back (history) or mistaken for this run's checkpoints and logs.
        history_path.unlink(missing_ok=True)
        for leftover in ("checkpoints", "csv"):
            shutil.rmtree(run_dir / leftover, ignore_errors=True)

    with _quiet():
        L.seed_everything(config.seed, verbose=False)
        # The block path (lightning_ft/fast.py) where it applies; the plain path otherwise.
        fast = plan_fast_path(runtime, _uses_cuda(runtime), runtime.devices * runtime.num_nodes)
        system_class = FastMLPSystem if fast.enabled else MLPSystem
        system = system_class(config.to_dict(), data.input_dim, data.n_classes, weights=weights)
        if fast.enabled:
            system.plan = fast
        system.history_file = str(history_path)
        if on_epoch is not None and not spawned:
            system.epoch_end = lambda epoch, row: on_epoch(epoch, config.epochs, dict(row))
        # Saved at the end of each training epoch, after the system has appended that epoch's history
        # row (checkpoint callbacks run after the LightningModule's on_train_epoch_end): last.ckpt is the
        # complete state of the last finished epoch, which a rerun resumes from.
        checkpoint = ModelCheckpoint(dirpath=run_dir / "checkpoints", filename="best-{epoch:03d}",
                                     monitor="val_acc", mode="max", save_top_k=1, save_last=True,
                                     save_on_train_epoch_end=True)
        loggers = [CSVLogger(run_dir, name="csv", version="")]
        if runtime.tensorboard:
            loggers.append(TensorBoardLogger(run_dir, name="tensorboard", version=""))
        if runtime.mlflow:
            from lightning.pytorch.loggers import MLFlowLogger

            from ftmed_core import tracking

            mlflow_logger = MLFlowLogger(experiment_name=tracking.EXPERIMENT, tracking_uri=runtime.mlflow,
                                         run_name=tracking.run_name("lightning", config),
                                         tags=tracking.tags("lightning", config),
                                         artifact_location=tracking.artifact_location(runtime.mlflow))
            mlflow_logger.log_hyperparams(tracking.params("lightning", config, runtime))
            loggers.append(mlflow_logger)
        trainer = L.Trainer(
            accelerator=runtime.accelerator, devices=runtime.devices, num_nodes=runtime.num_nodes,
            strategy=strategy, precision=runtime.precision, max_epochs=config.epochs,
            deterministic=runtime.deterministic, logger=loggers,
            callbacks=[checkpoint, _WorkerSetup(threads), _HistoryInCheckpoint()], enable_progress_bar=progress,
            enable_model_summary=False, num_sanity_val_steps=0, use_distributed_sampler=False,
            log_every_n_steps=50, default_root_dir=run_dir,
        )
        started = time.perf_counter()
        # Resuming restores weights, optimizer state (step counters included), the epoch counter (the
        # core's batch order is a function of seed and epoch, so the next epoch's order follows), the
        # checkpoint callback's best score, and the history so far (_HistoryInCheckpoint).
        # weights_only=True where Lightning takes it (>= 2.6); older ones load with torch's default, after
        # resumable_checkpoint has already loaded the file with weights_only=True.
        safe = {"weights_only": True} if "weights_only" in inspect.signature(trainer.fit).parameters else {}
        datamodule = FastDataModule(data, config, fast.steps) if fast.enabled else MedMNISTDataModule(data, config)
        trainer.fit(system, datamodule=datamodule,
                    ckpt_path=str(resume_from[0]) if resume_from else None, **safe)
        training_seconds = time.perf_counter() - started

    rows = system.history if not spawned else json.loads(history_path.read_text())
    if spawned and on_epoch is not None:
        for epoch, row in enumerate(rows, start=1):
            on_epoch(epoch, config.epochs, dict(row))
    history = {key: [row[key] for row in rows] for key in HISTORY_KEYS}
    return FitResult(
        history=history,
        test_logits=predict_logits(system.model, data.test),  # streamed in batches
        training_seconds=training_seconds,
        environment={
            "torch": torch.__version__,
            "lightning": lightning.__version__,
            "torchmetrics": torchmetrics.__version__,
            "device": _device_string(trainer),
            "threads": threads,
            "precision": str(trainer.precision),  # what ran: Lightning maps 16-mixed on CPU to bf16-mixed
            "strategy": strategy,
            "training_path": describe(fast, getattr(system, "runner", None)),
            "world_size": trainer.world_size,
            "checkpoint_last": str(checkpoint.last_model_path or ""),
            "checkpoint_best": str(checkpoint.best_model_path or ""),
            "resumed_after_epoch": resume_from[1] if resume_from else 0,
            **({"mlflow_run_id": mlflow_logger.run_id} if runtime.mlflow else {}),
        },
    )


def _is_rank_zero() -> bool:
    rank = os.environ.get("RANK", os.environ.get("SLURM_PROCID", "0"))
    return int(rank or 0) == 0 and int(os.environ.get("NODE_RANK", "0") or 0) == 0


# Under an external launcher (torchrun, SLURM; one process per rank) every process calls `train`; only
# global rank 0 (node 0) writes the record, the others train and get an unwritten record back.
train = make_train("lightning", fit, rank_zero=_is_rank_zero)


def load_checkpoint(path: str | Path, map_location: str = "cpu") -> torch.nn.Sequential:
    """The model stored in a Lightning checkpoint written by `fit` (e.g. `checkpoints/last.ckpt`)."""
    # weights_only=True: unpickle tensors and plain containers only, whatever torch's default is (it was
    # False before torch 2.6, which pyproject allows). Loaded here rather than by
    # `MLPSystem.load_from_checkpoint`, which takes weights_only only from Lightning 2.6 on. Warnings stay visible.
    checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    hp = checkpoint["hyper_parameters"]
    system = MLPSystem(hp["config"], hp["input_dim"], hp["n_classes"])
    system.load_state_dict(checkpoint["state_dict"])
    return system.model
