"""Run records: one directory per run, written so that a half-written run never looks finished.

Layout of `runs/<run_key>/`:
  record.json              the record (config, runtime, environment, history, test metrics, timings);
                           written last, atomically (temp file + fsync + rename). Its presence with
                           status "finished" is what makes a run finished.
  test_probabilities.npy   activated test outputs, float32 (N, n_classes)
  test_logits.npy          pre-activation test outputs, float32 (N, n_classes)
  test_labels.npy          the test labels they are scored against (so reports need no data file)
  history.csv              per-epoch history under the shared keys
  framework files          checkpoints, CSV logs, saved models (the adapter's own)

The run key is `<framework>-<config hash>-<data md5[:8]>-s<seed>[-<precision>]` (framework as
`ftmed_core.frameworks.slug` spells it: keras[jax] -> keras-jax): the same experiment on
the same data file is the same run, wherever the file lies and whatever the variant is called.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ftmed_core.config import ExperimentConfig, RuntimeConfig
from ftmed_core.errors import RunError
from ftmed_core.frameworks import FRAMEWORKS, slug

HISTORY_KEYS = ("train_loss", "train_acc", "val_loss", "val_acc", "epoch_seconds")
RECORD_FILE = "record.json"
# FRAMEWORKS: lightning, keras, keras[jax], keras[torch] (re-exported here, where readers look for it).
RECORD_VERSION = 1


def run_key(framework: str, config: ExperimentConfig, data_md5: str, precision: str = "32") -> str:
    key = f"{slug(framework)}-{config.config_hash()}-{data_md5[:8]}-s{config.seed}"
    return key if precision == "32" else f"{key}-{precision}"


@dataclass
class RunRecord:
    run_key: str
    framework: str
    status: str  # "finished" | "failed"
    config: dict
    runtime: dict
    environment: dict = field(default_factory=dict)
    data: dict = field(default_factory=dict)
    history: dict = field(default_factory=lambda: {k: [] for k in HISTORY_KEYS})
    test: dict = field(default_factory=dict)  # accuracy, loss, auc, n
    training_seconds: float | None = None
    parameter_count: int | None = None
    error: str | None = None
    started_at: float | None = None
    finished_at: float | None = None
    version: int = RECORD_VERSION

    @property
    def experiment(self) -> ExperimentConfig:
        return ExperimentConfig.from_dict(self.config)

    @property
    def finished(self) -> bool:
        return self.status == "finished"

    @property
    def synthetic(self) -> bool:
        return bool(self.data.get("synthetic"))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RunRecord":
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})


def new_record(framework: str, config: ExperimentConfig, runtime: RuntimeConfig, data_source: dict) -> RunRecord:
    return RunRecord(
        run_key=run_key(framework, config, data_source["md5"], runtime.precision),
        framework=framework,
        status="running",
        config=config.to_dict(),
        runtime=runtime.to_dict(),
        data=dict(data_source),
        started_at=time.time(),
    )


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot serialise {type(value).__name__}")


def _sanitize(value: Any) -> Any:
    """NaN/inf are not JSON: store them as null (a failed run's loss may be NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _sanitize(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_sanitize(v) for v in value]
    return value


def atomic_write_bytes(path: Path, payload: bytes) -> None:
    """Write `payload` to `path` so readers see the old file or the whole new one, never a part."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file normal permissions
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def save_array(path: Path, array: np.ndarray) -> None:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    atomic_write_bytes(path, buffer.getvalue())


def history_csv(history: dict) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["epoch", *HISTORY_KEYS])
    for i in range(len(history.get("train_loss", []))):
        writer.writerow([i + 1, *(history[k][i] if i < len(history.get(k, [])) else "" for k in HISTORY_KEYS)])
    return out.getvalue()


def write_record(run_dir: Path, record: RunRecord, probabilities: np.ndarray | None = None,
                 logits: np.ndarray | None = None, labels: np.ndarray | None = None) -> Path:
    """Write arrays and history first, the record last: the record's presence marks the run done."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if probabilities is not None:
        save_array(run_dir / "test_probabilities.npy", np.asarray(probabilities, dtype=np.float32))
    if logits is not None:
        save_array(run_dir / "test_logits.npy", np.asarray(logits, dtype=np.float32))
    if labels is not None:
        save_array(run_dir / "test_labels.npy", np.asarray(labels, dtype=np.int64))
    atomic_write_text(run_dir / "history.csv", history_csv(record.history))
    text = json.dumps(_sanitize(record.to_dict()), indent=2, default=_json_default)
    atomic_write_text(run_dir / RECORD_FILE, text + "\n")
    return run_dir / RECORD_FILE


def read_record(run_dir: Path) -> RunRecord | None:
    """The run's record, or None when it has none yet (never started, or interrupted)."""
    path = Path(run_dir) / RECORD_FILE
    if not path.is_file():
        return None
    try:
        return RunRecord.from_dict(json.loads(path.read_text()))
    except (OSError, ValueError, TypeError) as exc:
        raise RunError(f"{path} is unreadable or corrupt ({exc}); move it away to rerun that run") from None


def load_probabilities(run_dir: Path) -> np.ndarray:
    return np.load(Path(run_dir) / "test_probabilities.npy", allow_pickle=False)


def load_labels(run_dir: Path) -> np.ndarray:
    return np.load(Path(run_dir) / "test_labels.npy", allow_pickle=False)


def list_records(runs_dir: Path) -> list[RunRecord]:
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        raise RunError(f"runs directory {runs_dir} does not exist or is not a directory")
    try:
        entries = sorted(p for p in runs_dir.iterdir() if p.is_dir())
    except OSError as exc:
        raise RunError(f"cannot read runs directory {runs_dir}: {exc.strerror or exc}") from None
    records = []
    for entry in entries:
        record = read_record(entry)
        if record is not None:
            records.append(record)
    return records


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def base_environment() -> dict:
    """Framework-neutral facts about where a run executed; adapters add their library versions/device."""
    from ftmed_core import __version__

    return {
        "ftmed": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "numpy": np.__version__,
        "git_commit": git_commit(),
        "hostname": platform.node(),
    }
