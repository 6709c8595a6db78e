"""Run records: one directory per run, written so that a half-written run never looks finished.

Layout of `runs/<run_key>/`:
  record.json              the record (config, runtime, environment, history, test metrics, timings);
                           written last, atomically (temp file + fsync + rename). Its presence with
                           status "finished" is what makes a run finished.
  test_probabilities.npy   activated test outputs, float32 (N, n_classes)
  test_logits.npy          pre-activation test outputs, float32 (N, n_classes)
  test_labels.npy          the test labels they are scored against (so reports need no data file): int64
                           (N,) class indices, or (N, L) label bits on a multi-label task
  history.csv              per-epoch history under the shared keys
  framework files          checkpoints, CSV logs, saved models, per-epoch resume state (the adapter's own)

Beside the run directories: `.locks/` (claims, `ftmed_core.locks`), and runs moved aside --
`<run_key>.replaced-<time>` (a forced rerun) and `<run_key>.damaged-<time>` (a damaged record or array,
`RecordDamaged`) -- which are kept but never reported.

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


def atomic_write(path: Path, write) -> None:
    """Call `write(handle)` on a temp file beside `path`, fsync it and rename it over `path`: readers see
    the old file or the whole new one, never a part; on any failure the temp file is removed."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
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


def atomic_write_bytes(path: Path, payload: bytes) -> None:
    """Write `payload` to `path` atomically (`atomic_write`)."""
    atomic_write(path, lambda handle: handle.write(payload))


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


def atomic_save_npz(path: Path, arrays: dict) -> None:
    """`np.savez` to `path` atomically (`atomic_write`), streamed: no second copy in memory."""
    atomic_write(path, lambda handle: np.savez(handle, **arrays))


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


_REDO_HINT = ("`ftmed compare` or `ftmed train` of that run moves its folder aside (kept as <run>.damaged-<time>) "
              "and redoes it, or move the folder away yourself")


class RecordDamaged(RunError):
    """A run directory whose record or test arrays cannot be used; `path` names the bad file, `hint` what to do."""

    def __init__(self, path: Path, reason: str, hint: str = _REDO_HINT):
        self.path, self.reason, self.hint = Path(path), reason, hint
        super().__init__(f"{path}: {reason}; {hint}")

    def __reduce__(self):
        return (RecordDamaged, (self.path, self.reason, self.hint))


RECORD_STATUSES = ("finished", "failed", "running")
_SKIPPED_DIRS = (".replaced-", ".damaged-")  # runs moved aside: kept for reference, never reported


def _finite_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def record_from_payload(payload: Any, path: Path) -> RunRecord:
    """A `RunRecord` from parsed JSON, or RecordDamaged naming the first field that makes it unusable.

    What reports and runs rely on is checked: the keys, the framework and status, a config that builds an
    `ExperimentConfig`, the data file's MD5, and for a finished run a test accuracy in [0, 1] and a
    history of per-epoch lists.
    """
    if not isinstance(payload, dict):
        raise RecordDamaged(path, f"holds a JSON {type(payload).__name__}, not a run record")
    for key, kind in (("run_key", str), ("framework", str), ("status", str), ("config", dict),
                      ("runtime", dict), ("data", dict)):
        if not isinstance(payload.get(key), kind):
            raise RecordDamaged(path, f"'{key}' is missing or not a {kind.__name__}")
    if payload["framework"] not in FRAMEWORKS:
        raise RecordDamaged(path, f"unknown framework {payload['framework']!r}")
    if payload["status"] not in RECORD_STATUSES:
        raise RecordDamaged(path, f"unknown status {payload['status']!r}")
    config = payload["config"]
    for key in ("name", "hidden_units", "optimizer", "seed", "epochs", "dataset", "size"):
        if key not in config:
            raise RecordDamaged(path, f"'config.{key}' is missing")
    try:
        ExperimentConfig.from_dict(config)
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        raise RecordDamaged(path, f"its config is not valid ({exc})") from None
    if not isinstance(payload["data"].get("md5"), str):
        raise RecordDamaged(path, "'data.md5' (which data file the run used) is missing")
    if payload["status"] == "finished":
        test = payload.get("test")
        if not isinstance(test, dict) or not _finite_number(test.get("accuracy")) \
                or not 0.0 <= test["accuracy"] <= 1.0:
            raise RecordDamaged(path, "finished, but 'test.accuracy' is missing or not a number in [0, 1]")
        for key in ("auc", "loss"):
            if test.get(key) is not None and not isinstance(test[key], (int, float)):
                raise RecordDamaged(path, f"finished, but 'test.{key}' is not a number")
        history = payload.get("history")
        if not isinstance(history, dict) or not all(
                isinstance(history.get(k), list)
                and all(v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)) for v in history[k])
                for k in HISTORY_KEYS):
            raise RecordDamaged(path, f"finished, but 'history' lacks per-epoch number lists for {', '.join(HISTORY_KEYS)}")
        if not _finite_number(payload.get("training_seconds")):
            raise RecordDamaged(path, "finished, but 'training_seconds' is missing")
    return RunRecord.from_dict(payload)


