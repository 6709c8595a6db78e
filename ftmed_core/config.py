"""Experiment configuration: every knob of a run, with an explicit value, decided once for both frameworks.

An `ExperimentConfig` says *what* is trained (data, network, loss, optimizer, schedule, seed); a
`RuntimeConfig` says *where* (accelerator, devices, threads, precision). Adapters translate these into
their framework and never pick a default of their own: an adapter default is a parity bug waiting to
happen.

Optimizer defaults are Keras 3's (the study ran Keras), spelled out per optimizer in `OPTIMIZER_DEFAULTS`.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
import re
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from ftmed_core.errors import ConfigError

HIDDEN_ACTIVATIONS = ("relu", "tanh", "sigmoid", "elu", "gelu", "leaky_relu", "selu", "swish")
OUTPUT_ACTIVATIONS = ("softmax", "sigmoid", "linear", "tanh")
# "keras": what Keras 3 (TF backend) computes for categorical_crossentropy on this output activation:
# softmax cross-entropy on the pre-activation logits for softmax *and* sigmoid outputs, the
# divide-by-sum-and-clip formula otherwise. "probability": the literal -sum(y log clip(p)) on the
# activated outputs, for every activation (what the study's code *reads* as, not what it computed).
LOSS_MODES = ("keras", "probability")
VAL_MODES = ("holdout", "official")
INIT_SCHEMES = ("glorot_uniform", "torch_default")
OPTIMIZER_SEMANTICS = ("keras", "torch")
PRECISIONS = ("32", "16-mixed", "bf16-mixed")
ACCELERATORS = ("auto", "cpu", "gpu", "mps")
SIZES = (28, 64, 128, 224)


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


# Which hyperparameters each optimizer reads (Keras 3 constructor arguments).
OPTIMIZER_FIELDS: dict[str, tuple[str, ...]] = {
    "sgd": ("learning_rate", "momentum", "nesterov", "weight_decay"),
    "adam": ("learning_rate", "beta_1", "beta_2", "epsilon", "weight_decay"),
    "adamw": ("learning_rate", "beta_1", "beta_2", "epsilon", "weight_decay"),
    "adamax": ("learning_rate", "beta_1", "beta_2", "epsilon", "weight_decay"),
    "nadam": ("learning_rate", "beta_1", "beta_2", "epsilon", "weight_decay"),
    "rmsprop": ("learning_rate", "rho", "momentum", "epsilon", "weight_decay"),
    "adagrad": ("learning_rate", "initial_accumulator_value", "epsilon", "weight_decay"),
    "adadelta": ("learning_rate", "rho", "epsilon", "weight_decay"),
    "lion": ("learning_rate", "beta_1", "beta_2", "weight_decay"),
}

# Keras 3 defaults, one entry per optimizer (keras/src/optimizers/*.py).
OPTIMIZER_DEFAULTS: dict[str, OptimizerConfig] = {
    "sgd": OptimizerConfig(name="sgd", learning_rate=0.01, momentum=0.0, nesterov=False),
    "adam": OptimizerConfig(name="adam", learning_rate=1e-3, beta_1=0.9, beta_2=0.999, epsilon=1e-7),
    "adamw": OptimizerConfig(
        name="adamw", learning_rate=1e-3, beta_1=0.9, beta_2=0.999, epsilon=1e-7, weight_decay=0.004
    ),
    "adamax": OptimizerConfig(name="adamax", learning_rate=1e-3, beta_1=0.9, beta_2=0.999, epsilon=1e-7),
    "nadam": OptimizerConfig(name="nadam", learning_rate=1e-3, beta_1=0.9, beta_2=0.999, epsilon=1e-7),
    "rmsprop": OptimizerConfig(name="rmsprop", learning_rate=1e-3, rho=0.9, momentum=0.0, epsilon=1e-7),
    "adagrad": OptimizerConfig(
        name="adagrad", learning_rate=1e-3, initial_accumulator_value=0.1, epsilon=1e-7
    ),
    "adadelta": OptimizerConfig(name="adadelta", learning_rate=1e-3, rho=0.95, epsilon=1e-7),
    "lion": OptimizerConfig(name="lion", learning_rate=1e-3, beta_1=0.9, beta_2=0.99),
}
OPTIMIZERS = tuple(OPTIMIZER_DEFAULTS)


def optimizer_config(name: str, **overrides: Any) -> OptimizerConfig:
    """Keras's defaults for `name`, with `overrides` applied (None values are ignored)."""
    if name not in OPTIMIZER_DEFAULTS:
        raise ConfigError(f"unknown optimizer {name!r}; choose one of: {', '.join(OPTIMIZERS)}")
    changes = {k: v for k, v in overrides.items() if v is not None}
    unknown = set(changes) - {f.name for f in fields(OptimizerConfig)}
    if unknown:
        raise ConfigError(f"unknown optimizer setting(s) {sorted(unknown)}")
    return validate_optimizer(replace(OPTIMIZER_DEFAULTS[name], **changes))


