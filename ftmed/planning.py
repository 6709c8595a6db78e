"""The steps of `ftmed.compare` on one data file, in order: check the request, load the data once, settle
the runtime every run shares, train the planned runs, and read back the report as a `Comparison`.

Every check runs before anything is written or trained, in a fixed order, so a request with several
mistakes always reports the same one first. Also here: how variants are chosen from names, `Variant`s and
`ExperimentConfig`s, and the runs-folder check that `ftmed.train` shares.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence, Union

from ftmed_core.config import ExperimentConfig, RuntimeConfig
from ftmed_core.errors import ConfigError
from ftmed_core.variants import Variant

from ftmed.comparison import Comparison

VariantLike = Union[str, Variant, ExperimentConfig]


def in_notebook() -> bool:
    """True inside a Jupyter kernel (where progress shows as a notebook widget, not terminal escapes)."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


def _as_variant(item: VariantLike, extra: list[Variant]) -> list[Variant]:
    from ftmed_core.user_variants import select

    if isinstance(item, Variant):
        return [item]
    if isinstance(item, ExperimentConfig):
        return [Variant(item, "from Python", "python")]
    if isinstance(item, str):
        return select(item, extra)
    raise ConfigError(f"a variant is a name, a Variant or an ExperimentConfig, got {type(item).__name__}")


def choose_variants(spec, variants_file) -> list[Variant]:
    """The variants `spec` names: None or a string (a group, names, "file") as `ftmed_core.user_variants.select`
    reads it, or a list mixing names, `Variant`s and `ExperimentConfig`s (first occurrence of a name wins);
    names may come from `variants_file`. ConfigError when nothing is selected."""
    from ftmed_core.user_variants import load_variants_file, select

    extra = load_variants_file(variants_file) if variants_file is not None else []
    if spec is None or isinstance(spec, str):
        return select(spec, extra)
    chosen: list[Variant] = []
    for item in spec:
        for variant in _as_variant(item, extra):
            if variant.name not in {c.name for c in chosen}:
                chosen.append(variant)
    if not chosen:
        raise ConfigError("no variants selected")
    return chosen


def as_list(value, what: str, cast=str) -> list:
    """A list from a comma-separated string ("0,1,2": ints when `cast` is int), a single int, or an iterable."""
    if isinstance(value, str):
        from ftmed.console import parse_int_list

        return parse_int_list(value, what) if cast is int else [v.strip() for v in value.split(",") if v.strip()]
    if isinstance(value, int):
        return [value]
    return [cast(v) for v in value]


def check_runs_dir(runs_dir: str | Path) -> Path:
    """`runs_dir` as a Path; ConfigError when it exists but is not a readable, writable folder (a regular
    file, say), so no run is claimed or trained into it."""
    runs_dir = Path(runs_dir)
    existing = next((p for p in (runs_dir, *runs_dir.parents) if p.exists()), None)
    if existing is not None and existing != runs_dir and not existing.is_dir():
        raise ConfigError(f"runs directory {runs_dir} cannot be created: {existing} is a file, not a folder; "
                          f"pass --runs-dir a folder")
    if runs_dir.exists() and not (runs_dir.is_dir() and os.access(runs_dir, os.R_OK | os.W_OK | os.X_OK)):
        what = "a file, not a folder" if runs_dir.is_file() else "not a readable, writable folder"
        raise ConfigError(f"runs directory {runs_dir} is {what}; pass --runs-dir a folder (it is created if missing)")
    return runs_dir


@dataclass(frozen=True)
class GridRequest:
    """A checked `compare` request: what to run, where, and with which executor (`pool`, `ftmed.executors`)."""

    variants: list
    frameworks: list
    seeds: list
    jobs: int
    pool: object
    runs_dir: Path
    mlflow_uri: str | None


def check_request(variants, frameworks, seeds, *, variants_file, jobs: int | None, accelerator: str,
                  devices: int, epochs: int | None, margin: float, executor: str, address: str | None,
                  runs_dir: str | Path, tensorboard: bool, mlflow) -> GridRequest:
    """Every check on `compare`'s arguments that needs no data file; ConfigError on the first that fails."""
    from ftmed_core.config import MAX_SEED, check_epochs
    from ftmed_core.frameworks import parse_frameworks

    from ftmed.adapters import require_framework
    from ftmed.executors import make_executor
    from ftmed.grid import check_distinct_seeds, default_jobs
    from ftmed.reporting.rows import check_margin
    from ftmed.tracking import resolve_uri

    chosen = choose_variants(variants, variants_file)
    fws = parse_frameworks(frameworks if isinstance(frameworks, str) else ",".join(frameworks))
    for fw in fws:
        require_framework(fw)
    seed_list = as_list(seeds, "seeds", int)
    check_distinct_seeds(seed_list)
    if jobs is None:
        jobs = default_jobs(accelerator, devices)
    if jobs < 1:
        raise ConfigError(f"--jobs must be >= 1, got {jobs}")
    if any(not 0 <= s <= MAX_SEED for s in seed_list):
        raise ConfigError(f"seeds must be integers from 0 to {MAX_SEED} (2**32 - 1), got {seeds}")
    if epochs is not None:
        check_epochs(epochs)
    check_margin(margin)
    pool = make_executor(executor, address, jobs)
    runs_dir = check_runs_dir(runs_dir)
    uri = resolve_uri(mlflow, runs_dir)
    RuntimeConfig(tensorboard=tensorboard, mlflow=uri)  # a missing tensorboard/mlflow: one line, before any data
    return GridRequest(chosen, fws, seed_list, jobs, pool, runs_dir, uri)


