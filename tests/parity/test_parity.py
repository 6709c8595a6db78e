"""The parity suite: every layer passes, and every layer FAILS when its concern is broken on purpose.

The checks live in the `ftmed_parity` package (each declares its tolerance and the reason for it). A bug is
planted by running the checks against modified sides (`default_sides().with_port(...)`): nothing global is
patched, except torch's own `_foreach_lerp_` in the Nadam test (a rounding change inside torch itself).
Runs both frameworks in this process, 1 thread each.
"""

from __future__ import annotations

import json
import re
from dataclasses import fields, replace

import numpy as np
import pytest
from typer.testing import CliRunner

from ftmed_core.variants import VARIANTS
from ftmed_parity import ERROR, Check, Measurement, Tolerance, run_checks
from ftmed_parity.checks import informational
from ftmed_parity.closed_loop import closed_loop_checks
from ftmed_parity.loss import gradient_checks, loss_checks
from ftmed_parity.optimizers import open_loop_optimizers, optimizer_checks
from ftmed_parity.sides import default_sides, setup_frameworks
from ftmed_parity.statistical import statistical_checks
from ftmed_parity.structure import architecture_checks, forward_checks, weights_checks


@pytest.fixture(scope="module", autouse=True)
def frameworks():
    setup_frameworks()


@pytest.fixture(scope="module")
def sides():
    return default_sides()


def failures(rows):
    return [r for r in rows if r.failed]


def describe(rows) -> str:
    return "\n".join(f"{r.verdict} L{r.layer} {r.check_id} {r.name} [{r.subject}] {r.value:.3g} vs {r.tolerance}: "
                     f"{r.note}" for r in rows)


def assert_all_pass(rows):
    assert rows, "no checks ran"
    assert not failures(rows), describe(failures(rows))


def assert_fails(rows, name_part: str = ""):
    bad = [r for r in failures(rows) if name_part in r.name]
    assert bad, "the mutation went unnoticed:\n" + describe(rows)


# ------------------------------------------------------------------------------------- 1 architecture


def test_layer_1_architecture_every_variant(sides):
    rows = run_checks(architecture_checks(), sides)
    assert {r.subject for r in rows} == set(VARIANTS)
    assert_all_pass(rows)


def test_layer_1_detects_a_different_width(sides):
    from lightning_ft import model

    def one_unit_wider(config, input_dim, n_classes, weights=None):
        wider = (config.hidden_units[0] + 1, *config.hidden_units[1:])
        return model.build_mlp(replace(config, hidden_units=wider), input_dim, n_classes)

    rows = run_checks(architecture_checks(["baseline", "wider-deeper"]), sides.with_port(build_mlp=one_unit_wider))
    assert_fails(rows)


# ------------------------------------------------------------------------------------------ 2 weights


def test_layer_2_weights_round_trip_bit_exact(sides, tmp_path):
    rows = run_checks(weights_checks(), sides, workdir=tmp_path)
    assert len(rows) == 3 and all(r.tolerance == 0.0 for r in rows)
    assert_all_pass(rows)


def test_layer_2_detects_a_forgotten_transpose(sides, tmp_path):
    """The classic import bug: the kernel's numbers poured into `weight` in (in, out) memory order."""
    import torch

    from lightning_ft import model

    def build_without_transpose(config, input_dim, n_classes, weights=None):
        net = model.build_mlp(config, input_dim, n_classes)
        if weights is not None:
            with torch.no_grad():
                for layer, (kernel, bias) in zip(model.linear_layers(net), weights):
                    layer.weight.copy_(torch.from_numpy(np.ascontiguousarray(kernel).reshape(layer.weight.shape)))
                    layer.bias.copy_(torch.from_numpy(np.asarray(bias)))
        return net

    rows = run_checks(weights_checks(), sides.with_port(build_mlp=build_without_transpose), workdir=tmp_path)
    assert_fails(rows, "keras>file>lightning")
    assert_fails(rows, "kernel.T")


# ------------------------------------------------------------------------------------------ 3 forward


def test_layer_3_forward_every_activation(sides):
    rows = run_checks(forward_checks(), sides)
    assert len(rows) == 8 + 4
    assert_all_pass(rows)


