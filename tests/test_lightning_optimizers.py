"""Each Keras-semantics optimizer against its Keras 3 update rule, written out independently in float64
numpy (keras/src/optimizers/*.py, plus `_apply_weight_decay`). Gradients span 1e-8..1 in magnitude so
that where epsilon sits matters; a few steps check the state (moments, step counter, Nadam's u_product).
Scalars Keras computes in float32 (bias corrections, momentum schedule, Nadam's and Lion's 1 - beta) are
computed in float32 here too. Every registry entry is also stepped and resumed from `state_dict`; the
comparison with keras.optimizers itself is parity layer 6 (tests/parity/).
"""

from __future__ import annotations

import copy
import zlib

import numpy as np
import pytest
import torch

from ftmed_core.config import OPTIMIZER_DEFAULTS, OPTIMIZERS, optimizer_config
from lightning_ft.optimizers import KerasAdam, KerasOptimizer, build_optimizer, rule_class

f32 = np.float32
SHAPES = [(7, 5), (5,), (3, 4)]


def keras_reference(name: str, cfg, params: list[np.ndarray], grad_seq: list[list[np.ndarray]]) -> list[np.ndarray]:
    """Keras's update rule in float64 (float32 where Keras computes a scalar in float32)."""
    p = [x.astype(np.float64) for x in params]
    zeros = lambda: [np.zeros_like(x) for x in p]  # noqa: E731
    m, v, u = zeros(), zeros(), zeros()
    acc = [np.full_like(x, float(f32(cfg.initial_accumulator_value))) for x in p]
    lr = float(f32(cfg.learning_rate))
    eps = float(f32(cfg.epsilon))
    b1, b2 = float(f32(cfg.beta_1)), float(f32(cfg.beta_2))
    c1, c2 = float(f32(1 - cfg.beta_1)), float(f32(1 - cfg.beta_2))
    u_product = f32(1.0)
    for step, grads in enumerate(grad_seq, start=1):
        g = [x.astype(np.float64) for x in grads]
        if cfg.weight_decay:
            wd = float(f32(cfg.weight_decay))
            p = [w - w * wd * lr for w in p]
        t = f32(step)
        for i in range(len(p)):
            if name == "sgd":
                mom = float(f32(cfg.momentum))
                if cfg.momentum == 0:
                    p[i] = p[i] - g[i] * lr
                else:
                    m[i] = m[i] * mom - g[i] * lr
                    p[i] = p[i] + (m[i] * mom - g[i] * lr if cfg.nesterov else m[i])
            elif name in ("adam", "adamw"):
                alpha = float(f32(lr) * np.sqrt(f32(1) - f32(b2) ** t) / (f32(1) - f32(b1) ** t))
                m[i] = m[i] + (g[i] - m[i]) * c1
                v[i] = v[i] + (g[i] ** 2 - v[i]) * c2
                p[i] = p[i] - m[i] * alpha / (np.sqrt(v[i]) + eps)
            elif name == "adamax":
                m[i] = m[i] + (g[i] - m[i]) * c1
                u[i] = np.maximum(b2 * u[i], np.abs(g[i]))
                p[i] = p[i] - lr * m[i] / (float(f32(1) - f32(b1) ** t) * (u[i] + eps))
            elif name == "nadam":
                if i == 0:  # once per step, before the per-variable updates (_backend_update_step)
                    u_product = u_product * f32(b1) * (f32(1) - f32(0.5) * f32(0.96) ** t)
                u_t = float(f32(b1) * (f32(1) - f32(0.5) * f32(0.96) ** t))
                u_t1 = float(f32(b1) * (f32(1) - f32(0.5) * f32(0.96) ** f32(step + 1)))
                up_t = float(u_product)
                up_t1 = up_t * u_t1
                m[i] = m[i] + (g[i] - m[i]) * float(f32(1) - f32(b1))  # betas cast to float32 first
                v[i] = v[i] + (g[i] ** 2 - v[i]) * float(f32(1) - f32(b2))
                m_hat = u_t1 * m[i] / (1 - up_t1) + (1 - u_t) * g[i] / (1 - up_t)
                v_hat = v[i] / float(f32(1) - f32(b2) ** t)
                p[i] = p[i] - m_hat * lr / (np.sqrt(v_hat) + eps)
            elif name == "rmsprop":
                rho = float(f32(cfg.rho))
                v[i] = rho * v[i] + float(f32(1 - cfg.rho)) * g[i] ** 2
                inc = lr * g[i] / np.sqrt(v[i] + eps)
                if cfg.momentum > 0:
                    m[i] = float(f32(cfg.momentum)) * m[i] + inc
                    p[i] = p[i] - m[i]
                else:
                    p[i] = p[i] - inc
            elif name == "adagrad":
                acc[i] = acc[i] + g[i] ** 2
                p[i] = p[i] - lr * g[i] / np.sqrt(acc[i] + eps)
            elif name == "adadelta":
                rho, one_minus = float(f32(cfg.rho)), float(f32(1 - cfg.rho))
                m[i] = rho * m[i] + one_minus * g[i] ** 2  # accumulated_grad
                delta = -(np.sqrt(v[i] + eps) * g[i] / np.sqrt(m[i] + eps))
                v[i] = rho * v[i] + one_minus * delta ** 2  # accumulated_delta_var
                p[i] = p[i] + lr * delta
            elif name == "lion":
                p[i] = p[i] - lr * np.sign(m[i] * b1 + g[i] * float(f32(1) - f32(b1)))
                m[i] = m[i] * b2 + g[i] * float(f32(1) - f32(b2))
            else:
                raise ValueError(name)
    return p


