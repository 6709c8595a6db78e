"""Your own variants from a TOML file: parsed onto the baseline, every mistake one line, and three new
variants through `ftmed compare`, `ftmed report` and `ftmed parity`."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from cli.main import app
from ftmed_core.errors import ConfigError
from ftmed_core.user_variants import load_variants_file, select
from ftmed_core.variants import BASELINE

runner = CliRunner()

THREE = '''
[[variant]]
name = "tanh-3e-4"
purpose = "tanh hidden layers with a smaller lr"
hidden_activation = "tanh"
learning_rate = 3e-4

[[variant]]
name = "narrow-sgd"
hidden_units = [128, 64]
optimizer = "sgd"
learning_rate = 0.05
momentum = 0.9

[[variant]]
name = "slow-small-batch"
base = "lr-1e-4"
batch_size = 64
'''


def write(tmp_path, text: str, name: str = "mine.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def one_line_error(result) -> str:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert "Traceback" not in result.output
    return lines[0]


def test_fields_apply_on_top_of_the_baseline_or_a_named_base(tmp_path):
    tanh, sgd, small = load_variants_file(write(tmp_path, THREE))
    assert tanh.config.hidden_activation == "tanh" and tanh.config.optimizer.learning_rate == 3e-4
    assert tanh.config.optimizer.name == "adam" and tanh.purpose == "tanh hidden layers with a smaller lr"
    # optimizer = "sgd" starts from SGD's Keras defaults, then the optimizer fields apply
    assert (sgd.config.optimizer.name, sgd.config.optimizer.learning_rate, sgd.config.optimizer.momentum) == \
        ("sgd", 0.05, 0.9)
    assert sgd.config.hidden_units == (128, 64) and sgd.config.output_activation == BASELINE.output_activation
    assert small.config.optimizer.learning_rate == 1e-4 and small.config.batch_size == 64
    assert {v.group for v in (tanh, sgd, small)} == {"file"}
    assert [v.name for v in select(None, [tanh, sgd, small])] == ["baseline", "tanh-3e-4", "narrow-sgd",
                                                                    "slow-small-batch"]
    assert [v.name for v in select("study,narrow-sgd", [sgd])][-1] == "narrow-sgd"


@pytest.mark.parametrize("body, fragment", [
    ('[[variant]]\nname = "x"\nlr = 0.1\n', "variant 'x': unknown field 'lr'"),
    ('[[variant]]\nname = "x"\nepochs = "2"\n', "variant 'x': field 'epochs' must be an integer, got a string"),
    ('[[variant]]\nname = "x"\nhidden_units = [64, "a"]\n', "field 'hidden_units' must be a list of integers"),
    ('[[variant]]\nname = "x"\nnesterov = 1\n', "field 'nesterov' must be true or false"),
    ('[[variant]]\nname = "x"\n[[variant]]\nname = "x"\nbatch_size = 8\n', "variant 'x': duplicate name"),
    ('[[variant]]\nname = "baseline"\n', "variant 'baseline': the name is already a registry variant"),
    ('[[variant]]\nname = "x"\nlearning_rate = -1.0\n', "bad value: learning rate must be a positive, finite number"),
    ('[[variant]]\nname = "x"\nhidden_activation = "relu6"\n', "bad value: unknown hidden activation 'relu6'"),
    ('[[variant]]\nname = "x"\nseed = 3\n', "field 'seed' cannot be set per variant"),
    ('[[variant]]\nname = "x"\nbase = "nope"\n', "field 'base' must name a registry variant"),
    ('[[variant]]\nlearning_rate = 0.1\n', "variant #1: needs name"),
    ('[[variant]\nname = "x"\n', "not valid TOML"),
    ('name = "x"\n', "expected only [[variant]] tables"),
])
def test_each_mistake_is_one_line(tmp_path, body, fragment):
    path = write(tmp_path, body)
    line = one_line_error(invoke("variants", "--file", path))
    assert fragment in line and str(path) in line
    with pytest.raises(ConfigError, match="^" + str(path)):
        load_variants_file(path)


def test_every_mistake_in_a_file_gets_its_own_line(tmp_path):
    path = write(tmp_path, '[[variant]]\nname = "a"\nlr = 1\n[[variant]]\nname = "b"\nepochs = 1.5\n')
    result = invoke("variants", "--file", path)
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 2 and "'a': unknown field 'lr'" in lines[0] and "'b': field 'epochs'" in lines[1]


def test_missing_file_and_unknown_selection_are_one_line(tmp_path):
    assert "does not exist" in one_line_error(invoke("variants", "--file", tmp_path / "none.toml"))
    path = write(tmp_path, THREE)
    line = one_line_error(invoke("compare", "--variants-file", path, "--variants", "bogus",
                                 "--runs-dir", tmp_path / "runs"))
    assert "unknown variant 'bogus'" in line and "tanh-3e-4" in line


def test_variants_lists_the_files_variants(tmp_path):
    result = invoke("variants", "--file", write(tmp_path, THREE))
    assert result.exit_code == 0, result.output
    for name in ("tanh-3e-4", "narrow-sgd", "slow-small-batch"):
        assert name in result.output
    assert "sigmoid-output" not in result.output


@pytest.mark.slow
def test_three_new_variants_through_compare_report_and_parity(tiny_synth_dir, tmp_path):
    path = write(tmp_path, THREE)
    runs = tmp_path / "runs"
    result = invoke("compare", "--variants-file", path, "--variants", "file", "--frameworks", "lightning",
                    "--seeds", "0", "--epochs", "1", "--data-dir", tiny_synth_dir, "--runs-dir", runs, "--mlflow")
    assert result.exit_code == 0, result.output
    # --mlflow: each worker logged its run, test metrics included, to the default store in the runs folder
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{runs / 'mlflow.db'}")
    logged = client.search_runs([client.get_experiment_by_name("ftmed").experiment_id])
    assert sorted(r.data.tags["ftmed.variant"] for r in logged) == ["narrow-sgd", "slow-small-batch", "tanh-3e-4"]
    assert all(r.info.status == "FINISHED" and 0 <= r.data.metrics["test_accuracy"] <= 1 for r in logged)
    table = json.loads((runs / "comparison.json").read_text())
    rows = {row["variant"]: row for row in table["rows"]}
    assert set(rows) == {"tanh-3e-4", "narrow-sgd", "slow-small-batch"}
    assert "sgd(lr=0.05, momentum=0.9)" in rows["narrow-sgd"]["changes"]
    assert all(row["frameworks"]["lightning"]["n_finished"] == 1 for row in rows.values())

    (runs / "comparison.md").unlink()
    result = invoke("report", runs)
    assert result.exit_code == 0, result.output
    assert "narrow-sgd" in (runs / "comparison.md").read_text()

    out = tmp_path / "parity"
    result = invoke("parity", "--layers", "1,7", "--variants-file", path, "--out", out)
    assert result.exit_code == 0, result.output
    checks = json.loads((out / "parity.json").read_text())["checks"]
    mine = [c for c in checks if any(name in c["subject"] for name in ("tanh-3e-4", "narrow-sgd", "slow-small-batch"))]
    assert {c["layer"] for c in mine} == {1, 7}
    assert sum(c["layer"] == 1 for c in mine) == 3 and all(c["passed"] is not False for c in mine)
    assert sum(c["layer"] == 7 and c["passed"] is True for c in mine) == 6  # two asserted rows per variant
