"""Optimizers: Keras 3's update rules as multi-tensor torch optimizers, or torch.optim's closest built-ins.

`build_optimizer(params, opt_config)` looks the optimizer up in the registry (`ftmed_core.optimizers`)
and picks by `opt_config.semantics`:

- "keras" (default, for parity): the registry's `torch_rule`, one class below per rule, replays
  `update_step` of keras/src/optimizers/*.py (Keras 3.15) operation for operation, on float32 parameters:
  * scalars (learning rate, beta powers, bias corrections, Nadam's momentum schedule) are computed in
    float32 where Keras computes them on the variable's dtype, and in Python float64 where Keras does
    (Adam's `1 - self.beta_1` is float64 then cast; Nadam's and Lion's `1 - beta` is float32 arithmetic,
    and 1 - float32(0.999) = 9.9998713e-4, not 1e-3). torch.optim uses float64 throughout;
  * epsilon sits where Keras puts it (Adam: added to sqrt(v) *before* the bias-correction factor is
    applied, i.e. "epsilon hat"; RMSprop/Adagrad/Adadelta: inside the square root; Adamax: added to u);
  * `weight_decay` is Keras's decoupled decay, applied to every variable *before* the update:
    w -= w * wd * lr (keras/src/backend/tensorflow/optimizer.py `_apply_weight_decay`);
  * the step counter (Keras `iterations`) is shared by all parameters of a group.
  Each rule runs as a handful of `torch._foreach_*` ops over all parameters (no per-parameter Python loop),
  so a Keras-exact step costs about what torch's multi-tensor built-ins cost.
- "torch": torch.optim's nearest built-in with the same nominal hyperparameters, as the registry's
  `torch_optim` maps it (`SEMANTICS_TABLE`, generated from the registry, lists what still differs).

A rule class takes `lr` plus the optimizer's other used fields by name (`torch_rule_kwargs`).

Gradient clipping, EMA, amsgrad and centered RMSprop are not part of the study's configs and not offered.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np
import torch

from ftmed_core.errors import ConfigError
from ftmed_core.optimizers import (
    OptimizerConfig,
    optimizer_spec,
    semantics_table,
    torch_rule_kwargs,
    validate_optimizer,
)

SEMANTICS_TABLE = semantics_table()


def _f32(value) -> float:
    """A Python float holding a float32 value, so foreach ops on float32 tensors see Keras's scalar."""
    return float(np.float32(value))


class KerasOptimizer(torch.optim.Optimizer):
    """Base: step counter per group, Keras's decoupled weight decay, and the float32 learning rate.

    `CAPTURABLE`: whether a rule's `step()` can be captured in a CUDA graph and replayed
    (`lightning_ft.fast`): True only where the update reads no step-dependent host scalar, so the
    captured constants stay right on every replay. A new rule states it here, in its class.
    """

    CAPTURABLE = False

    def capturable(self) -> bool:
        """Whether this optimizer's `step()` can be replayed from a CUDA graph as configured."""
        return self.CAPTURABLE

    def __init__(self, params, defaults: dict):
        super().__init__(params, defaults)
        for group in self.param_groups:
            group.setdefault("step", 0)  # Keras `iterations`; lives in the group so it is checkpointed

    def _state_list(self, params: list[torch.Tensor], name: str, init: float = 0.0) -> list[torch.Tensor]:
        out = []
        for p in params:
            state = self.state[p]
            if name not in state:
                state[name] = torch.full_like(p, init, memory_format=torch.preserve_format)
            out.append(state[name])
        return out

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            grads = [p.grad for p in params]
            lr = _f32(group["lr"])
            wd = group.get("weight_decay", 0.0)
            if wd:
                # Keras: variable.assign_sub(variable * wd * lr), before the update.
                _foreach_sub_scaled(params, params, _f32(np.float32(wd) * np.float32(lr)))
            step = group["step"] + 1
            self._update(group, params, grads, lr, step)
            group["step"] = step
        return loss

    def _update(self, group: dict, params: list[torch.Tensor], grads: list[torch.Tensor], lr: float, step: int) -> None:
        raise NotImplementedError


