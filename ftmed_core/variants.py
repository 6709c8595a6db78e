"""The registry of named experiment variants: the study's five, exactly as it ran them, plus extensions.

Each variant is `replace(BASELINE, ...)` with a one-line purpose. `study_accuracy` is the single-run test
accuracy (%) the study reported, shown as a reference column next to ftmed's multi-seed means.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from ftmed_core.config import ExperimentConfig, OptimizerConfig, optimizer_config
from ftmed_core.errors import ConfigError


@dataclass(frozen=True)
class Variant:
    config: ExperimentConfig
    purpose: str
    group: str
    study_accuracy: float | None = None

    @property
    def name(self) -> str:
        return self.config.name


# The study's baseline: 2352-512-256-128-9 ReLU MLP, softmax, Adam lr 1e-3, batch 128, 20 epochs,
# validation_split=0.2, Keras's glorot-uniform init.
BASELINE = ExperimentConfig(name="baseline")


def _variant(name: str, purpose: str, group: str, study_accuracy: float | None = None, **changes) -> Variant:
    return Variant(replace(BASELINE, name=name, **changes), purpose, group, study_accuracy)


def _opt(name: str, **overrides) -> OptimizerConfig:
    return optimizer_config(name, **overrides)


_VARIANTS = [
    Variant(BASELINE, "the study's baseline: 512-256-128 ReLU, softmax, Adam lr 1e-3", "study", 60.54),
    _variant("sigmoid-output", "sigmoid instead of softmax on the output layer", "study", 58.02,
             output_activation="sigmoid"),
    _variant("lr-1e-4", "Adam with a 10x smaller learning rate", "study", 59.15,
             optimizer=_opt("adam", learning_rate=1e-4)),
    _variant("sgd-momentum", "SGD (lr 1e-3, momentum 0.9) instead of Adam", "study", 58.93,
             optimizer=_opt("sgd", learning_rate=1e-3, momentum=0.9)),
    _variant("wider-deeper", "more parameters: 1024-512-512-256-128 hidden layers", "study", 57.17,
             hidden_units=(1024, 512, 512, 256, 128)),
    # Every supported optimizer at Keras's own defaults (what `keras.optimizers.X()` gives).
    _variant("sgd", "plain SGD at Keras's default lr 0.01, no momentum", "optimizers", optimizer=_opt("sgd")),
    _variant("sgd-nesterov", "SGD lr 0.01 with Nesterov momentum 0.9", "optimizers",
             optimizer=_opt("sgd", momentum=0.9, nesterov=True)),
    _variant("rmsprop", "RMSprop at Keras defaults (rho 0.9, eps inside the sqrt)", "optimizers",
             optimizer=_opt("rmsprop")),
    _variant("adagrad", "Adagrad at Keras defaults (accumulator starts at 0.1)", "optimizers",
             optimizer=_opt("adagrad")),
    _variant("adadelta", "Adadelta at Keras defaults (lr 1e-3, rho 0.95)", "optimizers",
             optimizer=_opt("adadelta")),
    _variant("adamax", "Adamax at Keras defaults", "optimizers", optimizer=_opt("adamax")),
    _variant("nadam", "Nadam at Keras defaults (0.96^t momentum schedule)", "optimizers",
             optimizer=_opt("nadam")),
    _variant("adamw", "AdamW at Keras defaults (decoupled weight decay 0.004)", "optimizers",
             optimizer=_opt("adamw")),
    _variant("lion", "Lion at Keras defaults (lr 1e-3, betas 0.9/0.99)", "optimizers",
             optimizer=_opt("lion")),
    # Hidden activations other than ReLU.
    _variant("tanh", "tanh hidden activations", "activations", hidden_activation="tanh"),
    _variant("elu", "ELU hidden activations", "activations", hidden_activation="elu"),
    _variant("gelu", "GELU hidden activations (exact erf form in both frameworks)", "activations",
             hidden_activation="gelu"),
    _variant("leaky-relu", "leaky ReLU hidden activations (negative slope 0.2, Keras's default)",
             "activations", hidden_activation="leaky_relu"),
    # Learning-rate sweep around the baseline's Adam.
    _variant("lr-1e-2", "Adam lr 1e-2: too large?", "lr-sweep", optimizer=_opt("adam", learning_rate=1e-2)),
    _variant("lr-3e-3", "Adam lr 3e-3", "lr-sweep", optimizer=_opt("adam", learning_rate=3e-3)),
    _variant("lr-3e-4", "Adam lr 3e-4", "lr-sweep", optimizer=_opt("adam", learning_rate=3e-4)),
    _variant("lr-1e-5", "Adam lr 1e-5: too small?", "lr-sweep", optimizer=_opt("adam", learning_rate=1e-5)),
    # What the sigmoid variant would have been had Keras used the probabilities it reports.
    _variant("sigmoid-output-probability-loss",
             "sigmoid output with the literal probability-space loss (what the study's code reads as)",
             "findings", output_activation="sigmoid", loss="probability"),
    _variant("torch-init", "torch's default Linear init (U(+-1/sqrt(fan_in)) weights and biases)",
             "findings", init="torch_default"),
]

VARIANTS: dict[str, Variant] = {v.name: v for v in _VARIANTS}
GROUPS: dict[str, tuple[str, ...]] = {}
for _v in _VARIANTS:
    GROUPS.setdefault(_v.group, ())
    GROUPS[_v.group] += (_v.name,)
GROUPS["all"] = tuple(VARIANTS)
STUDY = GROUPS["study"]


def get_variant(name: str) -> Variant:
    if name not in VARIANTS:
        raise ConfigError(f"unknown variant {name!r}; choose one of: {', '.join(VARIANTS)}")
    return VARIANTS[name]


def select_variants(spec: str | list[str]) -> list[Variant]:
    """'study', 'all', a group name, or a comma-separated list of names (groups may be mixed in)."""
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    names: list[str] = []
    for item in (i.strip() for i in items):
        if not item:
            continue
        expanded = GROUPS.get(item, (item,))
        for name in expanded:
            get_variant(name)
            if name not in names:
                names.append(name)
    if not names:
        raise ConfigError(f"no variants selected; choose groups ({', '.join(GROUPS)}) or names")
    return [VARIANTS[n] for n in names]