@pytest.mark.parametrize("hidden, torch_default", [
    ("leaky_relu", "nn.LeakyReLU() (slope 0.01; Keras 0.2)"),
    ("gelu", "nn.GELU(approximate='tanh') (Keras: exact erf)"),
])
def test_layer_3_detects_torch_activation_defaults(sides, hidden, torch_default):
    from torch import nn

    from lightning_ft import model

    def build_with_torch_default(config, input_dim, n_classes, weights=None):
        net = model.build_mlp(config, input_dim, n_classes, weights)
        for i, layer in enumerate(net):
            if isinstance(layer, (nn.LeakyReLU, nn.GELU)):
                net[i] = nn.LeakyReLU() if hidden == "leaky_relu" else nn.GELU(approximate="tanh")
        return net

    rows = run_checks(forward_checks(hidden_activations=[hidden], output_activations=["softmax", "linear"]),
                      sides.with_port(build_mlp=build_with_torch_default))
    assert_fails(rows, "logits")
    assert_fails(rows, "activated output")


# --------------------------------------------------------------------------------------------- 4 loss


@pytest.mark.slow
def test_layer_4_loss_every_activation_and_mode(sides):
    rows = run_checks(loss_checks(), sides)
    assert len(rows) == 4 * 2 + 2 + 3  # + loss.formula: (softmax, keras), (sigmoid, keras), (sigmoid, probability)
    assert_all_pass(rows)
    pins = [r for r in rows if r.name.startswith("pin")]
    assert len(pins) == 2 and all(r.passed for r in pins)


def test_layer_4_detects_the_literal_sigmoid_loss(sides):
    """Computing what the study's code *reads* as (-log of the sigmoid probabilities) instead of what Keras ran."""
    from lightning_ft import losses

    def literal(logits, labels, output, mode):
        return losses.keras_loss(logits, labels, output, "probability" if output == "sigmoid" else mode)

    checks = loss_checks(output_activations=["sigmoid"], loss_modes=["keras"])
    rows = run_checks(checks, sides.with_port(keras_loss=literal))
    assert_fails(rows, "loss (keras)")


def test_layer_4_detects_a_scaled_loss(sides):
    from lightning_ft import losses

    scaled = sides.with_port(keras_loss=lambda *args: losses.keras_loss(*args) * 1.0001)
    assert_fails(run_checks(loss_checks(output_activations=["softmax"], loss_modes=["keras"]), scaled), "loss")


# ---------------------------------------------------------------------------------------- 5 gradients


def test_layer_5_gradients_every_activation(sides):
    rows = run_checks(gradient_checks(), sides)
    assert len(rows) == 4 * 2
    assert_all_pass(rows)


def test_layer_5_detects_a_scaled_loss(sides):
    """1 % more loss: the same loss row would need 2e-2 to notice; gradients see it at once."""
    from lightning_ft import losses

    scaled = sides.with_port(keras_loss=lambda *args: losses.keras_loss(*args) * 1.01)
    checks = gradient_checks(output_activations=["softmax", "linear"], loss_modes=["keras"])
    rows = run_checks(checks, scaled)
    assert {r.subject for r in failures(rows)} == {"output=softmax", "output=linear"}, describe(rows)


# ---------------------------------------------------------------------------------------- 6 optimizers

@pytest.mark.slow
def test_layer_6_optimizers_keras_rules_match_open_loop(sides):
    rows = run_checks(optimizer_checks(), sides)
    keras_rows = [r for r in rows if r.name == "replay, keras rule"]
    torch_rows = [r for r in rows if r.name == "replay, torch.optim"]
    assert len(keras_rows) == len(torch_rows) == len(open_loop_optimizers())
    assert all(r.passed is None for r in torch_rows)  # informational: the measured gap is shown, not asserted
    assert_all_pass(keras_rows)
    # torch.optim's Adam and RMSprop put epsilon elsewhere: a gap far beyond rounding, shown in the table.
    gaps = {r.subject: r.value for r in torch_rows}
    assert gaps["adam"] > 1e-5 and gaps["rmsprop"] > 1e-4


def test_layer_6_covers_every_registry_optimizer():
    from ftmed_core.optimizers import OPTIMIZERS

    subjects = set(optimizer_checks(semantics=("keras",))[0].subjects)
    assert set(OPTIMIZERS) <= subjects


