"""Hostile input, one row per case: the command line, the fragment its one error line must hold, the exit
code, and what must be true afterwards -- no traceback, no blank first line, nothing written or left behind
(no run folder, no lock, no record, no report) in the working folder.

A new case is one `Case` in `CASES`. `{data}` is a tiny valid synthetic data folder, `{tmp}` the case's own
empty folder (every check looks at it), `{runs}` a runs folder inside it that must not appear; `setup`
builds anything else the case needs inside `{tmp}` before the command runs.
Every case here fails before any training starts, so the whole table runs in seconds.
"""

from __future__ import annotations

import importlib.util
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from typer.testing import CliRunner

from cli.main import app
from conftest import tiny_arrays, write_npz

runner = CliRunner()


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _has_mps() -> bool:
    import torch

    mps = getattr(torch.backends, "mps", None)
    return mps is not None and mps.is_available()


# --- setups: each writes into the case's folder ------------------------------------------------------------

def _file(name: str, text: str | bytes) -> Callable[[Path], None]:
    def make(tmp: Path) -> None:
        path = tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return make


def _random_bytes(tmp: Path) -> None:
    (tmp / "random.toml").write_bytes(np.random.default_rng(0).bytes(3 << 20))


def _random_small(tmp: Path) -> None:
    (tmp / "small.toml").write_bytes(b"\xff\xfe\x00garbage" * 10)


def _huge_valid_toml(tmp: Path) -> None:
    text = "".join(f'[[variant]]\nname = "v{i}"\nlearning_rate = {1e-3 + i * 1e-9}\n' for i in range(40_000))
    (tmp / "huge.toml").write_text(text)


def _dir_as_data(tmp: Path) -> None:
    (tmp / "data" / "pathmnist.npz").mkdir(parents=True)


def _pickled_npz(tmp: Path) -> None:
    arrays = tiny_arrays()
    arrays["train_labels"] = np.array([object()] * len(arrays["train_labels"]), dtype=object)
    (tmp / "data").mkdir()
    np.savez(tmp / "data" / "pathmnist.npz", **arrays)


def _not_zip(tmp: Path) -> None:
    _file("data/pathmnist.npz", b"PK\x03\x04 this is not a zip archive")(tmp)


def _bad_labels(tmp: Path) -> None:
    arrays = tiny_arrays()
    arrays["train_labels"] = arrays["train_labels"] + 20
    write_npz(tmp / "data" / "pathmnist.npz", **arrays)


def _one_column_chest_labels(tmp: Path) -> None:
    write_npz(tmp / "data" / "chestmnist.npz", **tiny_arrays(channels=1, n_classes=2))  # (N, 1), not (N, 14)


def _record(tmp: Path, text: str) -> None:
    run = tmp / "old" / "lightning-000000000000-00000000-s0"
    run.mkdir(parents=True)
    (run / "record.json").write_text(text)


def _deep_record(tmp: Path) -> None:
    _record(tmp, "[" * 100_000 + "]" * 100_000)


def _truncated_record(tmp: Path) -> None:
    _record(tmp, '{"run_key": "lightning-000000000000-00000000-s0", "framew')


TWIN = '[[variant]]\nname = "foo"\nhidden_units = [64]\n[[variant]]\nname = "bar"\nhidden_units = [64]\n'
ESCAPE = '[[variant]]\nname = "../escape"\n[[variant]]\nname = "a/b"\n'


@dataclass(frozen=True)
class Case:
    id: str
    argv: str  # split on spaces after the placeholders are filled in
    fragment: str  # must appear in the one error line
    code: int = 2
    setup: Callable[[Path], None] | None = None
    skip: Callable[[], str | None] | None = None  # a reason to skip on this machine, or None


def _needs(module: str) -> Callable[[], str | None]:
    return lambda: None if importlib.util.find_spec(module) else f"{module} is not installed"


def _cpu_only() -> str | None:
    return "a CUDA GPU is present" if _has_cuda() else None


T = "train -f lightning --data-dir {data} --runs-dir {runs}"
C = "compare --data-dir {data} --runs-dir {runs}"
CL = C + " --frameworks lightning"