@dataclass(frozen=True)
class GridData:
    """The one data file a grid trains on: its path, MD5, the prepared splits and their summary for records."""

    path: Path
    md5: str
    prepared: object  # ftmed_core.data.ExperimentData
    source: dict


def fetch_data_file(dataset: str, size: int, data_dir) -> Path:
    """The path of the data file for `dataset` at `size` in `data_dir` (None: $FTMED_DATA_DIR or
    ~/.medmnist), downloaded and MD5-checked if missing, with a progress bar on a terminal's stderr."""
    from ftmed_core.data import ensure_data

    from ftmed.console import progress_bar

    progress, update = progress_bar("downloading")
    with progress:
        return ensure_data(dataset, size, data_dir, progress=update)


def load_grid_data(first: ExperimentConfig, dataset: str | None, size: int | None, data_dir,
                   fetch: bool = True) -> GridData:
    """The grid's data file (`fetch_data_file`; `fetch=False`: the file must be in `data_dir` already),
    validated and split once with the first variant's validation mode, before anything is written."""
    from ftmed_core.data import data_path, load_npz, prepare
    from ftmed_core.runner import data_summary

    ds, sz = dataset or first.dataset, size or first.size
    path = fetch_data_file(ds, sz, data_dir) if fetch else data_path(ds, sz, data_dir)
    raw = load_npz(path, ds, sz)
    prepared = prepare(raw, first.val_mode, first.val_fraction)
    return GridData(path, raw.md5, prepared, data_summary(prepared))


def grid_runtime(request: GridRequest, data: Sequence[GridData], *, threads: int, accelerator: str,
                 devices: int, precision: str, steps_per_execution: int, cuda_graphs: bool | None,
                 tensorboard: bool, executor: str) -> RuntimeConfig:
    """The `RuntimeConfig` every run of the grid trains with (threads: `threads`, else the executor's share
    of the cores), checked where this machine trains, with every variant checked to fit each data file in
    `data` and the MLflow store opened once."""
    from ftmed_core.config import check_model_fits
    from ftmed_core.runner import resolve_threads

    from ftmed.adapters import check_runtime, runtime_needs_check
    from ftmed.tracking import prepare_store

    per_job = threads or request.pool.default_threads(resolve_threads(RuntimeConfig()))
    runtime = RuntimeConfig(accelerator=accelerator, devices=devices, precision=precision, threads=per_job,
                            jobs=request.jobs, progress=False, tensorboard=tensorboard, mlflow=request.mlflow_uri,
                            steps_per_execution=steps_per_execution, cuda_graphs=cuda_graphs)
    if runtime_needs_check(runtime) and executor == "local":  # on Ray the nodes, not this machine, train
        for fw in request.frameworks:
            check_runtime(fw, runtime)
    for one in data:
        for variant in request.variants:
            check_model_fits(variant.config, one.source["input_dim"], one.source["n_classes"])
    if runtime.mlflow:
        prepare_store(runtime.mlflow)
    return runtime


@contextlib.contextmanager
def notebook_grid_bar(todo: list, runs_dir: Path):
    """In a notebook, a widget progress bar over the grid's runs (the grid runner's own bar is for terminals):
    a background thread counts the run records written since the grid started. Elsewhere: nothing."""
    if not (in_notebook() and todo):
        yield
        return
    import threading

    from tqdm.auto import tqdm

    from ftmed_core.records import RECORD_FILE

    started, stop = time.time(), threading.Event()
    bar = tqdm(total=len(todo), desc="runs", unit="run")

    def done() -> int:
        paths = (runs_dir / job.run_key / RECORD_FILE for job in todo)
        return sum(1 for p in paths if p.is_file() and p.stat().st_mtime >= started)

    def poll() -> None:
        while not stop.wait(0.5):
            bar.update(done() - bar.n)

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        bar.update(done() - bar.n)
        bar.close()


def run_grid(planned: list, runtime: RuntimeConfig, data: GridData, request: GridRequest) -> None:
    """Train every planned run not finished yet (`ftmed.grid.run_study`), with a notebook bar over those."""
    from ftmed_core.records import RECORD_FILE

    from ftmed.grid import run_study

    runs_dir = request.runs_dir
    runs_dir.mkdir(parents=True, exist_ok=True)
    todo = [job for job in planned if not (runs_dir / job.run_key / RECORD_FILE).is_file()]
    with notebook_grid_bar(todo, runs_dir):
        run_study(planned, runtime, data.source, runs_dir, request.pool, data.source["label"], runtime.threads,
                  data.path)


def read_comparison(planned: list, runs_dir: Path, margin: float, say: Callable[[str], None],
                    export: str | None = None) -> Comparison:
    """The planned runs' records and their report, written into `runs_dir` (one process at a time: a lock);
    runs damaged since they were trained are left out, each said once. `missing` counts planned runs with
    no usable record. With `export` (a format), every finished run is exported first, so the report shows
    the exports' check (`ftmed.onnx_export.export_finished`)."""
    from ftmed.grid import read_planned
    from ftmed.onnx_export import export_finished
    from ftmed.reporting.render import render

    records = read_planned(planned, runs_dir)
    exports = export_finished(runs_dir, [r.run_key for r in records if r.finished], export) if export else None
    outputs = render(runs_dir, records, margin)
    for exc in outputs["damaged"]:
        say(f"left out of the report: {exc}")
    return Comparison(records, runs_dir, margin, outputs=outputs, missing=len(planned) - len(records),
                      exports=exports)