@pytest.mark.slow
def test_layer_6_detects_nadam_with_float64_one_minus_beta(sides, monkeypatch):
    """A rounding-level rule difference: Keras's Nadam computes 1 - beta in float32
    (1 - float32(0.999) = 9.9998713e-4); rounding 1 - 0.999 from float64 gives 1e-3."""
    import torch

    original_lerp = torch._foreach_lerp_

    def float64_weight_lerp(tensors, ends, weight):
        for beta in (0.9, 0.999):  # swap Keras's float32 1 - beta for the float64-rounded one
            if weight == float(np.float32(1) - np.float32(beta)):
                weight = float(np.float32(1 - beta))
        return original_lerp(tensors, ends, weight)

    monkeypatch.setattr(torch, "_foreach_lerp_", float64_weight_lerp)
    rows = run_checks(optimizer_checks(["nadam"], semantics=("keras",)), sides)
    assert_fails(rows, "keras rule")
    assert rows[0].value < 1e-6  # a rounding-level bug, caught by a rounding-level tolerance


def test_layer_6_detects_torch_adam_in_place_of_the_keras_rule(sides):
    import torch

    def torch_adam(params, opt):
        return torch.optim.Adam(params, lr=opt.learning_rate, betas=(opt.beta_1, opt.beta_2), eps=opt.epsilon)

    rows = run_checks(optimizer_checks(["adam"], semantics=("keras",)), sides.with_port(build_optimizer=torch_adam))
    assert_fails(rows, "keras rule")


def test_layer_6_detects_the_torch_adagrad_accumulator(sides):
    from lightning_ft import optimizers

    def torch_accumulator(params, opt):
        return optimizers.build_optimizer(params, replace(opt, initial_accumulator_value=0.0))

    broken = sides.with_port(build_optimizer=torch_accumulator)
    rows = run_checks(optimizer_checks(["adagrad"], semantics=("keras",)), broken)
    assert_fails(rows, "keras rule")


# -------------------------------------------------------------------------------------- 7 closed loop


def test_layer_7_closed_loop_first_steps_agree(sides, tmp_path):
    rows = run_checks(closed_loop_checks(), sides, workdir=tmp_path)
    assert [r.passed for r in rows] == [True, True, None, None], describe(rows)


def _train_rows(data, rows: np.ndarray):
    """`data` whose training split is the rows `rows` of the original (arrays or a split object)."""
    if "x_train" in {f.name for f in fields(data)}:
        return replace(data, x_train=data.x_train[rows], y_train=data.y_train[rows])
    split = data.train  # a split object (images, labels)
    return replace(data, train=type(split)(split.to_float32()[rows], split.labels[rows]))


def test_layer_7_detects_a_batch_order_off_by_one(sides, tmp_path):
    """The port's epoch order rolled by one position: each batch shares all but one row with the core's."""
    from ftmed_core.protocol import epoch_permutation

    def order_off_by_one(config, data, weights):
        order = epoch_permutation(config.seed, 0, len(data.y_train))
        rows = np.empty_like(order)
        rows[order] = np.roll(order, 1)  # the row the port reads at order[i] is the core's order[i - 1]
        return sides.port.train_one_epoch(config, _train_rows(data, rows), weights)

    rows = run_checks(closed_loop_checks(), sides.with_port(train_one_epoch=order_off_by_one), workdir=tmp_path)
    assert_fails(rows, "step 1 loss")


# -------------------------------------------------------------------------------------- 8 statistical


@pytest.mark.slow
def test_layer_8_outcomes_equivalent_and_broken_config_detected(sides, tmp_path):
    """Keras vs Lightning Adagrad equivalent (TOST); Lightning with torch's accumulator 0 detected."""
    rows = run_checks(statistical_checks(), sides, workdir=tmp_path)
    by_name = {r.name: r for r in rows}
    assert set(by_name) == {"accuracy equivalent (TOST)", "broken config detected", "broken config not equivalent"}, \
        describe(rows)
    assert_all_pass(rows)


# ------------------------------------------------------------------------------------ check mechanics


def _constant(value: float, error: Exception | None = None):
    def measure(ctx, subject):
        if error is not None:
            raise error
        return Measurement(value, f"planted {value}")
    return measure


