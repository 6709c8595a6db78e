"""ftmed's public functions; `ftmed/__init__.py` re-exports them. The CLI commands call these.

Layering: this package sits where the CLI does. It imports the core at module level and each framework
only inside the function that trains with it, so `import ftmed` imports neither torch nor TensorFlow.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable, Iterable, Sequence, Union

from ftmed_core.config import ExperimentConfig, RuntimeConfig
from ftmed_core.errors import ConfigError
from ftmed_core.records import RunRecord
from ftmed.reporting.rows import DEFAULT_MARGIN
from ftmed_core.variants import Variant

from ftmed.adapters import check_runtime, framework_train, require_framework, runtime_needs_check
from ftmed.comparison import Comparison

VariantLike = Union[str, Variant, ExperimentConfig]
PROTOCOL_FIELDS = ("epochs", "seed", "data_dir", "dataset", "size")


def in_notebook() -> bool:
    """True inside a Jupyter kernel (where progress shows as a notebook widget, not terminal escapes)."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


def variants(group: str | Sequence[str] = "all", file: str | Path | None = None) -> list[Variant]:
    """The registry's variants (a group, names, or "all"), or with `file` the variants a TOML file defines.

    With `file`, `group` may also name the file's variants; "all" (the default) then means the file's own.
    Each `Variant` has `.name`, `.config` (an `ExperimentConfig`), `.purpose`, `.group`, `.study_accuracy`.

    Example:
        >>> [v.name for v in ftmed.variants("study")]
        ['baseline', 'sigmoid-output', 'lr-1e-4', 'sgd-momentum', 'wider-deeper']
    """
    from ftmed_core.user_variants import GROUP, load_variants_file, select
    from ftmed_core.variants import select_variants

    if file is None:
        return select_variants(group)
    extra = load_variants_file(file)
    return select(GROUP if group == "all" else group, extra)


def load_variants(path: str | Path) -> list[Variant]:
    """The variants defined in a TOML variants file (docs/api.md, "Your own variants"), validated.

    Raises `ftmed.ConfigError` listing every mistake, one line each.

    Example:
        >>> mine = ftmed.load_variants("my_variants.toml")
        >>> ftmed.compare(variants=["baseline", *mine], seeds=[0, 1])
    """
    from ftmed_core.user_variants import load_variants_file

    return load_variants_file(path)


def _as_variant(item: VariantLike, extra: list[Variant]) -> list[Variant]:
    from ftmed_core.user_variants import select

    if isinstance(item, Variant):
        return [item]
    if isinstance(item, ExperimentConfig):
        return [Variant(item, "from Python", "python")]
    if isinstance(item, str):
        return select(item, extra)
    raise ConfigError(f"a variant is a name, a Variant or an ExperimentConfig, got {type(item).__name__}")


def _select(spec, variants_file) -> list[Variant]:
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


def _epoch_bar(total: int, description: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=description, unit="epoch", leave=True)


