"""The optimizer registry: every optimizer ftmed offers, declared once for the core, both adapters and the tests.

One `OptimizerSpec` per optimizer in `REGISTRY` names
- `keras_class`: its class in `keras.optimizers`; keras_ref passes every used field explicitly;
- `defaults`: the fields it reads, with Keras 3's defaults (the study ran Keras), `learning_rate` first.
  `OptimizerConfig` holds them; `optimizer_config(name)` starts from them;
- `torch_rule`: the class in `lightning_ft.optimizers` that replays Keras's update rule
  (semantics="keras"); its constructor takes `lr` plus the other used fields by name;
- `torch_optim`: the nearest `torch.optim` class and how its arguments map from our fields
  (semantics="torch"), or None where torch.optim has no counterpart (the Keras rule is used).

Adding an optimizer: one entry here plus its rule class in lightning_ft/optimizers.py. keras_ref, the
CLI choices, the variants' validation, the optimizer tests and the parity suite (layer 6, open loop against
Keras itself) read this table. A hyperparameter no existing optimizer has also needs a field on
`OptimizerConfig`.

numpy/stdlib only (layering: ftmed_core imports no framework).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import Any

from ftmed_core.errors import ConfigError

OPTIMIZER_SEMANTICS = ("keras", "torch")


@dataclass(frozen=True)
class TorchOptimMapping:
    """How semantics="torch" builds the nearest torch.optim class from an `OptimizerConfig`.

    `args`: (torch argument, our field) pairs; a tuple of fields becomes a tuple argument (betas).
    `fixed`: arguments with a fixed value. `fused`: torch has a fused kernel (used on cpu/cuda/mps;
    foreach elsewhere). `cls_without_decay`: the class used when weight_decay is 0, if another.
    `differs`: what still differs from Keras's rule under this mapping.
    """

    cls: str
    args: tuple[tuple[str, str | tuple[str, ...]], ...]
    fixed: tuple[tuple[str, Any], ...] = ()
    fused: bool = False
    differs: str = ""
    cls_without_decay: str | None = None

    def class_name(self, opt: "OptimizerConfig") -> str:
        return self.cls_without_decay if self.cls_without_decay and not opt.weight_decay else self.cls

    def kwargs(self, opt: "OptimizerConfig") -> dict[str, Any]:
        out = {arg: (tuple(getattr(opt, f) for f in field) if isinstance(field, tuple) else getattr(opt, field))
               for arg, field in self.args}
        out.update(self.fixed)
        return out

    def signature(self) -> str:
        name = f"{self.cls_without_decay} (weight_decay>0: {self.cls})" if self.cls_without_decay else self.cls
        return f"{name}(" + ", ".join([arg for arg, _ in self.args] + [f"{k}={v}" for k, v in self.fixed]) + ")"


@dataclass(frozen=True)
class OptimizerSpec:
    name: str
    keras_class: str
    defaults: dict[str, Any]
    torch_rule: str
    rule: str  # Keras's update rule in one line (the torch rule replays it)
    torch_optim: TorchOptimMapping | None
    # Constructor arguments keras_ref passes besides the used fields (pinning Keras options ftmed does not offer).
    keras_fixed: tuple[tuple[str, Any], ...] = ()
    # Keras takes weight_decay=None as "no decay"; a class that needs a float gets 0.0 as is.
    keras_decay_float: bool = False

    @property
    def fields(self) -> tuple[str, ...]:
        return tuple(self.defaults)


_LR = ("lr", "learning_rate")
_ADAM_ARGS = (_LR, ("betas", ("beta_1", "beta_2")), ("eps", "epsilon"), ("weight_decay", "weight_decay"))

REGISTRY: dict[str, OptimizerSpec] = {spec.name: spec for spec in (
    OptimizerSpec(
        "sgd", "SGD", dict(learning_rate=0.01, momentum=0.0, nesterov=False, weight_decay=0.0), "KerasSGD",
        "v = m*v - lr*g; w += v (nesterov: w += m*v - lr*g)",
        TorchOptimMapping("SGD", (_LR, ("momentum", "momentum"), ("nesterov", "nesterov"),
                                  ("weight_decay", "weight_decay")), fused=True,
                          differs="nothing for a constant lr (torch scales the velocity by lr at use); "
                                  "weight_decay is L2 added to g")),
    OptimizerSpec(
        "adam", "Adam", dict(learning_rate=1e-3, beta_1=0.9, beta_2=0.999, epsilon=1e-7, weight_decay=0.0),
        "KerasAdam", "epsilon added to sqrt(v) before bias correction, float32 bias terms",
        TorchOptimMapping("AdamW", _ADAM_ARGS, fused=True, cls_without_decay="Adam",
                          differs="eps after bias correction (effective eps differs by sqrt(1-b2^t)); float64 "
                                  "bias terms; decay decoupled, like Keras"),
        keras_fixed=(("amsgrad", False),)),
    OptimizerSpec(
        "adamw", "AdamW", dict(learning_rate=1e-3, beta_1=0.9, beta_2=0.999, epsilon=1e-7, weight_decay=0.004),
        "KerasAdam", "Adam + decoupled decay w -= w*wd*lr before the step",
        TorchOptimMapping("AdamW", _ADAM_ARGS, fused=True, differs="as adam; decay is the same decoupled form"),
        keras_fixed=(("amsgrad", False),), keras_decay_float=True),
    OptimizerSpec(
        "adamax", "Adamax", dict(learning_rate=1e-3, beta_1=0.9, beta_2=0.999, epsilon=1e-7, weight_decay=0.0),
        "KerasAdamax", "w -= lr*m / ((1-b1^t)*(u+eps))",
        TorchOptimMapping("Adamax", _ADAM_ARGS, differs="torch puts eps inside the max: u = max(b2*u, abs(g)+eps)")),
    OptimizerSpec(
        "nadam", "Nadam", dict(learning_rate=1e-3, beta_1=0.9, beta_2=0.999, epsilon=1e-7, weight_decay=0.0),
        "KerasNadam", "mu_t = b1*(1-0.5*0.96^t), float32 u_product",
        TorchOptimMapping("NAdam", _ADAM_ARGS, fixed=(("momentum_decay", 1.0), ("decoupled_weight_decay", True)),
                          differs="momentum_decay=1 gives Keras's 0.96^t schedule; eps after bias correction; "
                                  "float64 scalars; wd decoupled")),
    OptimizerSpec(
        "rmsprop", "RMSprop", dict(learning_rate=1e-3, rho=0.9, momentum=0.0, epsilon=1e-7, weight_decay=0.0),
        "KerasRMSprop", "lr*g/sqrt(v+eps); momentum on the increment",
        TorchOptimMapping("RMSprop", (_LR, ("alpha", "rho"), ("eps", "epsilon"), ("momentum", "momentum"),
                                      ("weight_decay", "weight_decay")),
                          differs="torch: eps outside the sqrt (sqrt(v)+eps)"),
        keras_fixed=(("centered", False),)),
    OptimizerSpec(
        "adagrad", "Adagrad", dict(learning_rate=1e-3, initial_accumulator_value=0.1, epsilon=1e-7, weight_decay=0.0),
        "KerasAdagrad", "accumulator starts at initial_accumulator_value; lr*g/sqrt(acc+eps)",
        TorchOptimMapping("Adagrad", (_LR, ("initial_accumulator_value", "initial_accumulator_value"),
                                      ("eps", "epsilon"), ("weight_decay", "weight_decay")), fused=True,
                          differs="torch: eps outside the sqrt")),
    OptimizerSpec(
        "adadelta", "Adadelta", dict(learning_rate=1e-3, rho=0.95, epsilon=1e-7, weight_decay=0.0),
        "KerasAdadelta", "Zeiler's rule with lr scaling, eps inside both sqrt",
        TorchOptimMapping("Adadelta", (_LR, ("rho", "rho"), ("eps", "epsilon"), ("weight_decay", "weight_decay")),
                          differs="same rule; weight_decay is L2 added to g")),
    OptimizerSpec(
        "lion", "Lion", dict(learning_rate=1e-3, beta_1=0.9, beta_2=0.99, weight_decay=0.0), "KerasLion",
        "w -= lr*sign(b1*m + (1-b1)*g); m = b2*m + (1-b2)*g", None),
)}
OPTIMIZERS = tuple(REGISTRY)


@dataclass(frozen=True)
class OptimizerConfig:
    """One optimizer with all of its hyperparameters (Keras 3 names and defaults).

    Fields an optimizer does not use keep their neutral value and are ignored by it; `describe()` shows
    only the ones that matter for `name`.
    """

    name: str = "adam"
    learning_rate: float = 1e-3
    beta_1: float = 0.9
    beta_2: float = 0.999
    epsilon: float = 1e-7
    momentum: float = 0.0
    nesterov: bool = False
    rho: float = 0.9
    initial_accumulator_value: float = 0.1
    weight_decay: float = 0.0
    # "keras" reproduces Keras's update rule exactly; "torch" uses torch.optim with the closest mapping.
    semantics: str = "keras"

    def used_fields(self) -> tuple[str, ...]:
        return OPTIMIZER_FIELDS[self.name]

    def describe(self) -> str:
        """`adam(lr=0.001)`: the learning rate plus every used setting that differs from Keras's default."""
        defaults = OPTIMIZER_DEFAULTS[self.name]
        parts = [f"lr={self.learning_rate:g}"]
        for name in self.used_fields():
            value = getattr(self, name)
            if name == "learning_rate" or value == getattr(defaults, name):
                continue
            parts.append(f"{name}={value:g}" if isinstance(value, float) else f"{name}={value}")
        if self.semantics != "keras":
            parts.append(f"semantics={self.semantics}")
        return f"{self.name}(" + ", ".join(parts) + ")"


