"""The study over several data files: datasets x sizes x variants x frameworks x seeds as one grid.

`parse_datasets` / `parse_sizes` read the `--datasets` / `--sizes` specs; `missing_files` lists every file
the grid needs that is not on disk (with where to get it), and `compare_grid` refuses to start — one line
naming every missing file, its URL, MD5 and target path — before anything trains. Then the whole grid is
planned at once and run by one executor (one local pool, or one Ray submission) into one runs folder:
resumable (finished runs are kept), one table per data file in the report (never pooled), and the atlas
(`write_atlas`): one row per data file, one column per variant, read from those tables.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from ftmed_core.data import data_path
from ftmed_core.errors import ConfigError, DataError
from ftmed_core.medmnist_info import dataset_info, dataset_names

ALL_2D = "all-2d"
SIZES = (28, 64, 128, 224)


def parse_datasets(spec: str | Iterable[str]) -> list[str]:
    """"all-2d" (every 2D flag ftmed trains) or names, comma-separated or a list; unknown names raise
    DataError naming the accepted ones."""
    names = [s.strip() for s in spec.split(",")] if isinstance(spec, str) else [str(s).strip() for s in spec]
    names = [n for n in names if n]
    if names == [ALL_2D]:
        return list(dataset_names())
    if not names:
        raise ConfigError(f"--datasets is empty; give flags like pathmnist,bloodmnist or {ALL_2D}")
    for name in names:
        dataset_info(name)  # one line naming the accepted flags
    return list(dict.fromkeys(names))


def parse_sizes(spec: str | int | Iterable[int]) -> list[int]:
    """Image sizes from "28,64" or a list; each must be one of 28, 64, 128, 224."""
    items = [spec] if isinstance(spec, int) else spec.split(",") if isinstance(spec, str) else list(spec)
    sizes = []
    for item in items:
        try:
            size = int(str(item).strip())
        except ValueError:
            raise ConfigError(f"--sizes takes integers from {SIZES}, got {item!r}") from None
        if size not in SIZES:
            raise ConfigError(f"size {size} is not a MedMNIST size; choose from {', '.join(map(str, SIZES))}")
        sizes.append(size)
    if not sizes:
        raise ConfigError(f"--sizes is empty; choose from {', '.join(map(str, SIZES))}")
    return list(dict.fromkeys(sizes))


def missing_files(datasets: Iterable[str], sizes: Iterable[int], data_dir: str | Path | None = None) -> list[dict]:
    """{dataset, size, path, url, md5} of every grid file not on disk, in grid order."""
    out = []
    for dataset in datasets:
        info = dataset_info(dataset)
        for size in sizes:
            path = data_path(dataset, size, data_dir)
            if not path.is_file():
                out.append({"dataset": dataset, "size": size, "path": path, "url": info.urls[size],
                            "md5": info.md5s[size]})
    return out


def missing_message(missing: list[dict]) -> str:
    """One line: every missing file with its URL, MD5 and target path."""
    items = "; ".join(f"{m['url']} (MD5 {m['md5']}) -> {m['path']}" for m in missing)
    return (f"{len(missing)} data file(s) missing, nothing trained: {items} "
            f"(download them, `ftmed data download`, or `ftmed data synth --flag FLAG --size N` for offline work)")


def compare_grid(datasets, sizes, data_dir: str | Path | None = None, atlas: bool = False, *,
                 variants=None, frameworks=("lightning", "keras"), seeds=(0, 1, 2), epochs: int | None = None,
                 runs_dir: str | Path = "runs", variants_file=None, jobs: int | None = None, threads: int = 0,
                 accelerator: str = "auto", devices: int = 1, precision: str = "32", steps_per_execution: int = 0,
                 cuda_graphs: bool | None = None, margin: float | None = None, shuffle: str | None = None,
                 tensorboard: bool = False, mlflow=None, executor: str = "local", address: str | None = None,
                 quiet: bool = False, export: str | None = None) -> dict:
    """The study over every (dataset, size) as one grid: {(dataset, size): Comparison}.

    Every data file must be present (DataError listing all missing ones, before anything is validated
    further or trained). Then datasets x sizes x variants x frameworks x seeds are planned together and
    run by one executor: one local pool, or one Ray submission in which each data file enters the object
    store once. Resumable like `compare` (finished runs are kept). Afterwards the folder's report is
    rendered over all its runs (comparison.md: one table per data file, never pooled) and, with `atlas`,
    atlas.md, atlas.csv and atlas.png are written (`write_atlas`). With `export`, each file's finished runs
    are exported before the report (each Comparison's `exports`). The other arguments are `ftmed.compare`'s.
    """
    from dataclasses import replace

    from ftmed.comparison import Comparison
    from ftmed.grid import plan, read_planned, run_study
    from ftmed.onnx_export import export_finished
    from ftmed.planning import check_request, grid_runtime, load_grid_data, notebook_grid_bar
    from ftmed.reporting.render import render
    from ftmed.reporting.rows import DEFAULT_MARGIN
    from ftmed_core.records import RECORD_FILE

    datasets, sizes = parse_datasets(datasets), parse_sizes(sizes)
    missing = missing_files(datasets, sizes, data_dir)
    if missing:
        raise DataError(missing_message(missing))
    margin = DEFAULT_MARGIN if margin is None else margin
    request = check_request(variants, frameworks, seeds, variants_file=variants_file, jobs=jobs,
                            accelerator=accelerator, devices=devices, epochs=epochs, margin=margin,
                            executor=executor, address=address, runs_dir=runs_dir, tensorboard=tensorboard,
                            mlflow=mlflow)
    first = request.variants[0].config
    files = {}  # (dataset, size) -> GridData without its prepared splits (each run loads its own file)
    for dataset in datasets:
        for size in sizes:  # every file validated before anything is written
            data = load_grid_data(first, dataset, size, data_dir, fetch=False)
            files[(dataset, size)] = replace(data, prepared=None)
    runtime = grid_runtime(request, list(files.values()), threads=threads, accelerator=accelerator,
                           devices=devices, precision=precision, steps_per_execution=steps_per_execution,
                           cuda_graphs=cuda_graphs, tensorboard=tensorboard, executor=executor)
    runs_dir = request.runs_dir
    planned, by_file = [], {}
    for (dataset, size), data in files.items():
        file_jobs = plan(request.variants, request.frameworks, request.seeds, data_md5=data.md5,
                         precision=runtime.precision, epochs=epochs, dataset=dataset, size=size, data_dir=data_dir,
                         shuffle=shuffle)
        for job in file_jobs:
            job.source, job.data_path = data.source, data.path
        by_file[(dataset, size)] = file_jobs
        planned += file_jobs
    runs_dir.mkdir(parents=True, exist_ok=True)
    todo = [job for job in planned if not (runs_dir / job.run_key / RECORD_FILE).is_file()]
    label = f"{len(by_file)} data file(s) ({', '.join(f'{d} {s}px' for d, s in by_file)})"
    with notebook_grid_bar(todo, runs_dir):
        run_study(planned, runtime, None, runs_dir, request.pool, label, runtime.threads, None)

    records = {key: read_planned(file_jobs, runs_dir) for key, file_jobs in by_file.items()}
    exports = {key: export_finished(runs_dir, [r.run_key for r in recs if r.finished], export) if export else None
               for key, recs in records.items()}
    outputs = render(runs_dir, None, margin)  # every data file's table, from every record in the folder
    for exc in outputs["damaged"]:
        if not quiet:
            print(f"left out of the report: {exc}")
    grid = {}
    for key, file_jobs in by_file.items():
        grid[key] = Comparison(records[key], runs_dir, margin, outputs=outputs,
                               missing=len(file_jobs) - len(records[key]), exports=exports[key])
    if atlas:
        write_atlas(runs_dir, outputs["groups"])
    return grid


# --- the atlas report: one row per data file, one column per variant --------------------------------------

ATLAS_MD, ATLAS_CSV, ATLAS_PNG = "atlas.md", "atlas.csv", "atlas.png"


def atlas_rows(groups: list[dict], baseline: str = "baseline") -> list[dict]:
    """One entry per (data file, variant other than the baseline), read from `render`'s per-file groups.

    `diff` is the headline vs-baseline difference of that file's table (the seed-mean over frameworks
    with >= 2 frameworks), `verdict` and `p_holm` its verdict from the table's statistics (Holm within the
    file); `equivalence` the Lightning - Keras TOST verdict of the variant's row on that file. Nothing is
    recomputed: the atlas agrees with the per-file tables by construction. A variant that trains exactly
    the baseline on a file's task (`sigmoid-output` on multi-label ChestMNIST: `ftmed.grid.head_twins`) was
    not run there; its cell says so (verdict "= baseline", no difference).
    """
    from ftmed_core.tasks import head_for

    out = []
    configs = {}  # variant -> its configuration, from any file's records
    for group in groups:
        for record in group["records"]:
            configs.setdefault(record.config["name"], record.config)
    protocol = ("name", "seed", "dataset", "size", "data_dir", "output_activation")

    def head_twin(variant: str, dataset: str) -> bool:
        a, b = configs[variant], configs.get(baseline)
        return (b is not None and {k: v for k, v in a.items() if k not in protocol}
                == {k: v for k, v in b.items() if k not in protocol}
                and head_for(dataset, a["output_activation"])[1] == head_for(dataset, b["output_activation"])[1])
    for group in groups:
        records = group["records"]
        data = records[0].data
        config = records[0].experiment
        synthetic = bool(data.get("synthetic"))
        label = f"{config.dataset} {config.size}px" + (" SYNTHETIC" if synthetic else "")
        for row in group["rows"]:
            if row.variant == baseline:
                continue
            vs, eq = row.vs_baseline or {}, row.difference or {}
            out.append({"data_file": label, "dataset": config.dataset, "size": config.size,
                        "synthetic": synthetic, "data_md5": data.get("md5"), "variant": row.variant,
                        "diff": vs.get("diff", float("nan")), "p_holm": vs.get("p_holm", float("nan")),
                        "verdict": vs.get("verdict", "n/a"), "equivalence": eq.get("verdict", "n/a")})
        present = {row.variant for row in group["rows"]}
        for variant in configs:
            if variant not in present and baseline in present and head_twin(variant, config.dataset):
                out.append({"data_file": label, "dataset": config.dataset, "size": config.size,
                            "synthetic": synthetic, "data_md5": data.get("md5"), "variant": variant,
                            "diff": float("nan"), "p_holm": float("nan"), "verdict": "= baseline",
                            "equivalence": "n/a"})
    return out


def _matrix(entries: list[dict]) -> tuple[list[str], list[str], dict]:
    files = list(dict.fromkeys(e["data_file"] for e in entries))
    variants = list(dict.fromkeys(e["variant"] for e in entries))
    return files, variants, {(e["data_file"], e["variant"]): e for e in entries}


def atlas_markdown(entries: list[dict]) -> str:
    files, variants, cell = _matrix(entries)
    def fmt(e):
        if e is None:
            return ""
        if e["verdict"] == "= baseline":
            return "= baseline (the same network on this task: not run)"
        diff = "n/a" if e["diff"] != e["diff"] else f"{e['diff']:+.2f} pp"
        return f"{diff}, {e['verdict']}; L-K: {e['equivalence']}"
    lines = ["# Atlas: accuracy vs baseline per data file" +
             (" (SYNTHETIC data)" if any(e["synthetic"] for e in entries) else ""), "",
             "Seed-mean difference vs baseline (percentage points) and its verdict (Holm within each data file); "
             "L-K: the Lightning - Keras equivalence verdict (TOST) of that variant on that file.", "",
             "| data file | " + " | ".join(variants) + " |", "|---|" + "---|" * len(variants)]
    for f in files:
        lines.append(f"| {f} | " + " | ".join(fmt(cell.get((f, v))) for v in variants) + " |")
    return "\n".join(lines) + "\n"


def atlas_csv(entries: list[dict]) -> str:
    import csv
    import io

    out = io.StringIO()
    columns = ["data_file", "dataset", "size", "synthetic", "data_md5", "variant", "diff", "p_holm", "verdict",
               "equivalence"]
    writer = csv.DictWriter(out, columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(entries)
    return out.getvalue()


def atlas_heatmap(entries: list[dict], path: Path) -> Path:
    """Heatmap PNG: rows data files, columns variants, colour the difference (pp), each cell annotated
    with the difference, its verdict and the Lightning - Keras verdict."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    files, variants, cell = _matrix(entries)
    values = np.array([[cell[(f, v)]["diff"] if (f, v) in cell else np.nan for v in variants] for f in files])
    finite = values[np.isfinite(values)]
    bound = float(np.abs(finite).max()) if finite.size else 1.0
    fig, ax = plt.subplots(figsize=(4.5 + 2.0 * len(variants), 1.6 + 0.8 * len(files)))
    image = ax.imshow(values, cmap="RdBu", vmin=-bound, vmax=bound, aspect="auto")
    ax.set_xticks(range(len(variants)), variants, rotation=20, ha="right")
    ax.set_yticks(range(len(files)), files)
    for i, f in enumerate(files):
        for j, v in enumerate(variants):
            e = cell.get((f, v))
            if e is not None and e["verdict"] == "= baseline":
                ax.text(j, i, "= baseline\n(same network\non this task)", ha="center", va="center", fontsize=7)
            elif e is not None:
                diff = "n/a" if e["diff"] != e["diff"] else f"{e['diff']:+.1f}"
                dark = np.isfinite(e["diff"]) and abs(e["diff"]) > 0.6 * bound
                ax.text(j, i, f"{diff}\n{e['verdict']}\nL-K {e['equivalence']}", ha="center", va="center",
                        fontsize=7, color="white" if dark else "black")
    fig.colorbar(image, ax=ax, label="accuracy vs baseline (pp, seed mean)")
    synthetic = " -- SYNTHETIC data" if any(e["synthetic"] for e in entries) else ""
    ax.set_title(f"Atlas{synthetic}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_atlas(runs_dir: str | Path, groups: list[dict], baseline: str = "baseline") -> dict:
    """Write atlas.md, atlas.csv and atlas.png into `runs_dir` from `render`'s groups; their paths and entries.
    Without any variant compared with a baseline there is no matrix to draw: no PNG ("png" is None)."""
    from ftmed_core.records import atomic_write_text

    runs_dir = Path(runs_dir)
    entries = atlas_rows(groups, baseline)
    atomic_write_text(runs_dir / ATLAS_MD, atlas_markdown(entries))
    atomic_write_text(runs_dir / ATLAS_CSV, atlas_csv(entries))
    png = atlas_heatmap(entries, runs_dir / ATLAS_PNG) if entries else None
    return {"markdown": runs_dir / ATLAS_MD, "csv": runs_dir / ATLAS_CSV, "png": png, "entries": entries}
