"""compare over several data files: the specs, the missing-file line, and a real two-file grid."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from cli.main import app
from ftmed.atlas import missing_files, parse_datasets, parse_sizes
from ftmed_core.errors import ConfigError, DataError
from ftmed_core.medmnist_info import dataset_names
from ftmed_core.synth import write_synthetic


def test_specs():
    assert parse_datasets("all-2d") == list(dataset_names())
    assert parse_datasets("bloodmnist, pathmnist,bloodmnist") == ["bloodmnist", "pathmnist"]
    assert parse_sizes("28,64") == [28, 64]
    with pytest.raises(DataError, match="unknown dataset"):
        parse_datasets("pathmnist,nosuchmnist")
    with pytest.raises(ConfigError, match="not a MedMNIST size"):
        parse_sizes("28,100")


def test_missing_files_are_listed_in_one_line_before_anything_trains(tmp_path):
    write_synthetic(tmp_path / "data", "breastmnist", 28, scale=0.05)
    result = CliRunner().invoke(app, ["compare", "--datasets", "breastmnist,bloodmnist", "--sizes", "28,64",
                                      "--data-dir", str(tmp_path / "data"), "--runs-dir", str(tmp_path / "runs"),
                                      "--seeds", "0", "--epochs", "1", "--variants", "baseline"])
    assert result.exit_code != 0
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    line = lines[0]
    assert "3 data file(s) missing" in line
    for name in ("breastmnist_64.npz", "bloodmnist.npz", "bloodmnist_64.npz"):
        assert str(tmp_path / "data" / name) in line
    assert "https://zenodo.org/" in line and "MD5 " in line
    assert f"-> {tmp_path / 'data' / 'breastmnist.npz'}" not in line  # present: not listed
    assert not (tmp_path / "runs").exists()
    assert missing_files(["breastmnist"], [28], tmp_path / "data") == []


def test_two_file_grid_runs_and_resumes(tmp_path):
    import ftmed

    for flag in ("breastmnist", "retinamnist"):
        write_synthetic(tmp_path / "data", flag, 28, scale=0.03)
    kwargs = dict(datasets="breastmnist,retinamnist", sizes="28", variants="baseline", frameworks="lightning",
                  seeds=[0], epochs=1, data_dir=tmp_path / "data", runs_dir=tmp_path / "runs", quiet=True)
    grid = ftmed.compare(**kwargs)
    assert set(grid) == {("breastmnist", 28), ("retinamnist", 28)}
    for comparison in grid.values():
        assert not comparison.failed and len(comparison.records) == 1
    keys = {c.records[0].run_key for c in grid.values()}
    assert len(keys) == 2
    again = ftmed.compare(**kwargs)  # resumable: the finished runs are read back, not retrained
    assert {c.records[0].finished_at for c in again.values()} == {c.records[0].finished_at for c in grid.values()}