CASES = [
    # -- the round-3 table: one run is one observation --
    Case("seeds-repeated", C + " --seeds 0,0", "seed 0 is listed more than once"),
    Case("seeds-repeated-later", C + " --seeds 1,2,1", "seed 1 is listed more than once"),
    Case("variants-same-config", CL + " --variants-file {tmp}/twin.toml --variants file", "variants 'foo' and 'bar' "
         "have the same configuration", setup=_file("twin.toml", TWIN)),
    Case("variants-path-names-same-as-baseline", CL + " --variants-file {tmp}/escape.toml",
         "variants 'baseline' and '../escape' have the same configuration", setup=_file("escape.toml", ESCAPE)),
    Case("variants-same-after-epochs", CL + " --variants-file {tmp}/e.toml --variants baseline,short "
         "--epochs 20", "variants 'baseline' and 'short' have the same configuration",
         setup=_file("e.toml", '[[variant]]\nname = "short"\nepochs = 5\n')),
    # -- the round-3 table: tracebacks and hangs --
    Case("hidden-beyond-memory", T + " --hidden 10000000", "more than this machine's"),
    Case("hidden-beyond-memory-compare", CL + " --variants-file {tmp}/big.toml --variants big",
         "more than this machine's", setup=_file("big.toml", '[[variant]]\nname = "big"\nhidden_units = [10000000]\n')),
    Case("variants-file-random-bytes", "variants --file {tmp}/random.toml", "larger than 1 MiB", setup=_random_bytes),
    Case("variants-file-random-bytes-compare", C + " --variants-file {tmp}/random.toml", "larger than 1 MiB",
         setup=_random_bytes),
    Case("variants-file-not-utf8", "variants --file {tmp}/small.toml", "is not UTF-8 text", setup=_random_small),
    Case("variants-file-not-utf8-compare", C + " --variants-file {tmp}/small.toml", "is not UTF-8 text",
         setup=_random_small),
    Case("variants-file-huge-valid", "variants --file {tmp}/huge.toml", "larger than 1 MiB", setup=_huge_valid_toml),
    Case("record-nested-deep-report", "report {tmp}/old", "holds no usable run records", setup=_deep_record),
    Case("record-truncated-report", "report {tmp}/old", "holds no usable run records",
         setup=_truncated_record),
    Case("devices-3-on-cpu", T + " --devices 3", "devices=3 on CPU needs --strategy ddp", skip=_cpu_only),
    Case("devices-3-on-cpu-compare", CL + " --devices 3 --accelerator cpu", "devices=3 on CPU needs --strategy ddp"),
    Case("precision-16-mixed-cpu", T + " --precision 16-mixed --accelerator cpu", "16-mixed needs a CUDA GPU"),
    Case("precision-16-mixed-cpu-compare", CL + " --precision 16-mixed --accelerator cpu", "16-mixed needs a CUDA GPU"),
    Case("epochs-huge", T + " --epochs 99999999999999999999", "epochs must be an integer from 1 to 100,000"),
    Case("epochs-huge-compare", C + " --epochs 99999999999999999999", "epochs must be an integer from 1 to 100,000"),
    Case("epochs-one-over", T + " --epochs 100001", "epochs must be an integer from 1 to 100,000"),
    Case("data-info-dir-as-file", "data info --data-dir {tmp}/data", "is a directory, not a MedMNIST .npz file",
         setup=_dir_as_data),
    Case("train-dir-as-data", "train -f lightning --data-dir {tmp}/data --runs-dir {runs}",
         "is a directory, not a MedMNIST .npz file", setup=_dir_as_data),
    Case("compare-dir-as-data", "compare --data-dir {tmp}/data --runs-dir {runs}",
         "is a directory, not a MedMNIST .npz file", setup=_dir_as_data),
    Case("accelerator-gpu-missing", T + " --accelerator gpu", "torch sees no CUDA GPU", skip=_cpu_only),
    Case("accelerator-gpu-missing-compare", CL + " --accelerator gpu", "torch sees no CUDA GPU", skip=_cpu_only),
    Case("accelerator-mps-missing", T + " --accelerator mps", "no Apple MPS device",
         skip=lambda: "MPS is present" if _has_mps() else None),
    Case("mlflow-uri-proc", T + " --mlflow-uri /proc/x", "MLflow store", skip=_needs("mlflow")),
    Case("mlflow-uri-proc-compare", C + " --mlflow-uri /proc/x", "MLflow store", skip=_needs("mlflow")),
    Case("train-runs-dir-is-file", "train -f lightning --data-dir {data} --runs-dir {tmp}/afile.txt",
         "afile.txt is a file, not a folder", setup=_file("afile.txt", "keep me")),
    Case("train-runs-dir-under-file", "train -f lightning --data-dir {data} --runs-dir {tmp}/afile.txt/runs",
         "afile.txt is a file, not a folder", setup=_file("afile.txt", "keep me")),
    Case("compare-runs-dir-is-file", "compare --data-dir {data} --runs-dir {tmp}/afile.txt",
         "afile.txt is a file, not a folder", setup=_file("afile.txt", "keep me")),
    Case("lr-inf", T + " --lr inf", "learning rate must be a positive, finite number"),
    Case("pickled-object-array", "train -f lightning --data-dir {tmp}/data --runs-dir {runs}",
         "holds pickled Python objects", setup=_pickled_npz),
    Case("pickled-object-array-info", "data info --data-dir {tmp}/data", "holds pickled Python objects",
         setup=_pickled_npz),
    # -- train: every option's bad values --
    Case("framework-unknown", T.replace("lightning", "pytorch"), "'pytorch' is not one of"),
    Case("framework-bad-backend", T.replace("lightning", "keras[mxnet]"), "'keras[mxnet]' is not one of"),
    Case("variant-unknown", T + " --variant nope", "unknown variant 'nope'"),
    Case("optimizer-unknown", T + " --optimizer adamz", "'adamz' is not one of"),
    Case("lr-negative", T + " --lr -0.1", "learning rate must be a positive, finite number"),
    Case("lr-zero", T + " --lr 0", "learning rate must be a positive, finite number"),
    Case("lr-nan", T + " --lr nan", "learning rate must be a positive, finite number"),
    Case("lr-text", T + " --lr fast", "Invalid value for '--lr'"),
    Case("momentum-one", T + " --optimizer sgd --momentum 1", "momentum must be in [0, 1)"),
    Case("momentum-negative", T + " --optimizer sgd --momentum -0.5", "momentum must be in [0, 1)"),
    Case("momentum-nan", T + " --optimizer sgd --momentum nan", "momentum must be in [0, 1)"),
    Case("beta1-one", T + " --beta1 1", "beta_1 must be in [0, 1)"),
    Case("beta2-negative", T + " --beta2 -0.1", "beta_2 must be in [0, 1)"),
    Case("rho-above-one", T + " --optimizer rmsprop --rho 1.5", "rho must be in [0, 1)"),
    Case("epsilon-negative", T + " --epsilon -1", "epsilon must be a non-negative number"),
    Case("epsilon-inf", T + " --epsilon inf", "epsilon must be a non-negative number"),
    Case("weight-decay-negative", T + " --weight-decay -1", "weight_decay must be a finite number >= 0"),
    Case("weight-decay-inf", T + " --weight-decay inf", "weight_decay must be a finite number >= 0"),
    Case("weight-decay-nan", T + " --weight-decay nan", "weight_decay must be a finite number >= 0"),
    Case("initial-accumulator-negative", T + " --optimizer adagrad --initial-accumulator -1",
         "initial_accumulator_value must be a finite number >= 0"),
    Case("initial-accumulator-inf", T + " --optimizer adagrad --initial-accumulator inf",
         "initial_accumulator_value must be a finite number >= 0"),
    Case("semantics-unknown", T + " --optimizer-semantics jax", "'jax' is not one of"),
    Case("hidden-empty", T + " --hidden ,", "at least one layer"),
    Case("hidden-text", T + " --hidden 512,abc", "comma-separated integers"),
    Case("hidden-zero", T + " --hidden 0", "hidden units must be positive integers"),
    Case("hidden-negative", T + " --hidden 512,-1", "hidden units must be positive integers"),
    Case("hidden-activation-unknown", T + " --hidden-activation swishy", "'swishy' is not one of"),
    Case("output-activation-unknown", T + " --output-activation relu", "'relu' is not one of"),
    Case("loss-unknown", T + " --loss mse", "'mse' is not one of"),
    Case("epochs-zero", T + " --epochs 0", "epochs must be an integer from 1 to 100,000"),
    Case("epochs-negative", T + " --epochs -3", "epochs must be an integer from 1 to 100,000"),
    Case("epochs-text", T + " --epochs many", "Invalid value for '--epochs'"),
    Case("batch-size-zero", T + " --batch-size 0", "batch size must be >= 1"),
    Case("batch-size-negative", T + " --batch-size -8", "batch size must be >= 1"),
    Case("seed-negative", T + " --seed -1", "seed must be an integer from 0 to 4294967295"),
    Case("seed-too-big", T + " --seed 4294967296", "seed must be an integer from 0 to 4294967295"),
    Case("val-mode-unknown", T + " --val-mode kfold", "'kfold' is not one of"),
    Case("init-unknown", T + " --init he", "'he' is not one of"),
    Case("shuffle-unknown", T + " --shuffle sometimes", "'sometimes' is not one of"),
    Case("dataset-unknown", T + " --dataset catmnist", "catmnist"),
    Case("size-unknown", T + " --size 32", "image size"),
    Case("accelerator-unknown", T + " --accelerator tpu", "'tpu' is not one of"),
    Case("devices-zero", T + " --devices 0", "devices and num_nodes must be >= 1"),
    Case("precision-unknown", T + " --precision 64", "'64' is not one of"),
    Case("threads-negative", T + " --threads -1", "threads must be >= 0"),
    Case("steps-per-execution-negative", T + " --steps-per-execution -1", "steps_per_execution must be >= 0"),
    Case("cuda-graphs-on-cpu", T + " --accelerator cpu --cuda-graphs", "CUDA graphs need a CUDA accelerator"),
    Case("strategy-unknown", T + " --strategy teleport", "unknown Lightning strategy 'teleport'"),
    Case("train-no-framework", "train --data-dir {data} --runs-dir {runs}", "Missing option '--framework'"),
    Case("train-unknown-option", T + " --learning-rate 0.1", "No such option: --learning-rate"),
    Case("train-data-not-zip", "train -f lightning --data-dir {tmp}/data --runs-dir {runs}", "not a zip archive",
         setup=_not_zip),
    Case("train-labels-out-of-range", "train -f lightning --data-dir {tmp}/data --runs-dir {runs}",
         "train_labels range over", setup=_bad_labels),
    Case("train-multilabel-one-column", "train -f lightning --dataset chestmnist --data-dir {tmp}/data --runs-dir {runs}",
         "must be (N, 14) label bits for chestmnist", setup=_one_column_chest_labels),
    # -- compare --
    Case("compare-seeds-text", C + " --seeds a,b", "seeds must be comma-separated integers"),
    Case("compare-seeds-empty", C + " --seeds ,", "seeds must list at least one value"),
    Case("compare-seeds-negative", C + " --seeds -1", "seeds must be integers from 0 to 4294967295"),
    Case("compare-seeds-too-big", C + " --seeds 4294967296", "seeds must be integers from 0 to 4294967295"),
    Case("compare-variant-unknown", C + " --variants baseline,bogus", "unknown variant 'bogus'"),
    Case("compare-variants-none", C + " --variants ,", "no variants selected"),
    Case("compare-framework-unknown", C + " --frameworks jax", "unknown framework"),
    Case("compare-jobs-zero", C + " --jobs 0", "--jobs must be >= 1"),
    Case("compare-jobs-negative", C + " --jobs -2", "--jobs must be >= 1"),
    Case("compare-epochs-zero", C + " --epochs 0", "epochs must be an integer from 1 to 100,000"),
    Case("compare-margin-zero", C + " --margin 0", "--margin"),
    Case("compare-margin-nan", C + " --margin nan", "--margin"),
    Case("compare-margin-inf", C + " --margin inf", "--margin"),
    Case("compare-threads-negative", C + " --threads -1", "threads must be >= 0"),
    Case("compare-devices-zero", C + " --devices 0", "devices and num_nodes must be >= 1"),
    Case("compare-precision-unknown", C + " --precision 8", "'8' is not one of"),
    Case("compare-accelerator-unknown", C + " --accelerator tpu", "'tpu' is not one of"),
    Case("compare-size-unknown", C + " --size 30", "has no size 30"),
    Case("compare-shuffle-unknown", C + " --shuffle random", "'random' is not one of"),
    Case("compare-executor-unknown", C + " --executor slurm", "'slurm' is not one of"),
    Case("compare-steps-negative", C + " --steps-per-execution -4", "steps_per_execution must be >= 0"),
    Case("compare-variants-file-missing", C + " --variants-file {tmp}/nope.toml", "does not exist"),
    Case("compare-variants-file-is-dir", C + " --variants-file {tmp}", "is a directory"),
    Case("compare-variants-file-bad-toml", C + " --variants-file {tmp}/bad.toml", "not valid TOML",
         setup=_file("bad.toml", "[[variant]\nname = \n")),
    Case("compare-variants-file-unknown-field", C + " --variants-file {tmp}/u.toml", "unknown field 'lr'",
         setup=_file("u.toml", '[[variant]]\nname = "x"\nlr = 0.1\n')),
    Case("compare-variants-file-seed-field", C + " --variants-file {tmp}/s.toml", "cannot be set per variant",
         setup=_file("s.toml", '[[variant]]\nname = "x"\nseed = 3\n')),
    Case("compare-variants-file-duplicate-name", C + " --variants-file {tmp}/d.toml", "duplicate name",
         setup=_file("d.toml", '[[variant]]\nname = "x"\nepochs = 2\n[[variant]]\nname = "x"\nepochs = 3\n')),
    Case("compare-variants-file-registry-name", C + " --variants-file {tmp}/r.toml", "already a registry variant",
         setup=_file("r.toml", '[[variant]]\nname = "baseline"\nepochs = 2\n')),
    Case("compare-variants-file-wrong-type", C + " --variants-file {tmp}/w.toml", "must be an integer",
         setup=_file("w.toml", '[[variant]]\nname = "x"\nepochs = "ten"\n')),
    Case("compare-data-not-zip", "compare --data-dir {tmp}/data --runs-dir {runs}", "not a zip archive",
         setup=_not_zip),
    Case("compare-labels-out-of-range", "compare --data-dir {tmp}/data --runs-dir {runs}", "train_labels range over",
         setup=_bad_labels),
    Case("compare-unknown-option", C + " --seed 0", "No such option: --seed"),
    # -- report --
    Case("report-missing", "report {tmp}/nowhere", "does not exist"),
    Case("report-on-file", "report {tmp}/afile.txt", "not a directory", setup=_file("afile.txt", "x")),
    Case("report-empty", "report {tmp}", "holds no run records"),
    Case("report-margin-zero", "report {tmp} --margin 0", "--margin"),
    # -- variants --
    Case("variants-group-unknown", "variants nonsense", "nonsense"),
    Case("variants-file-missing", "variants --file {tmp}/nope.toml", "does not exist"),
    Case("variants-file-is-dir", "variants --file {tmp}", "is a directory"),
    Case("variants-file-empty", "variants --file {tmp}/empty.toml", "no [[variant]] entries",
         setup=_file("empty.toml", "")),
    Case("variants-file-other-table", "variants --file {tmp}/o.toml", "expected only [[variant]] tables",
         setup=_file("o.toml", "[model]\nx = 1\n")),
    Case("variants-unknown-option", "variants --bogus", "No such option: --bogus"),
    # -- data --
    Case("data-info-dataset-unknown", "data info --dataset catmnist --data-dir {tmp}", "catmnist"),
    Case("data-info-size-unknown", "data info --size 30 --data-dir {tmp}", "has no size 30"),
    Case("data-info-not-zip", "data info --data-dir {tmp}/data", "not a zip archive", setup=_not_zip),
    Case("data-synth-scale-zero", "data synth --out {tmp}/s --scale 0", "scale"),
    Case("data-synth-scale-negative", "data synth --out {tmp}/s --scale -1", "scale"),
    Case("data-synth-scale-nan", "data synth --out {tmp}/s --scale nan", "scale"),
    Case("data-synth-size-unknown", "data synth --out {tmp}/s --size 30", "has no size 30"),
    Case("data-synth-out-is-file", "data synth --out {tmp}/afile.txt --scale 0.005", "afile.txt",
         setup=_file("afile.txt", "x")),
    Case("data-unknown-command", "data fetch", "No such command 'fetch'"),
    Case("unknown-command", "fit", "No such command 'fit'"),
]


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else b"<dir>")
            for p in sorted(folder.rglob("*"))}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_input(case: Case, tmp_path: Path, tiny_synth_dir: Path) -> None:
    reason = case.skip() if case.skip else None
    if reason:
        pytest.skip(reason)
    tmp = tmp_path / "case"
    tmp.mkdir()
    if case.setup:
        case.setup(tmp)
    before = _snapshot(tmp)
    argv = [part.format(data=tiny_synth_dir, tmp=tmp, runs=tmp / "runs") for part in case.argv.split()]
    result = runner.invoke(app, argv)
    assert result.exit_code == case.code, result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    errors = result.stderr.splitlines()
    assert len(errors) == 1 and errors[0].startswith("error: "), result.output  # first line, one line
    assert case.fragment in errors[0], errors[0]
    assert result.stdout.strip() == "" or case.argv.startswith("data info"), result.stdout
    assert _snapshot(tmp) == before, "the command wrote or removed something"