# Views of the registry kept under their historical names (ftmed_core.config re-exports them).
OPTIMIZER_FIELDS: dict[str, tuple[str, ...]] = {name: spec.fields for name, spec in REGISTRY.items()}
OPTIMIZER_DEFAULTS: dict[str, OptimizerConfig] = {
    name: OptimizerConfig(name=name, **spec.defaults) for name, spec in REGISTRY.items()
}


def optimizer_spec(name: str) -> OptimizerSpec:
    if name not in REGISTRY:
        raise ConfigError(f"unknown optimizer {name!r}; choose one of: {', '.join(OPTIMIZERS)}")
    return REGISTRY[name]


def optimizer_config(name: str, **overrides: Any) -> OptimizerConfig:
    """Keras's defaults for `name`, with `overrides` applied (None values are ignored)."""
    optimizer_spec(name)
    changes = {k: v for k, v in overrides.items() if v is not None}
    unknown = set(changes) - {f.name for f in fields(OptimizerConfig)}
    if unknown:
        raise ConfigError(f"unknown optimizer setting(s) {sorted(unknown)}")
    return validate_optimizer(replace(OPTIMIZER_DEFAULTS[name], **changes))


def keras_kwargs(opt: OptimizerConfig) -> dict[str, Any]:
    """The arguments keras_ref passes to `keras.optimizers.<keras_class>`: every used field, explicitly."""
    spec = optimizer_spec(opt.name)
    kwargs = {name: getattr(opt, name) for name in spec.fields}
    if "weight_decay" in kwargs and not kwargs["weight_decay"] and not spec.keras_decay_float:
        kwargs["weight_decay"] = None  # Keras's "no decay": the same numbers without a w - w*0*lr op
    kwargs.update(spec.keras_fixed)
    return kwargs