def train(
    config: VariantLike = "baseline",
    framework: str = "lightning",
    *,
    epochs: int | None = None,
    seed: int | None = None,
    data_dir: str | Path | None = None,
    dataset: str | None = None,
    size: int | None = None,
    runs_dir: str | Path = "runs",
    runtime: RuntimeConfig | None = None,
    tensorboard: bool = False,
    mlflow: bool | str | Path | None = None,
    force: bool = False,
    progress: bool | None = None,
    on_epoch: Callable[[int, int, dict], None] | None = None,
    on_start: Callable[[ExperimentConfig], None] | None = None,
    data=None,
    **fields,
) -> RunRecord:
    """Train one configuration in one framework, in this process, and return its `RunRecord`.

    Args:
        config: a registry variant name ("baseline", "sgd-momentum", ...), a `Variant`, or an `ExperimentConfig`.
        framework: "lightning", "keras" (TensorFlow), "keras[jax]" or "keras[torch]".
        epochs, seed, data_dir, dataset, size: the protocol (default: the config's; data_dir None means
            $FTMED_DATA_DIR or ~/.medmnist, downloading PathMNIST if it is missing).
        runs_dir: the run directory goes in here (`runs_dir/<run key>`, holding record.json and the arrays).
        runtime: where to train (`RuntimeConfig`: accelerator, devices, threads, precision); default CPU/GPU auto.
        tensorboard: also log to TensorBoard in the run directory.
        mlflow: also log to MLflow: True for a local store in `runs_dir/mlflow.db`, or a tracking URI / folder.
        force: retrain even if this exact run finished already (the old run is moved aside, never deleted);
            otherwise a finished identical run is returned as it is.
        progress: a per-epoch progress bar (a widget in a notebook); None: in a notebook yes, else the
            framework's own bar when stderr is a terminal.
        on_epoch: called after each epoch with (epoch, total epochs, that epoch's history values).
        on_start: called with the final config once every check has passed (data, runtime, memory, runs
            folder), before the run is claimed: a request that fails a check never reaches it.
        **fields: any other `ExperimentConfig` or optimizer field (`learning_rate=1e-4`, `optimizer="sgd"`,
            `hidden_units=[256, 128]`, ...); the run is then named `<variant>+<changes>`.

    A run that fails (NaN loss, a crash) comes back with `status == "failed"` and its `error`; bad input
    raises `ftmed.ConfigError` (or `DataError`) naming the bad value.

    Example:
        >>> record = ftmed.train("baseline", framework="keras", epochs=2, data_dir="data/synthetic")
        >>> record.test["accuracy"], record.history["val_acc"]
    """
    from ftmed_core.config import check_model_fits
    from ftmed_core.data import ensure_data, load_npz, prepare
    from ftmed_core.user_variants import apply_fields

    from ftmed.tracking import finish_run, prepare_store, resolve_uri

    base = _select([config], None)[0].config if not isinstance(config, ExperimentConfig) else config
    changed = apply_fields(base, fields) if fields else base
    if changed != base:
        changed = replace(changed, name=f"{base.name}+{changed.describe_changes(base)}")
    protocol = {"epochs": epochs, "seed": seed, "dataset": dataset, "size": size,
                "data_dir": str(data_dir) if data_dir is not None else None}
    config = replace(changed, **{k: v for k, v in protocol.items() if v is not None})

    check_runs_dir(runs_dir)
    runtime = runtime or RuntimeConfig()
    uri = resolve_uri(mlflow, runs_dir) if mlflow is not None else runtime.mlflow
    runtime = replace(runtime, tensorboard=tensorboard or runtime.tensorboard, mlflow=uri)
    if runtime.mlflow:
        prepare_store(runtime.mlflow)
    notebook_bar = progress if progress is not None else in_notebook()
    if notebook_bar or progress is False:
        runtime = replace(runtime, progress=False)  # no terminal bar from the framework
    fit = framework_train(framework, runtime)
    check_runtime(framework, runtime)
    if data is None:
        path = ensure_data(config.dataset, config.size, config.data_dir)
        data = prepare(load_npz(path, config.dataset, config.size), config.val_mode, config.val_fraction)
    check_model_fits(config, data.input_dim, data.n_classes)
    if on_start is not None:
        on_start(config)

    bar = _epoch_bar(config.epochs, f"{config.name} / {framework} / seed {config.seed}") if notebook_bar else None

    def epoch_done(epoch: int, total: int, values: dict) -> None:
        if bar is not None:
            bar.update(1)
            bar.set_postfix(val_acc=f"{values.get('val_acc', float('nan')):.4f}")
        if on_epoch is not None:
            on_epoch(epoch, total, values)

    called = time.time()
    try:
        record = fit(config, runtime=runtime, runs_dir=Path(runs_dir), data=data, force=force, on_epoch=epoch_done)
    finally:
        if bar is not None:
            bar.close()
    reused = record.started_at is not None and record.started_at < called
    if runtime.mlflow and not reused:  # a reused run was logged (or not) when it trained
        finish_run(record, Path(runs_dir) / record.run_key, runtime.mlflow)
    return record