def validate_optimizer(opt: OptimizerConfig) -> OptimizerConfig:
    if opt.name not in OPTIMIZER_DEFAULTS:
        raise ConfigError(f"unknown optimizer {opt.name!r}; choose one of: {', '.join(OPTIMIZERS)}")
    if opt.semantics not in OPTIMIZER_SEMANTICS:
        raise ConfigError(
            f"unknown optimizer semantics {opt.semantics!r}; choose one of: {', '.join(OPTIMIZER_SEMANTICS)}"
        )
    if not (math.isfinite(opt.learning_rate) and opt.learning_rate > 0):
        raise ConfigError(f"learning rate must be a positive number, got {opt.learning_rate!r}")
    for name in ("beta_1", "beta_2", "rho"):
        value = getattr(opt, name)
        if not 0.0 <= value < 1.0:
            raise ConfigError(f"{name} must be in [0, 1), got {value!r}")
    if not 0.0 <= opt.momentum < 1.0:
        raise ConfigError(f"momentum must be in [0, 1), got {opt.momentum!r}")
    if not (opt.epsilon >= 0 and math.isfinite(opt.epsilon)):
        raise ConfigError(f"epsilon must be a non-negative number, got {opt.epsilon!r}")
    if opt.weight_decay < 0:
        raise ConfigError(f"weight_decay must be >= 0, got {opt.weight_decay!r}")
    if opt.initial_accumulator_value < 0:
        raise ConfigError(
            f"initial_accumulator_value must be >= 0, got {opt.initial_accumulator_value!r}"
        )
    return opt