def _foreach_sub_scaled(targets, values, scale: float) -> None:
    """targets -= values * scale (values may alias targets)."""
    scaled = torch._foreach_mul(values, scale)
    torch._foreach_sub_(targets, scaled)


class KerasSGD(KerasOptimizer):
    """keras.optimizers.SGD: m = momentum*m - lr*g; w += m (nesterov: w += momentum*m - lr*g)."""

    CAPTURABLE = True  # no step-dependent host scalar

    def __init__(self, params, lr=0.01, momentum=0.0, nesterov=False, weight_decay=0.0):
        super().__init__(params, dict(lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay))

    def _update(self, group, params, grads, lr, step):
        momentum = _f32(group["momentum"])
        lr_g = torch._foreach_mul(grads, lr)
        if momentum == 0.0:
            torch._foreach_sub_(params, lr_g)
            return
        m = self._state_list(params, "momentum")
        torch._foreach_mul_(m, momentum)
        torch._foreach_sub_(m, lr_g)
        if group["nesterov"]:
            update = torch._foreach_mul(m, momentum)
            torch._foreach_sub_(update, lr_g)
            torch._foreach_add_(params, update)
        else:
            torch._foreach_add_(params, m)


class KerasAdam(KerasOptimizer):
    """keras.optimizers.Adam / AdamW (AdamW = Adam with a decoupled weight_decay, default 0.004).

    alpha = lr * sqrt(1 - b2^t) / (1 - b1^t)          (float32 scalars)
    m += (g - m) * (1 - b1);  v += (g^2 - v) * (1 - b2)
    w -= m * alpha / (sqrt(v) + eps)
    """

    def __init__(self, params, lr=1e-3, beta_1=0.9, beta_2=0.999, epsilon=1e-7, weight_decay=0.0,
                 fused: bool = True):
        super().__init__(params, dict(lr=lr, beta_1=beta_1, beta_2=beta_2, epsilon=epsilon, weight_decay=weight_decay))
        self.fused = fused  # False: the multi-tensor path (same rule; used where no fused kernel exists)
        self._steps_cache: dict = {}
        # Capturable mode (lightning_ft.fast): a float32 tensor on the parameters' device holding this step's
        # `keras_adam_alpha`, read by the fused kernel on the device, so a step needs no host-side scalar
        # and can be replayed from a CUDA graph. None: alpha is computed on the host from the step count.
        self.alpha_override: torch.Tensor | None = None

    def capturable(self) -> bool:
        """Capturable through `alpha_override` (the step-dependent alpha read on the device), which needs
        the fused kernel and one parameter group (one alpha table)."""
        return self.fused and len(self.param_groups) == 1

    def _update(self, group, params, grads, lr, step):
        alpha = keras_adam_alpha(lr, group["beta_1"], group["beta_2"], step)
        m = self._state_list(params, "momentum")
        v = self._state_list(params, "velocity")
        if self.alpha_override is not None:
            if not (self.fused and _fusable(params)):
                raise RuntimeError("KerasAdam.alpha_override needs the fused kernel (float32 CPU/CUDA parameters)")
            alpha = self.alpha_override
        if self.fused and _fusable(params):
            self._fused_update(group, params, grads, m, v, alpha)
            return
        # m + (g - m) * (1 - b1): lerp computes exactly this for weights below 0.5.
        torch._foreach_lerp_(m, grads, _f32(1 - group["beta_1"]))
        g2 = torch._foreach_mul(grads, grads)
        torch._foreach_lerp_(v, g2, _f32(1 - group["beta_2"]))
        denom = torch._foreach_sqrt(v)
        torch._foreach_add_(denom, _f32(group["epsilon"]))
        torch._foreach_addcdiv_(params, m, denom, -alpha)

    def _fused_update(self, group, params, grads, m, v, alpha: float | torch.Tensor) -> None:
        """The same rule in one pass, through torch's fused Adam kernel.

        That kernel computes w -= (lr / bc1) * m / (sqrt(v) / sqrt(bc2) + eps) with bc = 1 - beta^step in
        float64. Handing it a step so large that beta^step is exactly 0 makes both corrections exactly 1,
        so with lr = Keras's float32 `alpha` and eps = Keras's epsilon it applies Keras's update
        w -= alpha * m / (sqrt(v) + eps) (moments updated as m = b1 m + (1 - b1) g, v = b2 v + (1 - b2) g^2,
        equal to Keras's to rounding). About 3x faster than the multi-tensor path on CPU.
        """
        steps = self._no_correction_steps(params)
        torch._fused_adam_(
            params, grads, m, v, [], steps,
            lr=alpha, beta1=group["beta_1"], beta2=group["beta_2"], weight_decay=0.0,
            eps=group["epsilon"], amsgrad=False, maximize=False,
        )

    def _no_correction_steps(self, params: list[torch.Tensor]) -> list[torch.Tensor]:
        key = tuple(p.device for p in params)
        cached = self._steps_cache.get(key)
        if cached is None or len(cached) != len(params):
            cached = [torch.full((), _HUGE_STEP, dtype=torch.float32, device=p.device) for p in params]
            self._steps_cache[key] = cached
        return cached


