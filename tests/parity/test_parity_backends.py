"""`ftmed parity --keras-backends`: the suite's checks against Keras on JAX / torch (layers 1-7, ids
`check@backend`), the loss formula each backend computes stated per (output, loss) of the registry's
variants, the sigmoid-output difference to TensorFlow shown as a measured, informational row; a backend that
is not installed is one line.

Each backend's Keras runs in a child process (`Sides.keras`, ftmed_parity.probe); layer 4 only here, to
stay fast (tests/test_keras_backends.py runs layers 1-7 on every installed backend).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
from typer.testing import CliRunner

from ftmed_parity import Result
from ftmed_parity.optimizers import WIDER_OPTIMIZERS
from ftmed_parity.probe import backend_available
from ftmed_parity.suite import layer_checks

needs_jax = pytest.mark.skipif(not backend_available("jax"), reason="jax is not installed")


@pytest.mark.slow
@needs_jax
def test_cli_layer_4_on_jax_passes_states_the_formulas_and_imports_no_tensorflow(tmp_path):
    out = tmp_path / "parity"
    script = textwrap.dedent(f"""
        import sys
        from typer.testing import CliRunner
        from cli.main import app
        result = CliRunner().invoke(app, ["parity", "--layers", "4", "--keras-backends", "jax", "--out", {str(out)!r}])
        print(result.stdout)
        print("exit", result.exit_code, "tensorflow imported", "tensorflow" in sys.modules)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert done.stdout.rstrip().endswith("exit 0 tensorflow imported False"), done.stdout + done.stderr[-3000:]
    table = [line for line in done.stdout.splitlines() if str(out) not in line]
    assert max(len(line) for line in table) <= 80
    assert "loss.formula@jax" in done.stdout and "loss.pin@jax" in done.stdout
    payload = json.loads((out / "parity.json").read_text())
    rows = payload["checks"]
    assert payload["passed"] is True and all(r["id"].endswith("@jax") for r in rows)
    assert {r["frameworks"] for r in rows} == {"keras[jax] vs lightning", "keras[jax] vs keras"}
    asserted = [r for r in rows if r["verdict"] != "info"]
    assert len(asserted) == 4 * 2 + 1 and all(r["verdict"] == "pass" for r in asserted)
    formula = {r["subject"]: r for r in rows if r["id"] == "loss.formula@jax"}
    assert set(formula) == {"softmax, loss=keras", "sigmoid, loss=keras", "sigmoid, loss=probability"}
    assert all(r["verdict"] == "info" and r["passed"] is None for r in formula.values())
    # The known difference, measured: JAX computes the probability formula where TensorFlow takes the logits.
    sigmoid = formula["sigmoid, loss=keras"]
    assert sigmoid["value"] > 1e-3 and "'probability' formula" in sigmoid["note"]
    assert "known difference" in sigmoid["note"] and "sigmoid-output" in sigmoid["note"]
    assert formula["softmax, loss=keras"]["value"] < 2e-6 and formula["sigmoid, loss=probability"]["value"] < 2e-6
    assert "| loss.formula@jax | 4 |" in (out / "parity.md").read_text()  # the generated tolerance table


@pytest.mark.slow
@needs_jax
def test_a_jax_loss_row_fails_when_the_port_scales_its_loss():
    """The backend rows can fail: Lightning's loss 0.01 % larger is caught by loss.keras@jax / loss.prob@jax."""
    from ftmed_parity import run_checks
    from ftmed_parity.loss import loss_checks
    from ftmed_parity.sides import port_sides
    from lightning_ft import losses

    scaled = port_sides().with_port(keras_loss=lambda *args: losses.keras_loss(*args) * 1.0001)
    rows = run_checks(loss_checks(keras_backend="jax"), scaled)
    failed = {(r.check_id, r.subject) for r in rows if r.failed}
    assert ("loss.keras@jax", "output=softmax") in failed and ("loss.prob@jax", "output=sigmoid") in failed
    assert not any(r.check_id.startswith(("loss.pin", "loss.formula")) for r in rows if r.failed)