@contextlib.contextmanager
def _notebook_grid_bar(todo: list, runs_dir: Path):
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


def _as_list(value, what: str, cast=str) -> list:
    if isinstance(value, str):
        from ftmed.console import parse_int_list

        return parse_int_list(value, what) if cast is int else [v.strip() for v in value.split(",") if v.strip()]
    if isinstance(value, int):
        return [value]
    return [cast(v) for v in value]


def compare(
    variants: str | Iterable[VariantLike] | None = None,
    frameworks: str | Iterable[str] = ("lightning", "keras"),
    seeds: str | Iterable[int] = (0, 1, 2),
    *,
    epochs: int | None = None,
    dataset: str | None = None,
    size: int | None = None,
    data_dir: str | Path | None = None,
    runs_dir: str | Path = "runs",
    variants_file: str | Path | None = None,
    jobs: int | None = None,
    threads: int = 0,
    accelerator: str = "auto",
    devices: int = 1,
    precision: str = "32",
    steps_per_execution: int = 0,
    cuda_graphs: bool | None = None,
    margin: float = DEFAULT_MARGIN,
    shuffle: str | None = None,
    tensorboard: bool = False,
    mlflow: bool | str | Path | None = None,
    executor: str = "local",
    address: str | None = None,
    quiet: bool = False,
    datasets: str | Iterable[str] | None = None,
    sizes: str | Iterable[int] | None = None,
    atlas: bool = False,
) -> Comparison:
    """Run variants × frameworks × seeds, each run in its own process (resumable: finished runs are kept
    and not retrained), write the report into `runs_dir`, and return the `Comparison`.

    Args:
        variants: "study" (default without a file), "all", a group, names, or a list mixing names,
            `Variant`s and `ExperimentConfig`s. With `variants_file` the default is the baseline plus all of
            the file's variants, and "file" selects the file's variants.
        frameworks: any of "lightning", "keras" (TensorFlow), "keras[jax]", "keras[torch]" (a list or a
            comma-separated string).
        seeds: a list of seeds or "0,1,2"; a seed fixes the initial weights and the batch order of every
            framework.
        epochs, dataset, size, data_dir, shuffle: the protocol for every run (default: each variant's own).
        jobs, threads: runs side by side (default: grid.CPU_JOBS on CPU, at most one per core; grid.GPU_JOBS
            on one GPU; 1 times each run alone), and intra-op threads per run
            (0: cores / jobs).
        accelerator, devices, precision, steps_per_execution, cuda_graphs: where and how each run trains
            (`RuntimeConfig`).
        margin: the equivalence margin (accuracy points) of the TOST column.
        tensorboard, mlflow: also log every run (mlflow: True for `runs_dir/mlflow.db`, or a URI / folder).
        executor, address: "local" (worker processes here) or "ray" (one Ray task per run on the cluster
            at `address`; docs/cluster.md).
        quiet: print nothing of this function's own (the grid's progress bar still shows: a widget in a
            notebook).
        datasets, sizes: several data files ("pathmnist,bloodmnist" or "all-2d"; "28,64"): the grid runs
            for each (dataset, size) into `runs_dir` (`ftmed.atlas.compare_grid`) and a dict
            {(dataset, size): Comparison} is returned. Every file must be present: one DataError lists
            all missing ones (URL, MD5, target path) before anything trains. `atlas`: also write
            atlas.md/.csv/.png (data files x variants, `ftmed.atlas.write_atlas`) into `runs_dir`.

    Failed runs are recorded and reported, not raised: check `comparison.failed`. Several studies may
    share `runs_dir`: a run another process is training is waited for, not trained twice.

    Example:
        >>> comparison = ftmed.compare(variants="study", seeds=[0, 1], epochs=2, data_dir="data/synthetic")
        >>> comparison.table
        >>> comparison.figures()["accuracy_bars"]
    """
    if datasets is not None or sizes is not None:
        from ftmed.atlas import compare_grid

        if dataset is not None or size is not None:
            raise ConfigError("give either dataset/size or datasets/sizes, not both")
        return compare_grid(
            datasets or "pathmnist", sizes or 28, data_dir=data_dir, variants=variants,
            frameworks=frameworks, seeds=seeds, epochs=epochs, runs_dir=runs_dir, variants_file=variants_file,
            jobs=jobs, threads=threads, accelerator=accelerator, devices=devices, precision=precision,
            steps_per_execution=steps_per_execution, cuda_graphs=cuda_graphs, margin=margin, shuffle=shuffle,
            tensorboard=tensorboard, mlflow=mlflow, executor=executor, address=address, quiet=quiet, atlas=atlas)
    from ftmed.grid import check_distinct_seeds, default_jobs, plan, read_planned, run_study
    from ftmed.console import progress_bar
    from ftmed.executors import make_executor
    from ftmed_core.config import MAX_SEED, check_epochs, check_model_fits
    from ftmed_core.data import ensure_data, load_npz, prepare
    from ftmed_core.frameworks import parse_frameworks
    from ftmed_core.records import RECORD_FILE
    from ftmed.reporting.render import render
    from ftmed.reporting.rows import check_margin
    from ftmed_core.runner import data_summary, resolve_threads

    from ftmed.tracking import prepare_store, resolve_uri

    say = (lambda text: None) if quiet else print
    chosen = _select(variants, variants_file)
    fws = parse_frameworks(frameworks if isinstance(frameworks, str) else ",".join(frameworks))
    for fw in fws:
        require_framework(fw)
    seed_list = _as_list(seeds, "seeds", int)
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

    first = chosen[0].config
    ds, sz = dataset or first.dataset, size or first.size
    progress, update = progress_bar("downloading")
    with progress:
        path = ensure_data(ds, sz, data_dir, progress=update)
    raw = load_npz(path, ds, sz)  # validate before anything is written
    prepared = prepare(raw, first.val_mode, first.val_fraction)
    source = data_summary(prepared)

    cores = resolve_threads(RuntimeConfig())
    per_job = threads or pool.default_threads(cores)
    runtime = RuntimeConfig(accelerator=accelerator, devices=devices, precision=precision, threads=per_job,
                            jobs=jobs, progress=False, tensorboard=tensorboard, mlflow=uri,
                            steps_per_execution=steps_per_execution, cuda_graphs=cuda_graphs)
    if runtime_needs_check(runtime) and executor == "local":  # on Ray the nodes, not this machine, train
        for fw in fws:
            check_runtime(fw, runtime)
    for variant in chosen:
        check_model_fits(variant.config, prepared.input_dim, prepared.n_classes)
    if runtime.mlflow:
        prepare_store(runtime.mlflow)
    planned = plan(chosen, fws, seed_list, data_md5=raw.md5, precision=runtime.precision, epochs=epochs,
                   dataset=dataset, size=size, data_dir=data_dir, shuffle=shuffle)
    runs_dir.mkdir(parents=True, exist_ok=True)
    todo = [job for job in planned if not (runs_dir / job.run_key / RECORD_FILE).is_file()]
    with _notebook_grid_bar(todo, runs_dir):
        run_study(planned, runtime, source, runs_dir, pool, source["label"], per_job, path)

    records = read_planned(planned, runs_dir)
    outputs = render(runs_dir, records, margin)  # one process at a time writes a folder's report (a lock)
    for exc in outputs["damaged"]:
        say(f"left out of the report: {exc}")
    comparison = Comparison(records, runs_dir, margin)
    comparison.outputs = outputs
    comparison.missing = len(planned) - len(records)
    comparison.__dict__["rows"] = outputs["rows"]
    return comparison