def keras_adam_alpha(lr: float, beta_1: float, beta_2: float, step: int) -> float:
    """Keras Adam's step size at step `step` (1-based), in float32: lr * sqrt(1 - b2^t) / (1 - b1^t)."""
    b1, b2, t = np.float32(beta_1), np.float32(beta_2), np.float32(step)
    return _f32(np.float32(lr) * np.sqrt(np.float32(1) - b2 ** t) / (np.float32(1) - b1 ** t))


# beta ** _HUGE_STEP == 0.0 exactly in float64 for every beta < 1 - 1e-15, so 1 - beta**step == 1.
_HUGE_STEP = 1e30


def _fusable(params: list[torch.Tensor]) -> bool:
    return all(p.dtype == torch.float32 and p.device.type in ("cpu", "cuda") and not p.is_sparse for p in params)


class KerasAdamax(KerasOptimizer):
    """keras.optimizers.Adamax: m += (g - m)(1 - b1); u = max(b2*u, |g|); w -= lr*m / ((1 - b1^t)(u + eps))."""

    def __init__(self, params, lr=1e-3, beta_1=0.9, beta_2=0.999, epsilon=1e-7, weight_decay=0.0):
        super().__init__(params, dict(lr=lr, beta_1=beta_1, beta_2=beta_2, epsilon=epsilon, weight_decay=weight_decay))

    def _update(self, group, params, grads, lr, step):
        correction = _f32(np.float32(1) - np.float32(group["beta_1"]) ** np.float32(step))
        m = self._state_list(params, "momentum")
        u = self._state_list(params, "norm")
        torch._foreach_lerp_(m, grads, _f32(1 - group["beta_1"]))
        torch._foreach_mul_(u, _f32(group["beta_2"]))
        torch._foreach_maximum_(u, torch._foreach_abs(grads))
        denom = torch._foreach_add(u, _f32(group["epsilon"]))
        torch._foreach_mul_(denom, correction)
        torch._foreach_addcdiv_(params, m, denom, -lr)


