"""Building an `ExperimentConfig` from a registry variant plus command-line overrides (shared by commands)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from ftmed_core.config import ExperimentConfig, optimizer_config, parse_hidden, validate_optimizer
from ftmed_core.errors import ConfigError


def apply_overrides(
    config: ExperimentConfig,
    *,
    dataset: str | None = None,
    size: int | None = None,
    data_dir: Path | None = None,
    epochs: int | None = None,
    seed: int | None = None,
    batch_size: int | None = None,
    hidden: str | None = None,
    hidden_activation: str | None = None,
    output_activation: str | None = None,
    loss: str | None = None,
    val_mode: str | None = None,
    val_fraction: float | None = None,
    init: str | None = None,
    shuffle: str | None = None,
    optimizer: str | None = None,
    **optimizer_settings,
) -> ExperimentConfig:
    """`config` with every given (non-None) option applied; validation errors name the bad value."""
    changes = {
        "dataset": dataset, "size": size, "data_dir": str(data_dir) if data_dir is not None else None,
        "epochs": epochs, "seed": seed, "batch_size": batch_size,
        "hidden_units": parse_hidden(hidden) if hidden is not None else None,
        "hidden_activation": hidden_activation, "output_activation": output_activation, "loss": loss,
        "val_mode": val_mode, "val_fraction": val_fraction, "init": init, "shuffle": shuffle,
    }
    changes = {k: v for k, v in changes.items() if v is not None}
    opt = config.optimizer
    if optimizer is not None and optimizer != opt.name:
        opt = optimizer_config(optimizer)  # a different optimizer starts from its own Keras defaults
    settings = {k: v for k, v in optimizer_settings.items() if v is not None}
    if settings:
        opt = validate_optimizer(replace(opt, **settings))
    updated = replace(config, optimizer=opt, **changes)
    # A variant changed on the command line is no longer that variant: say so in its name.
    # The shuffle policy is protocol too: it is shown in the report's title and is part of the run key.
    protocol = {"data_dir", "epochs", "seed", "dataset", "size", "shuffle"}
    if any(k not in protocol for k in changes) or opt != config.optimizer:
        reference = replace(config, **{k: v for k, v in changes.items() if k in protocol})
        updated = replace(updated, name=f"{config.name}+{updated.describe_changes(reference)}")
    return updated
