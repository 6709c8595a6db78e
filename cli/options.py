"""Option aliases shared by several commands, with choices taken from the core's registries."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from ftmed_core import config as cfg
from ftmed_core.frameworks import FRAMEWORKS


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
Framework = _enum("Framework", FRAMEWORKS)
ShufflePolicy = _enum("ShufflePolicy", cfg.SHUFFLE_POLICIES)


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
ShuffleOpt = Annotated[
    Optional[ShufflePolicy],
    typer.Option("--shuffle", help="Training-row order: per-epoch (a new permutation each epoch, default), "
                 "fixed (one permutation from the seed, reused every epoch, as a seeded Keras fit), none (file order)."),
]


def _check_margin(margin: float) -> float:
    from ftmed.reporting.rows import check_margin

    try:
        return check_margin(margin)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


MarginOpt = Annotated[float, typer.Option("--margin", callback=_check_margin,
                                          help="Equivalence margin in accuracy percentage points (finite, > 0).")]
StepsPerExecutionOpt = Annotated[
    int,
    typer.Option("--steps-per-execution", help="Lightning: optimizer steps per training_step (0 = ftmed decides: "
                 "32 on CUDA, 1 on CPU; 1 = the plain path)."),
]
CudaGraphsOpt = Annotated[
    Optional[bool],
    typer.Option("--cuda-graphs/--no-cuda-graphs", help="Lightning: replay each block of steps from a CUDA graph "
                 "(default: wherever it works)."),
]
VariantsFileOpt = Annotated[
    Optional[Path],
    typer.Option("--variants-file", help="A TOML file of your own variants (docs/api.md, 'Your own variants')."),
]
MlflowOpt = Annotated[bool, typer.Option("--mlflow", help="Also log each run to MLflow (a local store: RUNS_DIR/mlflow.db).")]
MlflowUriOpt = Annotated[
    Optional[str], typer.Option("--mlflow-uri", help="MLflow tracking URI or folder (implies --mlflow).")
]


def mlflow_target(enabled: bool, uri: Optional[str]):
    """The API's `mlflow=` argument for --mlflow / --mlflow-uri (Typer has no option with an optional value)."""
    return uri if uri else (True if enabled else None)