@dataclass(frozen=True)
class ExperimentConfig:
    """Everything that decides what a run computes. Both frameworks receive exactly this."""

    name: str = "baseline"
    dataset: str = "pathmnist"
    size: int = 28
    # Directory holding `{dataset}[_{size}].npz`; None means $FTMED_DATA_DIR or medmnist's ~/.medmnist.
    # Not part of the run key: where the file lies does not change what is computed (its MD5 does).
    data_dir: str | None = None
    hidden_units: tuple[int, ...] = (512, 256, 128)
    hidden_activation: str = "relu"
    output_activation: str = "softmax"
    loss: str = "keras"
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    batch_size: int = 128
    epochs: int = 20
    seed: int = 0
    val_mode: str = "holdout"
    # Keras `validation_split`: the last N - floor(N * (1 - val_fraction)) training rows, before shuffling.
    val_fraction: float = 0.2
    init: str = "glorot_uniform"
    # True: a new permutation of the training rows each epoch (drawn by the core from the seed).
    # False: the rows in file order every epoch.
    shuffle: bool = True

    def __post_init__(self) -> None:
        validate(self)

    @property
    def learning_rate(self) -> float:
        return self.optimizer.learning_rate

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["hidden_units"] = list(self.hidden_units)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ExperimentConfig":
        data = dict(data)
        data["hidden_units"] = tuple(data["hidden_units"])
        data["optimizer"] = OptimizerConfig(**data["optimizer"])
        return cls(**data)

    def config_hash(self) -> str:
        """Hash of what the run computes: everything but the display name and the data location."""
        data = self.to_dict()
        data.pop("name")
        data.pop("data_dir")
        blob = json.dumps(data, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    def describe_changes(self, reference: "ExperimentConfig") -> str:
        """What differs from `reference`, as `key=value` pairs (for tables and `ftmed variants`)."""
        changes = []
        for f in fields(self):
            if f.name in ("name", "data_dir"):
                continue
            mine, theirs = getattr(self, f.name), getattr(reference, f.name)
            if mine == theirs:
                continue
            if f.name == "optimizer":
                changes.append(mine.describe())
            elif f.name == "hidden_units":
                changes.append("hidden=" + "-".join(map(str, mine)))
            else:
                changes.append(f"{f.name}={mine}")
        return ", ".join(changes) if changes else "(none)"



@dataclass(frozen=True)
class RuntimeConfig:
    """Where and how a run executes. Does not change what is computed, except `precision` (in the run key)."""

    accelerator: str = "auto"
    devices: int = 1
    strategy: str = "auto"
    precision: str = "32"
    # Intra-op threads for the framework. 0 = ftmed picks (one per core available to this process).
    threads: int = 0
    deterministic: bool = True
    num_nodes: int = 1
    progress: bool | None = None  # None: a progress bar only when stderr is a terminal
    # Also log to TensorBoard (run_dir/tensorboard); needs the `tensorboard` package.
    tensorboard: bool = False
    # Also log to MLflow at this tracking URI (e.g. sqlite:////abs/runs/mlflow.db); None: off. Needs `mlflow`.
    mlflow: str | None = None

    def __post_init__(self) -> None:
        if self.accelerator not in ACCELERATORS:
            raise ConfigError(
                f"unknown accelerator {self.accelerator!r}; choose one of: {', '.join(ACCELERATORS)}"
            )
        if self.precision not in PRECISIONS:
            raise ConfigError(f"unknown precision {self.precision!r}; choose one of: {', '.join(PRECISIONS)}")
        if self.devices < 1 or self.num_nodes < 1:
            raise ConfigError(f"devices and num_nodes must be >= 1, got {self.devices}, {self.num_nodes}")
        if self.threads < 0:
            raise ConfigError(f"threads must be >= 0 (0 = automatic), got {self.threads}")
        if self.tensorboard and importlib.util.find_spec("tensorboard") is None:
            raise ConfigError("TensorBoard logging needs the tensorboard package: pip install tensorboard")
        if self.mlflow and importlib.util.find_spec("mlflow") is None:
            raise ConfigError("MLflow logging needs the mlflow package: pip install 'ftmed[mlflow]' (or mlflow)")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _check_choice(what: str, value: Any, choices: tuple) -> None:
    if value not in choices:
        raise ConfigError(f"unknown {what} {value!r}; choose one of: {', '.join(map(str, choices))}")


def validate(config: ExperimentConfig) -> None:
    """Raise ConfigError naming the bad value and what would be accepted."""
    _check_choice("hidden activation", config.hidden_activation, HIDDEN_ACTIVATIONS)
    _check_choice("output activation", config.output_activation, OUTPUT_ACTIVATIONS)
    _check_choice("loss", config.loss, LOSS_MODES)
    _check_choice("validation mode", config.val_mode, VAL_MODES)
    _check_choice("init scheme", config.init, INIT_SCHEMES)
    _check_choice("image size", config.size, SIZES)
    if not config.hidden_units:
        raise ConfigError("hidden units must list at least one layer width, e.g. 512,256,128")
    if any((not isinstance(u, int)) or u < 1 for u in config.hidden_units):
        raise ConfigError(f"hidden units must be positive integers, got {list(config.hidden_units)}")
    if config.batch_size < 1:
        raise ConfigError(f"batch size must be >= 1, got {config.batch_size}")
    if config.epochs < 1:
        raise ConfigError(f"epochs must be >= 1, got {config.epochs}")
    if config.seed < 0:
        raise ConfigError(f"seed must be >= 0, got {config.seed}")
    if not 0.0 < config.val_fraction < 1.0:
        raise ConfigError(f"validation fraction must be in (0, 1), got {config.val_fraction}")
    validate_optimizer(config.optimizer)


def parse_hidden(text: str) -> tuple[int, ...]:
    """'512,256,128' (or '512-256-128') -> (512, 256, 128), with a clear error for anything else."""
    # A dash separates widths only between digits, so '512,-1' stays a (rejected) negative width.
    parts = [p for p in re.split(r"[,\s]+|(?<=\d)-(?=\d)", text.strip()) if p]
    if not parts:
        raise ConfigError("hidden units must list at least one layer width, e.g. 512,256,128")
    try:
        units = tuple(int(p) for p in parts)
    except ValueError:
        raise ConfigError(f"hidden units must be comma-separated integers like 512,256,128, got {text!r}")
    if any(u < 1 for u in units):
        raise ConfigError(f"hidden units must be positive integers, got {text!r}")
    return units