def report(runs_dir: str | Path = "runs", margin: float = DEFAULT_MARGIN, out_dir: str | Path | None = None,
           predictions: bool = True) -> dict:
    """Re-render every report output of `runs_dir` from its run records (what `ftmed report` does) into
    `out_dir` (default: `runs_dir`; `predictions=False`: no medmnist prediction files) and return the outputs: `markdown`, `csv`, `json`, `plots`, `predictions`, `groups` (one per data file:
    runs made on different files are never pooled) and `damaged` (runs left out, one error each).

    Example:
        >>> outputs = ftmed.report("runs")
        >>> outputs["markdown"], [str(e) for e in outputs["damaged"]]
    """
    from ftmed.reporting.render import render

    return render(Path(runs_dir), None, margin, out_dir=out_dir, predictions=predictions)


def load_runs(runs_dir: str | Path = "runs", margin: float = DEFAULT_MARGIN, data_md5: str | None = None) -> Comparison:
    """Every run record in `runs_dir` as a `Comparison`; trains nothing and writes nothing
    (`comparison.write()` re-renders the report files, as `ftmed report` does).

    Runs made on different data files are never pooled: if the folder holds several, pass `data_md5`
    (the error lists them). Damaged runs are left out with one warning each (`comparison.damaged`).

    Example:
        >>> comparison = ftmed.load_runs("runs")
        >>> comparison.table.filter(like="acc_mean")
    """
    import warnings

    from ftmed_core.errors import RunError
    from ftmed_core.records import scan_records

    records, damaged = scan_records(Path(runs_dir))
    for exc in damaged:
        warnings.warn(f"left out: {exc}", stacklevel=2)
    if data_md5 is not None:
        records = [r for r in records if r.data.get("md5") == data_md5]
    files = sorted({(r.data.get("md5"), r.data.get("path")) for r in records}, key=str)
    if len(files) > 1:
        listed = "; ".join(f"{md5} ({path})" for md5, path in files)
        raise RunError(f"{runs_dir} holds runs made on {len(files)} different data files, which are never pooled: "
                       f"pass data_md5= one of {listed}")
    if not records:
        raise RunError(f"{runs_dir} holds no usable run records; run `ftmed compare` or `ftmed train` first")
    comparison = Comparison(records, Path(runs_dir), margin)
    comparison.damaged = damaged
    return comparison