def read_record(run_dir: Path) -> RunRecord | None:
    """The run's record, or None when it has none yet (never started, or interrupted).

    RecordDamaged (a RunError) when the file is unreadable, truncated, not JSON, nested beyond what the
    parser can follow, or fails `record_from_payload`'s checks.
    """
    path = Path(run_dir) / RECORD_FILE
    if not path.is_file():
        return None
    try:
        payload = json.loads(path.read_bytes().decode("utf-8"))
    except (OSError, ValueError) as exc:
        reason = "is truncated or not JSON" if isinstance(exc, ValueError) else f"cannot be read ({exc})"
        raise RecordDamaged(path, f"{reason} ({str(exc)[:80]})") from None
    except RecursionError:  # json's parser recurses per level; a record is a few levels deep
        raise RecordDamaged(path, "is not a run record (JSON nested too deeply to read)") from None
    return record_from_payload(payload, path)


def check_arrays(run_dir: Path, record: RunRecord) -> None:
    """RecordDamaged unless a finished run's test arrays load and agree with each other and the record.

    Only the `.npy` headers and file sizes are read (memory-mapped), so checking a whole runs folder costs
    little; flipped bits inside a well-formed array cannot be detected here.
    """
    if not record.finished:
        return
    run_dir = Path(run_dir)
    shapes = {}
    for name in ("test_probabilities.npy", "test_labels.npy"):
        path = run_dir / name
        if not path.is_file():
            raise RecordDamaged(path, "is missing")
        try:
            array = np.load(path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError, EOFError) as exc:
            raise RecordDamaged(path, f"is not a readable .npy array ({str(exc)[:80]})") from None
        shapes[name] = (array.shape, array.dtype)
        del array
    (probs, probs_dtype), (labels, labels_dtype) = shapes["test_probabilities.npy"], shapes["test_labels.npy"]
    if len(probs) != 2 or probs_dtype.kind != "f":
        raise RecordDamaged(run_dir / "test_probabilities.npy", f"holds {probs_dtype} {probs}, not (rows, classes) floats")
    # (N,) class indices, or (N, L) label bits the shape of the probabilities (a multi-label head)
    if labels not in ((probs[0],), probs) or labels_dtype.kind not in "iu":
        raise RecordDamaged(run_dir / "test_labels.npy",
                            f"holds {labels_dtype} {labels}, not {probs[0]} integer labels")
    n = record.test.get("n")
    if isinstance(n, int) and n != probs[0]:
        raise RecordDamaged(run_dir / "test_probabilities.npy", f"has {probs[0]} rows, the record says {n}")


def load_probabilities(run_dir: Path) -> np.ndarray:
    return np.load(Path(run_dir) / "test_probabilities.npy", allow_pickle=False)


def load_labels(run_dir: Path) -> np.ndarray:
    return np.load(Path(run_dir) / "test_labels.npy", allow_pickle=False)


def _run_dirs(runs_dir: Path) -> list[Path]:
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        raise RunError(f"runs directory {runs_dir} does not exist or is not a directory")
    try:
        return sorted(p for p in runs_dir.iterdir() if p.is_dir() and not p.name.startswith(".")
                      and not any(mark in p.name for mark in _SKIPPED_DIRS))
    except OSError as exc:
        raise RunError(f"cannot read runs directory {runs_dir}: {exc.strerror or exc}") from None


def scan_records(runs_dir: Path, arrays: bool = True) -> tuple[list[RunRecord], list[RecordDamaged]]:
    """Every usable record in `runs_dir`, and one RecordDamaged per run that cannot be used.

    `arrays`: also check each finished run's test arrays (`check_arrays`). Runs moved aside
    (`<run>.replaced-*`, `<run>.damaged-*`) are skipped.

    One run is one observation: a folder holding a copy of another folder's run (the same run key, e.g. a
    run folder copied under another name) is listed among the damaged, naming the run it copies; the record
    kept is the one in the folder named after its run key (else the first in name order).
    """
    found, damaged = [], []
    for entry in _run_dirs(runs_dir):
        try:
            record = read_record(entry)
            if record is not None and arrays:
                check_arrays(entry, record)
        except RecordDamaged as exc:
            damaged.append(exc)
            continue
        if record is not None:
            found.append((entry, record))
    kept: dict[str, Path] = {}
    for entry, record in sorted(found, key=lambda item: (item[0].name != item[1].run_key, item[0].name)):
        kept.setdefault(record.run_key, entry)
    records = []
    for entry, record in found:
        if kept[record.run_key] == entry:
            records.append(record)
        else:
            damaged.append(RecordDamaged(entry / RECORD_FILE, f"copies run {record.run_key}, which is counted "
                                         f"once, from {kept[record.run_key].name}", "move the copy out of the folder"))
    return records, damaged


def list_records(runs_dir: Path) -> list[RunRecord]:
    """Every record in `runs_dir`; RecordDamaged for the first one that cannot be used (see `scan_records`)."""
    records, damaged = scan_records(runs_dir, arrays=False)
    if damaged:
        raise damaged[0]
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
        "pid": os.getpid(),  # which process trained the run (tells a reused record from a fresh one)
    }