class KerasNadam(KerasOptimizer):
    """keras.optimizers.Nadam, with its float32 `u_product` state (product of the momentum schedule).

    u_t = b1 (1 - 0.5 * 0.96^t);  u_product *= u_t (before the update, as `_backend_update_step` does)
    m_hat = u_{t+1} m / (1 - u_product * u_{t+1}) + (1 - u_t) g / (1 - u_product)
    w -= lr * m_hat / (sqrt(v / (1 - b2^t)) + eps)
    """

    def __init__(self, params, lr=1e-3, beta_1=0.9, beta_2=0.999, epsilon=1e-7, weight_decay=0.0):
        super().__init__(params, dict(lr=lr, beta_1=beta_1, beta_2=beta_2, epsilon=epsilon, weight_decay=weight_decay))
        for group in self.param_groups:
            group.setdefault("u_product", 1.0)

    def _update(self, group, params, grads, lr, step):
        one, half, decay = np.float32(1), np.float32(0.5), np.float32(0.96)
        b1, b2 = np.float32(group["beta_1"]), np.float32(group["beta_2"])
        t, t_next = np.float32(step), np.float32(step + 1)
        u_product = np.float32(group["u_product"]) * b1 * (one - half * decay ** t)
        group["u_product"] = float(u_product)
        u_t = b1 * (one - half * decay ** t)
        u_t1 = b1 * (one - half * decay ** t_next)
        u_product_t1 = u_product * u_t1
        m = self._state_list(params, "momentum")
        v = self._state_list(params, "velocity")
        # Nadam (unlike Adam) casts the betas to float32 *before* taking 1 - beta: 1 - float32(0.999)
        # is 9.9998713e-4, not 1e-3 (a 1.3e-5 relative difference in v).
        torch._foreach_lerp_(m, grads, _f32(one - b1))
        g2 = torch._foreach_mul(grads, grads)
        torch._foreach_lerp_(v, g2, _f32(one - b2))
        m_hat = torch._foreach_mul(m, _f32(u_t1 / (one - u_product_t1)))
        torch._foreach_add_(m_hat, grads, alpha=_f32((one - u_t) / (one - u_product)))
        denom = torch._foreach_div(v, _f32(one - b2 ** t))
        torch._foreach_sqrt_(denom)
        torch._foreach_add_(denom, _f32(group["epsilon"]))
        torch._foreach_addcdiv_(params, m_hat, denom, -lr)


class KerasRMSprop(KerasOptimizer):
    """keras.optimizers.RMSprop (not centered): v = rho v + (1 - rho) g^2; inc = lr g / sqrt(v + eps);
    momentum > 0: mom = momentum * mom + inc, w -= mom; else w -= inc."""

    CAPTURABLE = True  # no step-dependent host scalar

    def __init__(self, params, lr=1e-3, rho=0.9, momentum=0.0, epsilon=1e-7, weight_decay=0.0):
        super().__init__(params, dict(lr=lr, rho=rho, momentum=momentum, epsilon=epsilon, weight_decay=weight_decay))

    def _update(self, group, params, grads, lr, step):
        v = self._state_list(params, "velocity")
        torch._foreach_mul_(v, _f32(group["rho"]))
        torch._foreach_addcmul_(v, grads, grads, _f32(1 - group["rho"]))
        denom = torch._foreach_add(v, _f32(group["epsilon"]))
        torch._foreach_sqrt_(denom)
        if group["momentum"] > 0:
            mom = self._state_list(params, "momentum")
            torch._foreach_mul_(mom, _f32(group["momentum"]))
            torch._foreach_addcdiv_(mom, grads, denom, lr)
            torch._foreach_sub_(params, mom)
        else:
            torch._foreach_addcdiv_(params, grads, denom, -lr)


class KerasAdagrad(KerasOptimizer):
    """keras.optimizers.Adagrad: acc (starts at initial_accumulator_value) += g^2; w -= lr g / sqrt(acc + eps)."""

    CAPTURABLE = True  # no step-dependent host scalar

    def __init__(self, params, lr=1e-3, initial_accumulator_value=0.1, epsilon=1e-7, weight_decay=0.0):
        super().__init__(params, dict(lr=lr, initial_accumulator_value=initial_accumulator_value,
                                      epsilon=epsilon, weight_decay=weight_decay))

    def _update(self, group, params, grads, lr, step):
        acc = self._state_list(params, "accumulator", init=_f32(group["initial_accumulator_value"]))
        torch._foreach_addcmul_(acc, grads, grads)
        denom = torch._foreach_add(acc, _f32(group["epsilon"]))
        torch._foreach_sqrt_(denom)
        torch._foreach_addcdiv_(params, grads, denom, -lr)