def test_a_backend_that_is_not_installed_is_one_line(tmp_path, monkeypatch):
    from cli.main import app

    monkeypatch.setitem(sys.modules, "jax", None)  # what `import jax` and find_spec see without jax installed
    result = CliRunner().invoke(app, ["parity", "--layers", "4", "--keras-backends", "tensorflow,jax",
                                      "--out", str(tmp_path)])
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert "jax is not installed here" in lines[0] and "Traceback" not in result.output
    assert not (tmp_path / "parity.json").exists()


@pytest.mark.parametrize("value, message", [
    ("numpy", "unknown Keras backend 'numpy'"),
    (",", "selected no backend"),
])
def test_bad_keras_backends_values_are_one_line(tmp_path, value, message):
    from cli.main import app

    result = CliRunner().invoke(app, ["parity", "--layers", "4", "--keras-backends", value, "--out", str(tmp_path)])
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1 and message in lines[0], result.output


@needs_jax
@pytest.mark.parametrize("option, message", [(["--statistical"], "layer 8"),
                                             (["--variants-file", "v.toml"], "--variants-file")])
def test_tensorflow_only_options_without_tensorflow_are_one_line(tmp_path, option, message):
    from cli.main import app

    result = CliRunner().invoke(app, ["parity", *option, "--keras-backends", "jax", "--out", str(tmp_path)])
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1 and message in lines[0], result.output


def test_backend_rows_are_the_suite_checks_with_the_tf_tolerances_and_the_torch_exception():
    tf_ids = {c.id: c.tolerance for layer in range(1, 8) for c in layer_checks(layer)}
    for backend in ("jax", "torch"):
        checks = [c for layer in range(1, 9) for c in layer_checks(layer, (backend,))]
        assert {c.layer for c in checks} == set(range(1, 8))  # no layer 8: it runs on TensorFlow only
        assert all(c.id.endswith(f"@{backend}") and c.frameworks.startswith(f"keras[{backend}] vs ") for c in checks)
        for c in checks:
            base = c.id.split("@")[0]
            if base in tf_ids and base != "opt.keras":
                assert c.tolerance == tf_ids[base], c.id
        opt = {c.id: c for c in checks if c.layer == 6}
        assert opt[f"opt.keras@{backend}"].tolerance == tf_ids["opt.keras"]
        if backend == "torch":
            wide = opt["opt.keras.wide@torch"]
            assert set(wide.subjects) == set(WIDER_OPTIMIZERS["torch"]) == {"adamw", "nadam"}
            assert wide.tolerance.ulps == 32 and "2.5x / 1.1x" in wide.reason
            assert not set(wide.subjects) & set(opt["opt.keras@torch"].subjects)
        else:
            assert list(opt) == ["opt.keras@jax"]
    # The default is today's suite: TensorFlow's rows only.
    assert not [c for layer in range(1, 9) for c in layer_checks(layer) if "@" in c.id]


def test_table_with_the_longest_backend_ids_reads_in_80_columns():
    from cli.parity import text_table

    ids = [c.id for layer in range(1, 8) for c in layer_checks(layer, ("jax", "torch"))]
    rows = [Result(i, 7, "x", "sgd(momentum=0.9, nesterov) and more", 1.5e-7, 2e-6, "pass", "", True, "") for i in ids]
    assert max(len(line) for line in text_table(rows).splitlines()) <= 80


@needs_jax
def test_the_child_process_reports_an_error_in_one_line_and_serves_on():
    """A Keras side on another backend is keras_side's functions in one child process: an exception there
    comes back as ProbeError naming it, and the same process answers the next call."""
    from ftmed_core.variants import BASELINE
    from ftmed_parity.probe import ProbeError, keras_process
    from ftmed_parity.sides import port_sides

    process = keras_process("jax")
    with pytest.raises(ProbeError, match="unknown keras_side function 'build_mlp'"):
        process.call("build_mlp", BASELINE)
    with pytest.raises(ProbeError, match=r"on jax: .*Error"):
        process.call("architecture", BASELINE, 2352)  # n_classes missing
    count, shapes = port_sides().keras("jax").architecture(BASELINE, 2352, 9)
    assert count == sum(int(__import__("numpy").prod(s)) for s in shapes) and shapes[0] == (2352, BASELINE.hidden_units[0])
    assert keras_process("jax") is process
