"""What both frameworks log to MLflow, decided once: the experiment, the run name, the parameters and the
metric names. Standard library only; the MLflow calls live in the adapters (Lightning's `MLFlowLogger`,
keras_ref's `MLflowCallback`) and, for what is known only after training (test metrics, the record, the
plots), in `ftmed.tracking`.

Per-epoch metrics are the shared history keys (`train_loss`, `train_acc`, `val_loss`, `val_acc`,
`epoch_seconds`) plus `epoch` (0-based), at step = the epoch's last optimizer step, 0-based (where
Lightning's logger puts epoch-end metrics); test metrics are
`test_<name>` (`test_accuracy`, `test_auc`, `test_loss`).
"""

from __future__ import annotations

from ftmed_core.config import ExperimentConfig, RuntimeConfig

EXPERIMENT = "ftmed"
DEFAULT_DATABASE = "mlflow.db"  # ftmed's default store: a SQLite file in the runs directory
ARTIFACTS = "mlartifacts"  # next to that database


def artifact_location(uri: str) -> str | None:
    """Where a new experiment keeps its artifacts: next to a local SQLite database (MLflow's own default is
    ./mlruns under the current directory, wherever that is); None for other stores (they decide)."""
    from pathlib import Path

    if uri.startswith("sqlite:///"):
        return (Path(uri[len("sqlite:///"):]).parent / ARTIFACTS).as_uri()
    return None


def run_name(framework: str, config: ExperimentConfig) -> str:
    return f"{config.name} / {framework} / seed {config.seed}"


def params(framework: str, config: ExperimentConfig, runtime: RuntimeConfig) -> dict[str, str]:
    """The run's configuration as flat MLflow parameters (`optimizer.learning_rate`, `hidden_units`, ...)."""
    flat: dict[str, str] = {"framework": framework, "config_hash": config.config_hash(),
                            "precision": runtime.precision}
    for key, value in config.to_dict().items():
        if key == "data_dir":
            continue
        if isinstance(value, dict):
            flat.update({f"{key}.{k}": str(v) for k, v in value.items()})
        elif isinstance(value, list):
            flat[key] = "-".join(map(str, value))
        else:
            flat[key] = str(value)
    return flat


def tags(framework: str, config: ExperimentConfig) -> dict[str, str]:
    return {"ftmed.framework": framework, "ftmed.variant": config.name, "ftmed.seed": str(config.seed)}