def test_verdicts_come_from_value_and_tolerance_and_errors_are_explicit():
    checks = [
        Check("t.pass", 1, "within", Tolerance(1e-6), "test", _constant(1e-7)),
        Check("t.fail", 1, "beyond", Tolerance(1e-6), "test", _constant(2e-6)),
        Check("t.nan", 1, "nan", Tolerance(1e-6), "test", _constant(float("nan"))),
        Check("t.rel", 1, "relative", Tolerance(1e-5, scale="s"), "test", lambda ctx, s: Measurement(5e-5, "", 10.0)),
        Check("t.error", 1, "raises", Tolerance(1e-6), "test", _constant(0.0, ValueError("bad\nnews"))),
        Check("t.info", 1, "info", informational(), "test", _constant(3.0)),
        Check("t.info.error", 1, "info raises", informational(), "test", _constant(0.0, RuntimeError("x"))),
        Check("t.min", 1, "at least", Tolerance(1e-3, compare=">"), "test", _constant(1e-4)),
    ]
    rows = {r.check_id: r for r in run_checks(checks, sides=_NoSides())}
    assert [rows[k].verdict for k in ("t.pass", "t.fail", "t.nan", "t.rel")] == ["pass", "FAIL", "FAIL", "pass"]
    assert rows["t.rel"].tolerance == pytest.approx(1e-4)
    assert rows["t.error"].verdict == ERROR and rows["t.error"].failed
    assert rows["t.error"].note.startswith("ValueError: bad news (") and "\n" not in rows["t.error"].note
    assert rows["t.info"].verdict == "info" and rows["t.info"].passed is None
    assert rows["t.info.error"].verdict == ERROR and not rows["t.info.error"].failed
    assert rows["t.min"].failed


class _NoSides:
    label = "none vs none"


# ------------------------------------------------------------------------------------------------ CLI


def test_cli_parity_layers_1_2_writes_reports(tmp_path):
    from cli.main import app

    out = tmp_path / "parity"
    result = CliRunner().invoke(app, ["parity", "--layers", "1,2", "--out", str(out)])
    assert result.exit_code == 0, result.output
    payload = json.loads((out / "parity.json").read_text())
    assert payload["passed"] is True and payload["layers"] == [1, 2]
    assert {c["layer"] for c in payload["checks"]} == {1, 2}
    report = (out / "parity.md").read_text()
    assert "| layer | check |" in report and "| weights.k2l | 2 |" in report  # the generated tolerance table
    table = [line for line in result.stdout.splitlines() if str(out) not in line]  # all but the path line
    assert len(table) > 27 and max(len(line) for line in table) <= 80


def _planted_failure() -> list:
    return [Check("weights.k2l", 2, "keras>file>lightning>file", Tolerance(0.0), "test", _constant(0.5)),
            Check("drift", 2, "drift", informational(), "informational rows never fail", _constant(1e-3))]


def test_the_api_returns_the_results_and_writes_the_reports(tmp_path):
    import ftmed

    planted = _planted_failure()
    found = ftmed.parity(layers=(2,), checks_for=lambda layer: planted)
    assert [r.verdict for r in found.results] == ["FAIL", "info"] and found.failed == 1 and not found.passed
    assert found.summary() == "2 checks: 0 pass, 1 FAIL, 0 ERROR, 1 info" and set(found.seconds) == {2}
    assert found.environment["keras_backends"] == "tensorflow"
    json_path, md_path = found.write(tmp_path / "out")
    assert json.loads(json_path.read_text()) == json.loads(json.dumps(found.to_dict()))
    assert "| weights.k2l | 2 |" in md_path.read_text()


@pytest.mark.parametrize("kwargs, message", [
    ({"layers": (10,)}, "unknown parity layer 10"),
    ({"layers": (8,), "keras_backends": ("jax",)}, "layer 8 (--statistical) runs on the TensorFlow backend only"),
])
def test_the_api_refuses_what_cannot_run(kwargs, message):
    import ftmed
    from ftmed_core.errors import ConfigError

    with pytest.raises(ConfigError, match=re.escape(message)):
        ftmed.parity(**kwargs)


def test_cli_parity_exits_1_on_a_failed_check_and_still_writes_reports(tmp_path, capsys):
    from cli.parity import render
    from ftmed_parity.api import run

    planted = _planted_failure()
    code = render(run((2,), checks_for=lambda layer: planted), tmp_path)
    assert code == 1
    assert "FAIL weights.k2l" in capsys.readouterr().out
    payload = json.loads((tmp_path / "parity.json").read_text())
    assert payload["passed"] is False and [c["verdict"] for c in payload["checks"]] == ["FAIL", "info"]


def test_cli_parity_rejects_an_unknown_layer(tmp_path):
    from cli.main import app

    result = CliRunner().invoke(app, ["parity", "--layers", "10", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "unknown parity layer 10" in result.output
    assert not (tmp_path / "parity.json").exists()