def random_problem(seed: int, steps: int):
    rng = np.random.default_rng(seed)
    params = [(rng.standard_normal(s) * 0.01).astype(np.float32) for s in SHAPES]
    grads = [[(rng.standard_normal(s) * 10.0 ** rng.uniform(-8, 0, size=s)).astype(np.float32) for s in SHAPES]
             for _ in range(steps)]
    return params, grads


def run_torch(optimizer_factory, params, grad_seq) -> list[np.ndarray]:
    tensors = [torch.tensor(p, requires_grad=True) for p in params]
    opt = optimizer_factory(tensors)
    for grads in grad_seq:
        for t, g in zip(tensors, grads):
            t.grad = torch.tensor(g)
        opt.step()
    return [t.detach().numpy() for t in tensors]


def assert_matches(got, want, params, what):
    for g, w, p0 in zip(got, want, params):
        moved = w - p0.astype(np.float64)
        # Rounding only: 1e-5 relative on the move, plus 4 float32 ulps of the largest weight
        # (a weight is rounded to float32 after every step; a Lion weight can move +lr then -lr).
        atol = 4 * np.finfo(np.float32).eps * max(np.abs(w).max(), np.abs(p0).max())
        np.testing.assert_allclose(g - p0.astype(np.float64), moved, rtol=1e-5, atol=atol, err_msg=what)


CASES = {
    "sgd": dict(learning_rate=0.05),
    "sgd-momentum": dict(name="sgd", learning_rate=0.05, momentum=0.9),
    "sgd-nesterov": dict(name="sgd", learning_rate=0.05, momentum=0.9, nesterov=True),
    "adam": dict(learning_rate=0.01),
    "adam-wd": dict(name="adam", learning_rate=0.01, weight_decay=0.1),
    "adamw": dict(learning_rate=0.01),  # Keras default weight_decay 0.004
    "adamax": dict(learning_rate=0.01),
    "nadam": dict(learning_rate=0.01),
    "rmsprop": dict(learning_rate=0.01),
    "rmsprop-momentum": dict(name="rmsprop", learning_rate=0.01, momentum=0.9),
    "adagrad": dict(learning_rate=0.05),
    "adadelta": dict(learning_rate=1.0),
    "lion": dict(learning_rate=0.01, weight_decay=0.01),
}


