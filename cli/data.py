"""`ftmed data info|download|synth`: the dataset files ftmed trains on."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ftmed.console import progress_bar

from cli.options import DataDirOpt, DatasetOpt, SizeOpt

app = typer.Typer(help="Inspect, download or synthesise MedMNIST data files.", no_args_is_help=True)


@app.command()
def info(dataset: DatasetOpt = None, size: SizeOpt = None, data_dir: DataDirOpt = None) -> None:
    """Show a dataset's metadata and the state of its local file."""
    from ftmed_core.data import check_not_a_directory, data_path, load_npz
    from ftmed_core.errors import DataError
    from ftmed_core.medmnist_info import dataset_info

    dataset, size = dataset or "pathmnist", size or 28
    meta = dataset_info(dataset)
    if size not in meta.urls:
        raise DataError(f"{dataset} has no size {size}; available: {', '.join(map(str, meta.urls))}")
    path = data_path(dataset, size, data_dir)
    typer.echo(f"dataset   {meta.name} ({meta.task}, {meta.n_channels} channel(s), {meta.n_classes} classes)")
    typer.echo("classes   " + "; ".join(f"{i}={c}" for i, c in enumerate(meta.class_names)))
    typer.echo("splits    " + ", ".join(f"{k} {v:,}" for k, v in meta.n_samples.items()))
    typer.echo(f"url       {meta.urls.get(size, 'n/a')}")
    typer.echo(f"md5       {meta.md5s.get(size, 'n/a')}")
    typer.echo(f"file      {path}")
    check_not_a_directory(path)
    if not path.is_file():
        typer.echo("status    missing (ftmed data download, or ftmed data synth for offline work)")
        return
    raw = load_npz(path, dataset, size)
    typer.echo(f"cache     {raw.cache} (images memory-mapped from here)")
    sizes = ", ".join(f"{s} {len(raw.labels[s]):,}" for s in ("train", "val", "test"))
    if raw.synthetic:
        typer.echo(f"status    SYNTHETIC file ({sizes}); generator: {raw.synthetic}")
    elif raw.md5_verified:
        typer.echo(f"status    ok, MD5 verified ({sizes})")
    else:
        typer.echo(f"status    valid MedMNIST format but MD5 {raw.md5} differs from the published one ({sizes})")


@app.command()
def download(dataset: DatasetOpt = None, size: SizeOpt = None, data_dir: DataDirOpt = None) -> None:
    """Download a MedMNIST file (MD5-checked) unless it is already there."""
    from ftmed_core.data import data_path, ensure_data

    dataset, size = dataset or "pathmnist", size or 28
    path = data_path(dataset, size, data_dir)
    if path.is_file():
        typer.echo(f"{path} already present")
        return
    progress, update = progress_bar(f"downloading {path.name}")
    with progress:
        path = ensure_data(dataset, size, data_dir, allow_download=True, progress=update)
    typer.echo(f"downloaded {path} (MD5 verified)")


@app.command()
def synth(
    out: Annotated[Path, typer.Option("--out", help="Folder to write the file into.")] = Path("data/synthetic"),
    flag: Annotated[Optional[str], typer.Option(
        "--flag", "--dataset",
        help="Any 2D MedMNIST flag (multi-label chestmnist included), or all-2d for every one (default: pathmnist).",
    )] = None,
    size: SizeOpt = None,
    scale: Annotated[float, typer.Option(help="Fraction of the real split sizes (1.0 = full size).")] = 1.0,
    seed: Annotated[int, typer.Option(help="Generator seed.")] = 0,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing file.")] = False,
) -> None:
    """Write a SYNTHETIC file in MedMNIST's exact format (the flag's channels, classes or labels, task and
    scaled split sizes), for offline demos, tests and benchmarks."""
    from ftmed_core.medmnist_info import all_2d_flags
    from ftmed_core.synth import write_synthetic

    flags = all_2d_flags() if flag == "all-2d" else (flag or "pathmnist",)
    for name in flags:
        path = write_synthetic(out, name, size or 28, scale=scale, seed=seed, overwrite=overwrite)
        typer.echo(f"wrote SYNTHETIC {path} (use --data-dir {path.parent}); it is labelled synthetic in every record")