def test_the_table_covers_every_command() -> None:
    commands = {c.argv.split()[0] for c in CASES}
    assert {"train", "compare", "report", "variants", "data"} <= commands
    assert len(CASES) == len({c.id for c in CASES}) >= 87


# --- what a table row cannot express: runs that exist, counted once ---------------------------------------

def _fake_fit(config, runtime, data, weights, run_dir, on_epoch=None):
    """A stand-in for an adapter's fit (no framework): perfect logits, one epoch of history."""
    from ftmed_core.runner import FitResult

    logits = np.eye(data.n_classes, dtype=np.float32)[data.y_test]
    history = {k: [0.5] for k in ("train_loss", "train_acc", "val_loss", "val_acc", "epoch_seconds")}
    return FitResult(history, logits, 0.1, {})


def _two_seeds(runs: Path, data_dir: Path) -> list:
    from ftmed_core.config import ExperimentConfig
    from ftmed_core.runner import run_experiment

    return [run_experiment("keras", _fake_fit, ExperimentConfig(data_dir=str(data_dir), epochs=1, seed=seed),
                           runs_dir=runs) for seed in (0, 1)]


def test_a_copied_run_folder_is_counted_once(tmp_path, tiny_synth_dir):
    import shutil

    runs = tmp_path / "runs"
    records = _two_seeds(runs, tiny_synth_dir)
    shutil.copytree(runs / records[1].run_key, runs / "backup-of-seed-1")
    result = runner.invoke(app, ["report", str(runs)])
    assert result.exit_code == 1  # something was left out, and said so
    assert "backup-of-seed-1" in result.stderr and f"copies run {records[1].run_key}" in result.stderr
    row = json.loads((runs / "comparison.json").read_text())["rows"][0]["frameworks"]["keras"]
    assert row["n_finished"] == 2 and sorted(row["seeds"]) == [0, 1]
    assert "(n=2)" in result.stdout and "(n=3)" not in result.stdout