def load_data(data_dir: str | Path | None = None, dataset: str = "pathmnist", size: int = 28,
              val_mode: str = "holdout", val_fraction: float = 0.2):
    """The data every run trains on, as both frameworks receive it: a validated MedMNIST file (downloaded,
    MD5-checked, if missing), pixels / 255 flattened, the holdout (Keras's `validation_split`) or official
    validation rows. Returns an `ExperimentData` (`x_train`, `y_train`, `x_val`, ..., `class_names`,
    `label`, `synthetic`).

    Example:
        >>> data = ftmed.load_data("data/synthetic")
        >>> data.x_train.shape, data.label
    """
    from ftmed_core.data import load_experiment_data

    config = ExperimentConfig(dataset=dataset, size=size, val_mode=val_mode, val_fraction=val_fraction,
                              data_dir=str(data_dir) if data_dir is not None else None)
    return load_experiment_data(config)


def synthesize(out: str | Path = "data/synthetic", scale: float = 1.0, *, dataset: str = "pathmnist", size: int = 28,
               seed: int = 0, overwrite: bool = False) -> Path:
    """Write a SYNTHETIC MedMNIST-format file (learnable, labelled synthetic in every record, table and plot)
    and return its path; pass its folder as `data_dir`. `scale` shrinks the real split sizes. A file already
    there is kept as it is (so a notebook can rerun this cell) unless `overwrite`.

    Example:
        >>> path = ftmed.synthesize("data/synthetic", scale=0.02)
        >>> ftmed.train("baseline", data_dir=path.parent, epochs=2)
    """
    from ftmed_core.data import data_path
    from ftmed_core.synth import write_synthetic

    if data_path(dataset, size, out).is_file() and not overwrite:
        return data_path(dataset, size, out)
    return write_synthetic(out, dataset, size, scale=scale, seed=seed, overwrite=overwrite)
