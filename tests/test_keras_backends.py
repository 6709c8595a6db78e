"""Keras on the TensorFlow, JAX and torch backends against Lightning: parity layers 1-7 per backend, the loss
each backend computes (the sigmoid-output difference, measured and pinned), framework labels, and
`ftmed compare` with one column per backend.

The per-backend parity rows are the parity suite's own checks declared for each backend
(`ftmed_parity.suite.layer_checks(layer, (backend,))`, the rows `ftmed parity --keras-backends` prints):
Keras's numbers come from `ftmed_parity.keras_side` in a child process per backend (Keras fixes its backend
at import; TensorFlow's too, so this process stays TensorFlow-free), Lightning's are computed here with the
loss mode that matches the backend (`ftmed_core.frameworks.matching_lightning_loss`); tolerances and their
reasons are declared on the checks. A backend whose library is not installed is skipped with the reason.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import textwrap

import pytest

from ftmed_parity.probe import backend_available
from ftmed_core.errors import ConfigError
from ftmed_core.frameworks import (
    FRAMEWORKS, canonical, effective_loss, keras_backend, keras_label, matching_lightning_loss,
    parse_frameworks, slug,
)

torch = pytest.importorskip("torch")

BACKENDS = [pytest.param(b, marks=pytest.mark.skipif(not backend_available(b), reason=f"{b} is not installed"))
            for b in ("tensorflow", "jax", "torch")]


# ------------------------------------------------------------------------------------ framework labels


def test_framework_labels_loss_formulas_and_run_key_spelling():
    assert FRAMEWORKS == ("lightning", "keras", "keras[jax]", "keras[torch]")
    assert parse_frameworks(" lightning, keras[JAX],keras[tensorflow],keras ") == ["lightning", "keras[jax]", "keras"]
    assert [keras_backend(f) for f in FRAMEWORKS[1:]] == ["tensorflow", "jax", "torch"]
    assert keras_label("torch") == "keras[torch]" and canonical("keras[tf]") == "keras"
    assert [slug(f) for f in FRAMEWORKS] == ["lightning", "keras", "keras-jax", "keras-torch"]
    for bad in ("keras[numpy]", "tensorflow", ""):
        with pytest.raises(ConfigError, match="choose"):
            parse_frameworks(bad)
    # What each framework computes for the config's loss "keras" (measured below, per backend).
    assert [effective_loss(f, "keras") for f in FRAMEWORKS] == ["keras", "keras", "probability", "probability"]
    assert {effective_loss(f, "probability") for f in FRAMEWORKS} == {"probability"}
    assert matching_lightning_loss("keras[jax]", "keras") == "probability"


@pytest.mark.slow
def test_a_process_with_keras_on_another_backend_is_refused_with_one_line():
    script = textwrap.dedent("""
        import os
        os.environ["KERAS_BACKEND"] = "torch"
        import keras
        from ftmed_core.frameworks import prepare_keras_backend
        from ftmed_core.errors import ConfigError
        prepare_keras_backend("torch")  # the loaded backend: fine
        try:
            prepare_keras_backend("jax")
        except ConfigError as exc:
            print("refused:", exc)
        os.environ["KERAS_BACKEND"] = "jax"
        try:
            import keras_ref
        except ImportError as exc:
            print("import:", exc)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert "refused: keras is already imported in this process with the 'torch' backend" in out.stdout, out.stderr[-2000:]
    assert "keras[jax] in a fresh process" in out.stdout
    assert "import: keras was already imported with the 'torch' backend, but KERAS_BACKEND='jax'" in out.stdout


