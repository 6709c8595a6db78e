"""ftmed's public functions; `ftmed/__init__.py` re-exports them. The CLI commands call these.

Layering: this package sits where the CLI does. It imports the core at module level and each framework
only inside the function that trains with it, so `import ftmed` imports neither torch nor TensorFlow.
`compare`'s steps (check the request, load the data, settle the runtime, train, read the report back)
are the named functions of `ftmed.planning`.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Callable, Iterable, Sequence

from ftmed_core.config import ExperimentConfig, RuntimeConfig
from ftmed_core.errors import ConfigError
from ftmed_core.records import RunRecord
from ftmed_core.variants import Variant

from ftmed.adapters import check_runtime, framework_train
from ftmed.comparison import Comparison
from ftmed.planning import VariantLike, check_runs_dir, choose_variants, in_notebook
from ftmed.reporting.rows import DEFAULT_MARGIN

PROTOCOL_FIELDS = ("epochs", "seed", "data_dir", "dataset", "size")


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
    from ftmed_core.user_variants import apply_fields

    from ftmed.tracking import finish_run, prepare_store, resolve_uri

    base = choose_variants([config], None)[0].config if not isinstance(config, ExperimentConfig) else config
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
        data = load_data(config.data_dir, config.dataset, config.size, config.val_mode, config.val_fraction)
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
    export: str | None = None,
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
        export: "onnx" exports every finished run of the grid to `<run_dir>/model.onnx` before the report
            is written, so the report shows each export's check (`ftmed.onnx_export.export_finished`);
            `comparison.exports` = {"written": [...], "failed": [lines]}.

    Failed runs are recorded and reported, not raised: check `comparison.failed`. Several studies may
    share `runs_dir`: a run another process is training is waited for, not trained twice.

    Example:
        >>> comparison = ftmed.compare(variants="study", seeds=[0, 1], epochs=2, data_dir="data/synthetic")
        >>> comparison.table
        >>> comparison.figures()["accuracy_bars"]
    """
    from ftmed.onnx_export import check_format

    if export is not None:
        check_format(export)  # before anything trains
    if datasets is not None or sizes is not None:
        from ftmed.atlas import compare_grid

        if dataset is not None or size is not None:
            raise ConfigError("give either dataset/size or datasets/sizes, not both")
        return compare_grid(
            datasets or "pathmnist", sizes or 28, data_dir=data_dir, variants=variants,
            frameworks=frameworks, seeds=seeds, epochs=epochs, runs_dir=runs_dir, variants_file=variants_file,
            jobs=jobs, threads=threads, accelerator=accelerator, devices=devices, precision=precision,
            steps_per_execution=steps_per_execution, cuda_graphs=cuda_graphs, margin=margin, shuffle=shuffle,
            tensorboard=tensorboard, mlflow=mlflow, executor=executor, address=address, quiet=quiet, atlas=atlas,
            export=export)
    from ftmed.grid import plan
    from ftmed.planning import check_request, grid_runtime, load_grid_data, read_comparison, run_grid

    request = check_request(variants, frameworks, seeds, variants_file=variants_file, jobs=jobs,
                            accelerator=accelerator, devices=devices, epochs=epochs, margin=margin,
                            executor=executor, address=address, runs_dir=runs_dir, tensorboard=tensorboard,
                            mlflow=mlflow)
    data = load_grid_data(request.variants[0].config, dataset, size, data_dir)
    runtime = grid_runtime(request, [data], threads=threads, accelerator=accelerator, devices=devices,
                           precision=precision, steps_per_execution=steps_per_execution, cuda_graphs=cuda_graphs,
                           tensorboard=tensorboard, executor=executor)
    planned = plan(request.variants, request.frameworks, request.seeds, data_md5=data.md5,
                   precision=runtime.precision, epochs=epochs, dataset=dataset, size=size, data_dir=data_dir,
                   shuffle=shuffle)
    run_grid(planned, runtime, data, request)
    return read_comparison(planned, request.runs_dir, margin, say=(lambda text: None) if quiet else print,
                           export=export)


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
    return Comparison(records, Path(runs_dir), margin, damaged=damaged)


def load_data(data_dir: str | Path | None = None, dataset: str = "pathmnist", size: int = 28,
              val_mode: str = "holdout", val_fraction: float = 0.2):
    """The data every run trains on, as both frameworks receive it: a validated MedMNIST file (downloaded,
    MD5-checked, if missing, with a progress bar on a terminal's stderr), pixels / 255 flattened, the
    holdout (Keras's `validation_split`) or official validation rows. Returns an `ExperimentData`
    (`x_train`, `y_train`, `x_val`, ..., `class_names`, `label`, `synthetic`).

    Example:
        >>> data = ftmed.load_data("data/synthetic")
        >>> data.x_train.shape, data.label
    """
    from ftmed_core.data import load_npz, prepare

    from ftmed.planning import fetch_data_file

    path = fetch_data_file(dataset, size, str(data_dir) if data_dir is not None else None)
    return prepare(load_npz(path, dataset, size), val_mode, val_fraction)


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