def test_a_deeply_nested_record_is_moved_aside_and_the_run_redone(tmp_path, tiny_synth_dir, capsys):
    runs = tmp_path / "runs"
    first = _two_seeds(runs, tiny_synth_dir)[0]
    (runs / first.run_key / "record.json").write_text("[" * 100_000 + "]" * 100_000)
    again = _two_seeds(runs, tiny_synth_dir)[0]
    assert again.finished and again.run_key == first.run_key
    assert "JSON nested too deeply" in capsys.readouterr().err
    assert [p.name for p in runs.iterdir() if ".damaged-" in p.name]


def test_the_api_refuses_what_would_count_one_run_twice(tmp_path, tiny_synth_dir):
    import ftmed
    from ftmed.grid import plan
    from ftmed_core.config import ExperimentConfig
    from ftmed_core.variants import Variant

    with pytest.raises(ftmed.ConfigError, match="seed 2 is listed more than once"):
        ftmed.compare(seeds=[2, 0, 2], data_dir=tiny_synth_dir, runs_dir=tmp_path / "runs", quiet=True)
    twins = [Variant(ExperimentConfig(name=name, hidden_units=(64,)), "test", "python") for name in ("foo", "bar")]
    with pytest.raises(ftmed.ConfigError, match="variants 'foo' and 'bar' have the same configuration"):
        plan(twins, ["lightning"], [0], data_md5="0" * 32, precision="32")
    different = [twins[0], Variant(ExperimentConfig(name="bar", hidden_units=(32,)), "test", "python")]
    assert len(plan(different, ["lightning", "keras"], [0, 1], data_md5="0" * 32, precision="32")) == 8
    assert not (tmp_path / "runs").exists()


def test_model_size_is_checked_against_memory_before_allocating():
    from ftmed_core.config import ConfigError, ExperimentConfig, check_model_fits, parameter_count

    baseline = ExperimentConfig()
    assert parameter_count(baseline.hidden_units, 2352, 9) == 2353 * 512 + 513 * 256 + 257 * 128 + 129 * 9
    check_model_fits(baseline, 2352, 9, memory=1 << 30)  # ~22 MiB to train: fits in 1 GiB
    with pytest.raises(ConfigError, match="hidden units 512-256-128 on 2352 inputs need about"):
        check_model_fits(baseline, 2352, 9, memory=1 << 20)
