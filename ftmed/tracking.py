"""MLflow: where runs are logged by default, and what is added to a run once its record exists.

The adapters log parameters and per-epoch metrics while training (Lightning's `MLFlowLogger`, keras_ref's
`MLflowCallback`); `finish_run` then adds what only exists afterwards: the test metrics, the status, the
record, the history and a curves plot as artifacts. `ftmed.train` and `ftmed compare`'s workers call it.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from ftmed_core import tracking
from ftmed_core.errors import ConfigError
from ftmed_core.records import RECORD_FILE, RunRecord

def resolve_uri(mlflow: bool | str | Path | None, runs_dir: str | Path) -> str | None:
    """The tracking URI for `mlflow`: None/False -> off; True -> a local SQLite store,
    `runs_dir/mlflow.db` (artifacts in `runs_dir/mlartifacts`); a folder or a `.db` path -> a SQLite store
    there; anything with a scheme (sqlite:, http(s):, file: ...) as given.

    MLflow 3 refuses plain-folder (`file:`) stores unless MLFLOW_ALLOW_FILE_STORE=true, so the local
    default is a SQLite file; `mlflow ui --backend-store-uri sqlite:///runs/mlflow.db` browses it."""
    if mlflow is None or mlflow is False:
        return None
    if mlflow is True:
        return "sqlite:///" + str((Path(runs_dir) / tracking.DEFAULT_DATABASE).resolve())
    text = str(mlflow)
    if "://" in text or text.startswith(("file:", "sqlite:", "databricks")):
        return text
    path = Path(text).expanduser().resolve()
    return "sqlite:///" + str(path if path.suffix == ".db" else path / tracking.DEFAULT_DATABASE)


def prepare_store(uri: str) -> None:
    """Open (and on first use create) the store and the experiment once, before any run logs to it: a bad
    URI fails here in one line, and parallel workers never race to create the same database."""
    if uri.startswith("sqlite:///"):
        folder = Path(uri[len("sqlite:///"):]).parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"MLflow store {uri} cannot be used: its folder {folder} cannot be created "
                              f"({exc.strerror or exc}); pass --mlflow-uri a writable folder or URI") from None
    try:
        client = _client(uri)
        if client.get_experiment_by_name(tracking.EXPERIMENT) is None:
            client.create_experiment(tracking.EXPERIMENT, tracking.artifact_location(uri))
    except ConfigError:
        raise
    except Exception as exc:  # MlflowException and the store's own errors: one line, not a traceback
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"MLflow store {uri} cannot be used: {first}") from None


def _client(uri: str):
    try:
        from mlflow.tracking import MlflowClient
    except ImportError:
        raise ConfigError("MLflow logging needs the mlflow package: pip install 'ftmed[mlflow]' (or mlflow)") from None
    return MlflowClient(tracking_uri=uri)


def _find_open_run(client, record: RunRecord) -> str | None:
    """A failed run's MLflow run (its id never reached the record): the newest running one with its tags."""
    experiment = client.get_experiment_by_name(tracking.EXPERIMENT)
    if experiment is None:
        return None
    config = record.experiment
    query = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tracking.tags(record.framework, config).items())
    runs = client.search_runs([experiment.experiment_id], query + " and attributes.status = 'RUNNING'",
                              order_by=["attributes.start_time DESC"], max_results=1)
    return runs[0].info.run_id if runs else None


def finish_run(record: RunRecord, run_dir: str | Path, uri: str) -> str | None:
    """Add test metrics, status and artifacts (record.json, history.csv, curves PNG) to the run's MLflow run.

    Returns the MLflow run id, or None when no MLflow run belongs to this record (e.g. a reused run).
    """
    from mlflow.entities import Metric

    from ftmed.reporting import plots

    client = _client(uri)
    run_id = record.environment.get("mlflow_run_id") or (None if record.finished else _find_open_run(client, record))
    if run_id is None:
        return None
    run_dir = Path(run_dir)
    client.set_tag(run_id, "ftmed.run_key", record.run_key)
    client.set_tag(run_id, "ftmed.status", record.status)
    if record.error:
        client.set_tag(run_id, "ftmed.error", record.error[:5000])
    if record.synthetic:
        client.set_tag(run_id, "ftmed.data", "SYNTHETIC")
    step = record.config["epochs"]
    metrics = [Metric(f"test_{k}", float(v), int(1000 * (record.finished_at or 0)), step)
               for k, v in record.test.items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if record.training_seconds is not None:
        metrics.append(Metric("training_seconds", float(record.training_seconds),
                              int(1000 * (record.finished_at or 0)), step))
    if metrics:
        client.log_batch(run_id, metrics=metrics)
    for name in (RECORD_FILE, "history.csv"):
        if (run_dir / name).is_file():
            client.log_artifact(run_id, str(run_dir / name))
    with tempfile.TemporaryDirectory() as tmp:
        subtitle = " [SYNTHETIC DATA]" if record.synthetic else ""
        plot = plots.curves([record], record.config["name"], Path(tmp), subtitle)
        if plot is not None:
            client.log_artifact(run_id, str(plot), artifact_path="plots")
    client.set_terminated(run_id, "FINISHED" if record.finished else "FAILED")
    return run_id
