"""The config's optimizer as a Keras optimizer, every hyperparameter passed explicitly (Keras semantics).

The class and its arguments come from the registry (`ftmed_core.optimizers`): `keras.optimizers.<keras_class>`
with every used field of the config. Nothing is left to a Keras default: a default that moves between Keras
versions would silently change the study. `weight_decay=0.0` is passed as None (Keras's "no decay": the same
numbers without an extra `w - w * 0 * lr` op); a class that requires a float (AdamW) gets it as is.
"""

from __future__ import annotations

from ftmed_core.errors import ConfigError
from ftmed_core.optimizers import OptimizerConfig, keras_kwargs, optimizer_spec, validate_optimizer
from keras_ref._backend import keras


def build_optimizer(opt: OptimizerConfig) -> keras.optimizers.Optimizer:
    validate_optimizer(opt)
    if opt.semantics != "keras":
        raise ConfigError(f"keras_ref trains with Keras's own update rules; optimizer semantics "
                          f"{opt.semantics!r} is for the Lightning adapter (use semantics='keras')")
    return getattr(keras.optimizers, optimizer_spec(opt.name).keras_class)(**keras_kwargs(opt))