def torch_rule_kwargs(opt: OptimizerConfig) -> dict[str, Any]:
    """The arguments of the Keras-exact torch rule: `lr` plus the other used fields by name."""
    return {("lr" if name == "learning_rate" else name): getattr(opt, name) for name in optimizer_spec(opt.name).fields}


def semantics_table() -> str:
    """Markdown: per optimizer, Keras's rule, the torch.optim mapping and what that mapping leaves different."""
    lines = ['| optimizer | semantics="keras" (Keras rule, replayed in torch) | semantics="torch" (torch.optim) '
             '| what still differs under "torch" |', "|---|---|---|---|"]
    for spec in REGISTRY.values():
        mapping = spec.torch_optim
        torch_side = mapping.signature() if mapping else f"none in torch.optim: uses {spec.torch_rule}"
        differs = mapping.differs if mapping else "-"
        lines.append(f"| {spec.name} | {spec.torch_rule}: {spec.rule} | {torch_side} | {differs} |")
    lines += ["", "Under \"torch\", weight_decay is torch's own: decoupled for Adam(W)/NAdam, an L2 term added to the "
              "gradient for SGD, RMSprop, Adagrad, Adadelta, Adamax (Keras always decouples)."]
    return "\n".join(lines) + "\n"


def validate_optimizer(opt: OptimizerConfig) -> OptimizerConfig:
    optimizer_spec(opt.name)
    if opt.semantics not in OPTIMIZER_SEMANTICS:
        raise ConfigError(
            f"unknown optimizer semantics {opt.semantics!r}; choose one of: {', '.join(OPTIMIZER_SEMANTICS)}"
        )
    if not (math.isfinite(opt.learning_rate) and opt.learning_rate > 0):
        raise ConfigError(f"learning rate must be a positive, finite number such as 0.001, got {opt.learning_rate!r}")
    for name in ("beta_1", "beta_2", "rho"):
        value = getattr(opt, name)
        if not 0.0 <= value < 1.0:
            raise ConfigError(f"{name} must be in [0, 1), got {value!r}")
    if not 0.0 <= opt.momentum < 1.0:
        raise ConfigError(f"momentum must be in [0, 1), got {opt.momentum!r}")
    if not (opt.epsilon >= 0 and math.isfinite(opt.epsilon)):
        raise ConfigError(f"epsilon must be a non-negative number, got {opt.epsilon!r}")
    if not (opt.weight_decay >= 0 and math.isfinite(opt.weight_decay)):
        raise ConfigError(f"weight_decay must be a finite number >= 0, got {opt.weight_decay!r}")
    if not (opt.initial_accumulator_value >= 0 and math.isfinite(opt.initial_accumulator_value)):
        raise ConfigError(
            f"initial_accumulator_value must be a finite number >= 0, got {opt.initial_accumulator_value!r}"
        )
    return opt
