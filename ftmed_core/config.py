"""Experiment configuration: every knob of a run, with an explicit value, decided once for both frameworks.

An `ExperimentConfig` says *what* is trained (data, network, loss, optimizer, schedule, seed); a
`RuntimeConfig` says *where* (accelerator, devices, threads, precision). Adapters translate these into
their framework and never pick a default of their own: an adapter default is a parity bug waiting to
happen.

Optimizers (`OptimizerConfig`, Keras 3's defaults) are declared in the registry `ftmed_core.optimizers` and
re-exported here.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import re
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from ftmed_core.errors import ConfigError
from ftmed_core.optimizers import (  # noqa: F401  (the registry's views, importable from here as before)
    OPTIMIZER_DEFAULTS,
    OPTIMIZER_FIELDS,
    OPTIMIZER_SEMANTICS,
    OPTIMIZERS,
    OptimizerConfig,
    optimizer_config,
    validate_optimizer,
)

HIDDEN_ACTIVATIONS = ("relu", "tanh", "sigmoid", "elu", "gelu", "leaky_relu", "selu", "swish")
OUTPUT_ACTIVATIONS = ("softmax", "sigmoid", "linear", "tanh")
# "keras": what Keras 3 (TF backend) computes for categorical_crossentropy on this output activation:
# softmax cross-entropy on the pre-activation logits for softmax *and* sigmoid outputs, the
# divide-by-sum-and-clip formula otherwise. "probability": the literal -sum(y log clip(p)) on the
# activated outputs, for every activation (what the study's code *reads* as, not what it computed).
LOSS_MODES = ("keras", "probability")
VAL_MODES = ("holdout", "official")
INIT_SCHEMES = ("glorot_uniform", "torch_default")
PRECISIONS = ("32", "16-mixed", "bf16-mixed")
ACCELERATORS = ("auto", "cpu", "gpu", "mps")
SIZES = (28, 64, 128, 224)
# Training-row order (ftmed_core.protocol.epoch_permutation): "per-epoch" a fresh permutation each epoch,
# "fixed" one permutation drawn from the seed and reused every epoch (a seeded Keras fit(shuffle=True)),
# "none" file order every epoch. Records written before the policy existed hold a bool.
SHUFFLE_POLICIES = ("per-epoch", "fixed", "none")
_SHUFFLE_FROM_BOOL = {True: "per-epoch", False: "none"}


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
    # SHUFFLE_POLICIES: per-epoch (default), fixed, or none. A bool (old records) reads as True ->
    # "per-epoch", False -> "none".
    shuffle: str = "per-epoch"

    def __post_init__(self) -> None:
        if isinstance(self.shuffle, bool):
            object.__setattr__(self, "shuffle", _SHUFFLE_FROM_BOOL[self.shuffle])
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
        # Hashed as the bool it was before the policy existed, so runs already finished keep their keys.
        data["shuffle"] = {"per-epoch": True, "none": False}.get(self.shuffle, self.shuffle)
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
    # Runs the grid ran side by side with this one (--jobs): recorded so that its seconds read as shared-core
    # figures when > 1. Changes nothing that is computed.
    jobs: int = 1
    deterministic: bool = True
    num_nodes: int = 1
    progress: bool | None = None  # None: a progress bar only when stderr is a terminal
    # Also log to TensorBoard (run_dir/tensorboard); needs the `tensorboard` package.
    tensorboard: bool = False
    # Optimizer steps per Lightning training_step (Keras's `steps_per_execution`; lightning_ft/fast.py).
    # 0 = ftmed decides (see lightning_ft.fast.resolve_steps); 1 = the plain path, one step per training_step.
    steps_per_execution: int = 0
    # Replay each block of steps from a CUDA graph. None = wherever it works (CUDA, 32-bit, one process,
    # an optimizer whose step is capturable); True = required (a run that cannot fails); False = never.
    cuda_graphs: bool | None = None
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
        if self.steps_per_execution < 0:
            raise ConfigError(f"steps_per_execution must be >= 0 (0 = automatic), got {self.steps_per_execution}")
        if self.cuda_graphs and (self.accelerator in ("cpu", "mps") or self.steps_per_execution == 1):
            raise ConfigError("CUDA graphs need a CUDA accelerator and steps_per_execution 0 (automatic) or > 1, "
                              f"got accelerator {self.accelerator!r}, steps_per_execution {self.steps_per_execution}")
        if self.tensorboard and importlib.util.find_spec("tensorboard") is None:
            raise ConfigError("TensorBoard logging needs the tensorboard package: pip install tensorboard")
        if self.mlflow and importlib.util.find_spec("mlflow") is None:
            raise ConfigError("MLflow logging needs the mlflow package: pip install 'ftmed[mlflow]' (or mlflow)")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _check_choice(what: str, value: Any, choices: tuple) -> None:
    if value not in choices:
        raise ConfigError(f"unknown {what} {value!r}; choose one of: {', '.join(map(str, choices))}")


# Both frameworks seed numpy's legacy generator (keras.utils.set_random_seed, Lightning's seed_everything),
# which takes 0 <= seed < 2**32; torch and the core's generators accept more, so numpy's range is the study's.
MAX_SEED = 2**32 - 1
# An upper bound a run can express: far beyond any study (the default is 20), small enough that a typo such
# as 99999999999999999999 is refused instead of training until killed.
MAX_EPOCHS = 100_000


def validate(config: ExperimentConfig) -> None:
    """Raise ConfigError naming the bad value and what would be accepted."""
    _check_choice("hidden activation", config.hidden_activation, HIDDEN_ACTIVATIONS)
    _check_choice("output activation", config.output_activation, OUTPUT_ACTIVATIONS)
    _check_choice("loss", config.loss, LOSS_MODES)
    _check_choice("validation mode", config.val_mode, VAL_MODES)
    _check_choice("init scheme", config.init, INIT_SCHEMES)
    _check_choice("image size", config.size, SIZES)
    _check_choice("shuffle policy", config.shuffle, SHUFFLE_POLICIES)
    if not config.hidden_units:
        raise ConfigError("hidden units must list at least one layer width, e.g. 512,256,128")
    if any((not isinstance(u, int)) or u < 1 for u in config.hidden_units):
        raise ConfigError(f"hidden units must be positive integers, got {list(config.hidden_units)}")
    if config.batch_size < 1:
        raise ConfigError(f"batch size must be >= 1, got {config.batch_size}")
    check_epochs(config.epochs)
    if not isinstance(config.seed, int) or not 0 <= config.seed <= MAX_SEED:
        raise ConfigError(f"seed must be an integer from 0 to {MAX_SEED} (2**32 - 1), got {config.seed!r}")
    if not 0.0 < config.val_fraction < 1.0:
        raise ConfigError(f"validation fraction must be in (0, 1), got {config.val_fraction}")
    validate_optimizer(config.optimizer)


def check_epochs(epochs: int) -> int:
    """`epochs` if it is an integer from 1 to MAX_EPOCHS, else ConfigError naming it and the range."""
    if isinstance(epochs, bool) or not isinstance(epochs, int) or not 1 <= epochs <= MAX_EPOCHS:
        raise ConfigError(f"epochs must be an integer from 1 to {MAX_EPOCHS:,}, got {epochs!r}")
    return epochs


# Bytes a float32 parameter costs while training: the weight, its gradient and up to two optimizer slots
# (Adam's moments). Activations are small beside this for an MLP at these batch sizes.
BYTES_PER_PARAMETER = 4 * 4


def parameter_count(hidden_units: tuple[int, ...], input_dim: int, n_classes: int) -> int:
    """Weights and biases of the MLP input_dim -> hidden_units -> n_classes."""
    widths = (input_dim, *hidden_units, n_classes)
    return sum((a + 1) * b for a, b in zip(widths, widths[1:]))


def physical_memory() -> int | None:
    """This machine's physical memory in bytes, or None where the OS does not say."""
    import os

    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def check_model_fits(config: ExperimentConfig, input_dim: int, n_classes: int, memory: int | None = None) -> None:
    """ConfigError, before anything is allocated, when training the network would need more than `memory`
    bytes (default: this machine's physical memory) for parameters, gradients and optimizer state."""
    memory = physical_memory() if memory is None else memory
    if memory is None:
        return
    needed = parameter_count(config.hidden_units, input_dim, n_classes) * BYTES_PER_PARAMETER
    if needed > memory:
        raise ConfigError(
            f"hidden units {'-'.join(map(str, config.hidden_units))} on {input_dim} inputs need about "
            f"{needed / 2**30:,.1f} GiB to train (weights, gradients, optimizer state), more than this machine's "
            f"{memory / 2**30:,.1f} GiB; choose smaller widths")


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