@pytest.mark.parametrize("steps", [1, 6])
@pytest.mark.parametrize("case", sorted(CASES))
def test_keras_optimizer_matches_written_formula(case, steps):
    settings = dict(CASES[case])
    name = settings.pop("name", case)
    cfg = optimizer_config(name, **settings)
    params, grads = random_problem(seed=zlib.crc32(case.encode()) + steps, steps=steps)
    got = run_torch(lambda ps: build_optimizer(ps, cfg), params, grads)
    want = keras_reference(name, cfg, params, grads)
    assert_matches(got, want, params, f"{case}, {steps} step(s)")


@pytest.mark.parametrize("fused", [True, False])
def test_both_keras_adam_paths_match(fused):
    cfg = optimizer_config("adamw", learning_rate=0.01, weight_decay=0.05)
    params, grads = random_problem(seed=3, steps=8)
    got = run_torch(lambda ps: KerasAdam(ps, lr=0.01, weight_decay=0.05, fused=fused), params, grads)
    assert_matches(got, keras_reference("adamw", cfg, params, grads), params, f"fused={fused}")


def test_torch_adam_is_not_keras_adam():
    """Negative control: the tolerance above is tight enough to see torch's epsilon placement."""
    cfg = optimizer_config("adam", learning_rate=0.01)
    params, grads = random_problem(seed=4, steps=3)
    got = run_torch(lambda ps: torch.optim.Adam(ps, lr=0.01, eps=1e-7), params, grads)
    with pytest.raises(AssertionError):
        assert_matches(got, keras_reference("adam", cfg, params, grads), params, "torch Adam")


def test_step_counter_and_state_survive_state_dict():
    cfg = optimizer_config("nadam", learning_rate=0.01)
    params, grads = random_problem(seed=5, steps=4)
    tensors = [torch.tensor(p, requires_grad=True) for p in params]
    opt = build_optimizer(tensors, cfg)
    for g_list in grads[:2]:
        for t, g in zip(tensors, g_list):
            t.grad = torch.tensor(g)
        opt.step()
    state = copy.deepcopy(opt.state_dict())  # load_state_dict would share the tensors otherwise
    clone = [t.detach().clone().requires_grad_() for t in tensors]
    opt2 = build_optimizer(clone, cfg)
    opt2.load_state_dict(state)
    for g_list in grads[2:]:
        for t, c, g in zip(tensors, clone, g_list):
            t.grad, c.grad = torch.tensor(g), torch.tensor(g)
        opt.step()
        opt2.step()
    for t, c in zip(tensors, clone):
        assert torch.equal(t, c)
    assert_matches([t.detach().numpy() for t in tensors], keras_reference("nadam", cfg, params, grads), params, "resume")


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_registry_rule_steps_and_resumes_bitwise(name):
    """Every registry entry: its Keras-exact rule exists, takes the registry's fields at Keras's defaults,
    moves the weights, and a copy restored from `state_dict` after 2 steps continues bit for bit."""
    assert issubclass(rule_class(name), KerasOptimizer)
    cfg = OPTIMIZER_DEFAULTS[name]
    params, grads = random_problem(seed=7, steps=4)
    tensors = [torch.tensor(p, requires_grad=True) for p in params]
    opt = build_optimizer(tensors, cfg)
    assert type(opt) is rule_class(name)
    for g_list in grads[:2]:
        for t, g in zip(tensors, g_list):
            t.grad = torch.tensor(g)
        opt.step()
    clone = [t.detach().clone().requires_grad_() for t in tensors]
    opt2 = build_optimizer(clone, cfg)
    opt2.load_state_dict(copy.deepcopy(opt.state_dict()))
    for g_list in grads[2:]:
        for t, c, g in zip(tensors, clone, g_list):
            t.grad, c.grad = torch.tensor(g), torch.tensor(g)
        opt.step()
        opt2.step()
    assert all(torch.equal(t, c) for t, c in zip(tensors, clone))
    assert any(not np.array_equal(t.detach().numpy(), p) for t, p in zip(tensors, params))


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_torch_semantics_builds_and_steps(name):
    cfg = optimizer_config(name, semantics="torch")
    params, grads = random_problem(seed=6, steps=2)
    out = run_torch(lambda ps: build_optimizer(ps, cfg), params, grads)
    assert all(np.all(np.isfinite(o)) for o in out)
    assert any(not np.array_equal(o, p) for o, p in zip(out, params))