class KerasAdadelta(KerasOptimizer):
    """keras.optimizers.Adadelta: ag = rho ag + (1 - rho) g^2; d = -sqrt(ad + eps) g / sqrt(ag + eps);
    ad = rho ad + (1 - rho) d^2; w += lr d."""

    CAPTURABLE = True  # no step-dependent host scalar

    def __init__(self, params, lr=1e-3, rho=0.95, epsilon=1e-7, weight_decay=0.0):
        super().__init__(params, dict(lr=lr, rho=rho, epsilon=epsilon, weight_decay=weight_decay))

    def _update(self, group, params, grads, lr, step):
        rho, one_minus_rho, eps = _f32(group["rho"]), _f32(1 - group["rho"]), _f32(group["epsilon"])
        ag = self._state_list(params, "accumulated_grad")
        ad = self._state_list(params, "accumulated_delta_var")
        torch._foreach_mul_(ag, rho)
        torch._foreach_addcmul_(ag, grads, grads, one_minus_rho)
        rms_delta = torch._foreach_add(ad, eps)
        torch._foreach_sqrt_(rms_delta)
        rms_grad = torch._foreach_add(ag, eps)
        torch._foreach_sqrt_(rms_grad)
        delta = torch._foreach_mul(rms_delta, grads)
        torch._foreach_div_(delta, rms_grad)  # delta_var = -delta
        torch._foreach_mul_(ad, rho)
        torch._foreach_addcmul_(ad, delta, delta, one_minus_rho)
        torch._foreach_add_(params, delta, alpha=-lr)


class KerasLion(KerasOptimizer):
    """keras.optimizers.Lion: w -= lr sign(b1 m + (1 - b1) g); then m = b2 m + (1 - b2) g."""

    CAPTURABLE = True  # no step-dependent host scalar

    def __init__(self, params, lr=1e-3, beta_1=0.9, beta_2=0.99, weight_decay=0.0):
        super().__init__(params, dict(lr=lr, beta_1=beta_1, beta_2=beta_2, weight_decay=weight_decay))

    def _update(self, group, params, grads, lr, step):
        b1, b2 = np.float32(group["beta_1"]), np.float32(group["beta_2"])  # cast first, then 1 - beta (as Keras)
        m = self._state_list(params, "momentum")
        direction = torch._foreach_mul(m, float(b1))
        torch._foreach_add_(direction, grads, alpha=_f32(np.float32(1) - b1))
        torch._foreach_sign_(direction)
        torch._foreach_add_(params, direction, alpha=-lr)
        torch._foreach_mul_(m, float(b2))
        torch._foreach_add_(m, grads, alpha=_f32(np.float32(1) - b2))


def rule_class(name: str) -> type[KerasOptimizer]:
    """The Keras-exact rule the registry names for optimizer `name` (a class of this module)."""
    rule = globals().get(optimizer_spec(name).torch_rule)
    if not (isinstance(rule, type) and issubclass(rule, KerasOptimizer)):
        raise ConfigError(f"optimizer {name!r}: the registry names torch rule "
                          f"{optimizer_spec(name).torch_rule!r}, which lightning_ft.optimizers does not define")
    return rule


def build_keras_optimizer(params: Iterable, opt: OptimizerConfig) -> KerasOptimizer:
    return rule_class(opt.name)(params, **torch_rule_kwargs(opt))


def build_torch_optimizer(params: Iterable, opt: OptimizerConfig) -> torch.optim.Optimizer:
    """torch.optim's nearest class as the registry maps it; the Keras rule where torch.optim has none."""
    mapping = optimizer_spec(opt.name).torch_optim
    if mapping is None:
        return build_keras_optimizer(params, opt)
    params = list(params)
    fused = mapping.fused and params and all(p.device.type in ("cpu", "cuda", "mps") for p in params)
    speed = {"fused": True} if fused else {"foreach": True}
    return getattr(torch.optim, mapping.class_name(opt))(params, **mapping.kwargs(opt), **speed)


def build_optimizer(params: Iterable, opt_config: OptimizerConfig) -> torch.optim.Optimizer:
    """The optimizer `opt_config` asks for, with Keras's ("keras") or torch.optim's ("torch") semantics."""
    opt_config = validate_optimizer(opt_config)
    if opt_config.semantics == "keras":
        return build_keras_optimizer(params, opt_config)
    return build_torch_optimizer(params, opt_config)