@pytest.mark.slow
def test_ftmed_train_in_a_process_with_keras_on_tensorflow_refuses_another_backend(tiny_synth_dir):
    """`ftmed train -f keras[torch]` called in a process that already imported keras on TensorFlow (the CLI's
    Python entry, e.g. from a notebook): one line, non-zero exit, no traceback."""
    script = textwrap.dedent(f"""
        import keras_ref
        from typer.testing import CliRunner
        from cli.main import app
        result = CliRunner().invoke(app, ["train", "-f", "keras[torch]", "--epochs", "1",
                                          "--data-dir", {str(tiny_synth_dir)!r}])
        print("exit", result.exit_code)
        print(result.output)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    lines = [line for line in out.stdout.splitlines() if line.strip()]
    assert lines[0] != "exit 0" and lines[0].startswith("exit"), out.stdout + out.stderr[-2000:]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and "already imported in this process with the 'tensorflow' backend" in errors[0]
    assert "Traceback" not in out.stdout


@pytest.mark.slow
@pytest.mark.skipif(not backend_available("jax"), reason="jax is not installed")
def test_keras_ref_on_jax_imports_no_tensorflow():
    script = ("import sys, keras_ref\nfrom keras_ref._backend import BACKEND, FRAMEWORK\n"
              "print(BACKEND, FRAMEWORK, 'tensorflow' in sys.modules)")
    env = {**__import__("os").environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, env=env)
    assert out.stdout.split() == ["jax", "keras[jax]", "False"], out.stderr[-2000:]


@pytest.mark.slow
@pytest.mark.skipif(not backend_available("jax"), reason="jax is not installed")
def test_jax_steps_per_execution_16_gives_the_weights_of_1_and_repeats_bitwise(tiny_synth_dir):
    """keras_ref runs 16 jitted steps per call on JAX (keras_ref/backend/jax.py): the same weights as one step
    per call, bitwise, over 2 epochs of the core's batches; and the same run twice is bitwise the same."""
    script = textwrap.dedent(f"""
        import numpy as np
        from dataclasses import replace
        from ftmed_core.frameworks import prepare_keras_backend
        prepare_keras_backend("jax", "cpu", 1)
        from ftmed_core.data import load_experiment_data
        from ftmed_core.protocol import initial_weights
        from ftmed_core.variants import BASELINE
        from keras_ref.backend.common import CoreBatchSequence
        from keras_ref.losses import compile_model
        from keras_ref.model import build_mlp, get_weights
        config = replace(BASELINE, data_dir={str(tiny_synth_dir)!r}, epochs=2)
        data = load_experiment_data(config, allow_download=False)
        def run(spe):
            net = build_mlp(config, data.input_dim, data.n_classes, initial_weights(config, data.input_dim, data.n_classes))
            compile_model(net, config, steps_per_execution=spe)
            batches = CoreBatchSequence(data.train, data.n_classes, config.batch_size, config.seed, config.shuffle)
            net.fit(batches, epochs=2, shuffle=False, verbose=0, callbacks=[batches.callback])
            return [a for pair in get_weights(net) for a in pair]
        a, b, c = run(16), run(1), run(16)
        print(max(float(np.abs(x - y).max()) for x, y in zip(a, b)), max(float(np.abs(x - y).max()) for x, y in zip(a, c)),
              max(float(np.abs(x - w).max()) for x, w in zip(a, [w for p in initial_weights(config, data.input_dim, data.n_classes) for w in p])))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    spe_gap, repeat_gap, moved = map(float, out.stdout.split()[-3:])
    assert spe_gap == 0.0 and repeat_gap == 0.0 and moved > 1e-3


# ------------------------------------------------------------------------------- parity, per backend


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_parity_layers_1_to_7_match_lightning_in_the_matching_loss_mode(backend, tmp_path):
    """Every asserted row of layers 1-7 passes on `backend` (Lightning in the loss mode that matches it), and
    the sigmoid-output difference is pinned: the backend's loss is the formula `effective_loss` names
    (loss.pin), and its gap to TensorFlow's formula -- at the loss and at the first training step -- is
    > 1e-3 on JAX and torch and rounding on TensorFlow."""
    from ftmed_parity import run_checks
    from ftmed_parity.sides import port_sides
    from ftmed_parity.suite import layer_checks

    # port_sides(): no Keras in this process; `Sides.keras(backend)` runs each backend (TF too) in a child.
    rows = run_checks([c for layer in range(1, 8) for c in layer_checks(layer, (backend,))], port_sides(), tmp_path)
    bad = [f"{r.verdict} {r.check_id} [{r.subject}] {r.value:.3g} vs {r.tolerance}: {r.note}"
           for r in rows if r.failed or r.verdict == "ERROR"]
    assert not bad, "\n".join(bad)
    by_id = {(r.check_id.split("@")[0], r.subject): r for r in rows}
    assert {layer for layer in range(1, 8)} == {r.layer for r in rows}
    assert by_id[("loss.pin", "output=sigmoid")].passed
    differs = backend != "tensorflow"
    assert effective_loss(keras_label(backend), "keras") == ("probability" if differs else "keras")
    sigmoid_gap = by_id[("loss.formula", "sigmoid, loss=keras")].value
    assert (sigmoid_gap > 1e-3) if differs else (sigmoid_gap < 2e-6), sigmoid_gap
    assert by_id[("loss.formula", "softmax, loss=keras")].value < 2e-6  # the same number on softmax
    if differs:  # trained on the probability formula: step 1 is > 1e-3 from TensorFlow's formula
        assert by_id[("loop.vs-tf", "sigmoid-output")].value > 1e-3
        assert by_id[("loop.step1", "sigmoid-output")].passed
    else:
        assert ("loop.vs-tf", "sigmoid-output") not in by_id


# --------------------------------------------------------------------------- compare: one table, 1 epoch


@pytest.mark.slow
@pytest.mark.skipif(not all(backend_available(b) for b in ("tensorflow", "jax", "torch")),
                    reason="needs tensorflow, jax and torch")
def test_compare_with_every_backend_gives_one_table(tiny_synth_dir, tmp_path):
    """Each backend trains 1 epoch in its own worker process; one table with a column per backend and a
    Lightning difference per Keras column; each record names its backend and the loss formula it used."""
    from typer.testing import CliRunner

    from cli.main import app
    from ftmed_core.records import list_records

    runs = tmp_path / "runs"
    result = CliRunner().invoke(app, ["compare", "--variants", "baseline", "--seeds", "0",
                                      "--epochs", "1", "--frameworks", "lightning,keras,keras[jax],keras[torch]",
                                      "--data-dir", str(tiny_synth_dir), "--runs-dir", str(runs), "--jobs", "2"])
    assert result.exit_code == 0, result.output
    records = {(r.framework, r.config["name"]): r for r in list_records(runs)}
    assert len(records) == 4 and all(r.finished for r in records.values()), [r.error for r in records.values()]
    for (framework, variant), record in records.items():
        assert record.run_key.startswith(slug(framework) + "-")
        if framework != "lightning":
            assert record.environment["keras_backend"] == keras_backend(framework)
            assert record.environment["keras_backend"] != "tensorflow" or "tensorflow" in record.environment
        assert record.environment["loss_formula"] == effective_loss(framework, record.config["loss"])
    md = (runs / "comparison.md").read_text()
    header = next(line for line in md.splitlines() if line.startswith("| variant"))
    for column in ("keras[jax] acc %", "keras[torch] acc %", "Δacc L−K [95% CI]", "Δacc L−K[jax] [95% CI]",
                   "equivalence L−K[jax]", "Δacc L−K[torch] [95% CI]"):
        assert column in header, column
    rows = list(csv.DictReader(open(runs / "comparison.csv")))
    assert [r["variant"] for r in rows] == ["baseline"]
    assert rows[0]["keras[jax]_n"] == rows[0]["keras[torch]_n"] == "1" and rows[0]["keras[jax]_diff"]
    payload = json.loads((runs / "comparison.json").read_text())
    assert set(payload["rows"][0]["differences"]) == {"keras", "keras[jax]", "keras[torch]"}
