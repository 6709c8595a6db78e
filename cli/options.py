"""Option aliases shared by several commands, with choices taken from the core's registries."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from ftmed_core import config as cfg


def _enum(name: str, values) -> type[Enum]:
    return Enum(name, {str(v): str(v) for v in values}, type=str)


Optimizer = _enum("Optimizer", cfg.OPTIMIZERS)
HiddenActivation = _enum("HiddenActivation", cfg.HIDDEN_ACTIVATIONS)
OutputActivation = _enum("OutputActivation", cfg.OUTPUT_ACTIVATIONS)
LossMode = _enum("LossMode", cfg.LOSS_MODES)
ValMode = _enum("ValMode", cfg.VAL_MODES)
InitScheme = _enum("InitScheme", cfg.INIT_SCHEMES)
Semantics = _enum("Semantics", cfg.OPTIMIZER_SEMANTICS)
Precision = _enum("Precision", cfg.PRECISIONS)
Accelerator = _enum("Accelerator", cfg.ACCELERATORS)
Framework = _enum("Framework", ("lightning", "keras"))


def value(option) -> Optional[str]:
    """An Enum choice's string value (None stays None)."""
    return option.value if isinstance(option, Enum) else option


DatasetOpt = Annotated[Optional[str], typer.Option("--dataset", help="MedMNIST 2D dataset flag (default: pathmnist).")]
SizeOpt = Annotated[Optional[int], typer.Option("--size", help="Image size: 28, 64, 128 or 224 (default: 28).")]
DataDirOpt = Annotated[
    Optional[Path],
    typer.Option("--data-dir", help="Folder with the .npz files (default: $FTMED_DATA_DIR or ~/.medmnist)."),
]
RunsDirOpt = Annotated[Path, typer.Option("--runs-dir", help="Where run records and reports go.")]
EpochsOpt = Annotated[Optional[int], typer.Option("--epochs", help="Training epochs (default: the variant's, 20).")]
AcceleratorOpt = Annotated[Accelerator, typer.Option("--accelerator", help="Where to train.")]
DevicesOpt = Annotated[int, typer.Option("--devices", help="Devices (GPUs or CPU processes) per run.")]
StrategyOpt = Annotated[str, typer.Option("--strategy", help="Lightning strategy: auto, ddp, ddp_spawn, ...")]
PrecisionOpt = Annotated[Precision, typer.Option("--precision", help="32 (parity), or mixed precision on GPU.")]
ThreadsOpt = Annotated[int, typer.Option("--threads", help="Intra-op threads per run; 0 = ftmed decides.")]
MarginOpt = Annotated[float, typer.Option("--margin", help="Equivalence margin in accuracy percentage points.")]
VariantsFileOpt = Annotated[
    Optional[Path],
    typer.Option("--variants-file", help="A TOML file of your own variants (README: 'Your own variants')."),
]
MlflowOpt = Annotated[bool, typer.Option("--mlflow", help="Also log each run to MLflow (a local store: RUNS_DIR/mlflow.db).")]
MlflowUriOpt = Annotated[
    Optional[str], typer.Option("--mlflow-uri", help="MLflow tracking URI or folder (implies --mlflow).")
]


def mlflow_target(enabled: bool, uri: Optional[str]):
    """The API's `mlflow=` argument for --mlflow / --mlflow-uri (Typer has no option with an optional value)."""
    return uri if uri else (True if enabled else None)
