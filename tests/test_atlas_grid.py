"""compare over several data files: the specs, the missing-file line, real grids (one executor call each)."""

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


def test_only_a_multi_label_task_makes_sigmoid_output_the_baseline():
    from dataclasses import replace

    from ftmed.grid import head_twins
    from ftmed_core.variants import VARIANTS

    chosen = [VARIANTS["baseline"], VARIANTS["sigmoid-output"], VARIANTS["sgd-momentum"],
              replace(VARIANTS["baseline"],
                      config=replace(VARIANTS["baseline"].config, name="linear-head", output_activation="linear"))]
    assert head_twins(chosen, "chestmnist") == {"sigmoid-output": "baseline"}  # linear stays a linear head
    assert head_twins(chosen, "pneumoniamnist") == head_twins(chosen, "retinamnist") == {}


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


def _check_atlas_against_tables(runs_dir, n_files):
    """atlas.csv against comparison.csv (the per-file tables) and against the tables' accuracy means."""
    import csv
    import math

    atlas = list(csv.DictReader(open(runs_dir / "atlas.csv")))
    tables = list(csv.DictReader(open(runs_dir / "comparison.csv")))
    assert len({r["data_md5"] for r in tables}) == n_files == len({a["data_md5"] for a in atlas})
    for entry in atlas:
        rows = {r["variant"]: r for r in tables if r["data_md5"] == entry["data_md5"]}
        row, base = rows[entry["variant"]], rows["baseline"]
        assert math.isclose(float(entry["diff"]), float(row["vs_baseline_diff"]), abs_tol=1e-9)
        assert entry["verdict"] == row["vs_baseline_verdict"]
        frameworks = [k[: -len("_acc_mean")] for k in row if k.endswith("_acc_mean")]
        seed_mean = sum(float(row[f"{fw}_acc_mean"]) - float(base[f"{fw}_acc_mean"]) for fw in frameworks) / len(frameworks)
        assert math.isclose(float(entry["diff"]), seed_mean, abs_tol=1e-6)
        if "diff" in row and row.get("tost_p"):
            assert entry["equivalence"] != "n/a"
        assert entry["synthetic"] == "True" and "SYNTHETIC" in entry["data_file"]
    assert (runs_dir / "atlas.png").stat().st_size > 0
    assert "SYNTHETIC" in (runs_dir / "atlas.md").read_text()
    return atlas


@pytest.mark.slow
def test_two_file_grid_runs_resumes_and_writes_the_atlas(tmp_path):
    import ftmed

    for flag in ("breastmnist", "retinamnist"):
        write_synthetic(tmp_path / "data", flag, 28, scale=0.03)
    kwargs = dict(datasets="breastmnist,retinamnist", sizes="28", variants="baseline,sigmoid-output",
                  frameworks="lightning", seeds=[0, 1], epochs=1, data_dir=tmp_path / "data",
                  runs_dir=tmp_path / "runs", quiet=True, atlas=True)
    grid = ftmed.compare(**kwargs)
    assert set(grid) == {("breastmnist", 28), ("retinamnist", 28)}
    for comparison in grid.values():
        assert not comparison.failed and len(comparison.records) == 4
    atlas = _check_atlas_against_tables(tmp_path / "runs", 2)
    assert {a["variant"] for a in atlas} == {"sigmoid-output"} and len(atlas) == 2
    finished = {r.run_key: r.finished_at for c in grid.values() for r in c.records}
    again = ftmed.compare(**kwargs)  # resumable: the finished runs are read back, not retrained
    assert {r.run_key: r.finished_at for c in again.values() for r in c.records} == finished


@pytest.mark.slow
def test_the_whole_grid_is_one_executor_call_and_multi_label_joins_the_atlas(tmp_path, monkeypatch):
    """pneumoniamnist (binary) and chestmnist (multi-label) in one pool call; on chestmnist sigmoid-output
    is the baseline's network, so it is not run there and its atlas cell says so."""
    import csv

    import ftmed
    from ftmed.executors.local import LocalExecutor

    for flag, scale in (("pneumoniamnist", 0.03), ("chestmnist", 0.005)):
        write_synthetic(tmp_path / "data", flag, 28, scale=scale)
    calls = []
    real_run = LocalExecutor.run

    def counting_run(self, todo, *args, **kwargs):
        calls.append(sorted((job.config.dataset, job.config.name) for job in todo))
        return real_run(self, todo, *args, **kwargs)

    monkeypatch.setattr(LocalExecutor, "run", counting_run)
    grid = ftmed.compare(datasets="pneumoniamnist,chestmnist", sizes="28", variants="baseline,sigmoid-output",
                         frameworks="lightning", seeds=[0, 1], epochs=1, data_dir=tmp_path / "data",
                         runs_dir=tmp_path / "runs", quiet=True, atlas=True)
    assert len(calls) == 1 and len(calls[0]) == 4 + 2, calls  # chestmnist: the baseline only
    assert {d for d, _ in calls[0]} == {"pneumoniamnist", "chestmnist"}
    chest = grid[("chestmnist", 28)]
    assert not chest.failed and len(chest.records) == 2
    assert all(r.test["n"] and 0 <= r.test["accuracy"] <= 1 for r in chest.records)
    atlas = {(a["dataset"], a["variant"]): a for a in csv.DictReader(open(tmp_path / "runs" / "atlas.csv"))}
    assert atlas[("chestmnist", "sigmoid-output")]["verdict"] == "= baseline"
    assert atlas[("pneumoniamnist", "sigmoid-output")]["diff"] != "nan"
    assert "= baseline (the same network on this task: not run)" in (tmp_path / "runs" / "atlas.md").read_text()
    calls.clear()
    again = ftmed.compare(datasets="pneumoniamnist,chestmnist", sizes="28", variants="baseline,sigmoid-output",
                          frameworks="lightning", seeds=[0, 1], epochs=1, data_dir=tmp_path / "data",
                          runs_dir=tmp_path / "runs", quiet=True, atlas=True, export="onnx")
    assert calls == [[]]  # resumed: every run finished, nothing to train
    # exported before the report: every file's runs, and the report already shows their check
    for key, comparison in again.items():
        assert comparison.exports["failed"] == [], key
        assert len(comparison.exports["written"]) == len(comparison.records) == len(grid[key].records)
    report = (tmp_path / "runs" / "comparison.md").read_text()
    assert report.count("## ONNX exports") == 2  # one table per data file
