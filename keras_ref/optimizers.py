"""The config's optimizer as a Keras optimizer, every hyperparameter passed explicitly (Keras semantics).

Nothing is left to a Keras default: a default that moves between Keras versions would silently change
the study. `weight_decay=0.0` is passed as None (Keras's "no decay"): the same numbers, without an extra
`w - w * 0 * lr` op per variable per step. AdamW requires a float and gets it as is.
"""

from __future__ import annotations

from ftmed_core.config import OPTIMIZERS, OptimizerConfig, validate_optimizer
from ftmed_core.errors import ConfigError
from keras_ref._backend import keras


def _decay(opt: OptimizerConfig) -> float | None:
    return opt.weight_decay if opt.weight_decay > 0 else None


def build_optimizer(opt: OptimizerConfig) -> keras.optimizers.Optimizer:
    validate_optimizer(opt)
    if opt.semantics != "keras":
        raise ConfigError(f"keras_ref trains with Keras's own update rules; optimizer semantics "
                          f"{opt.semantics!r} is for the Lightning adapter (use semantics='keras')")
    lr, wd = opt.learning_rate, _decay(opt)
    if opt.name == "sgd":
        return keras.optimizers.SGD(learning_rate=lr, momentum=opt.momentum, nesterov=opt.nesterov,
                                    weight_decay=wd)
    if opt.name == "adam":
        return keras.optimizers.Adam(learning_rate=lr, beta_1=opt.beta_1, beta_2=opt.beta_2,
                                     epsilon=opt.epsilon, amsgrad=False, weight_decay=wd)
    if opt.name == "adamw":
        return keras.optimizers.AdamW(learning_rate=lr, beta_1=opt.beta_1, beta_2=opt.beta_2,
                                      epsilon=opt.epsilon, amsgrad=False, weight_decay=opt.weight_decay)
    if opt.name == "adamax":
        return keras.optimizers.Adamax(learning_rate=lr, beta_1=opt.beta_1, beta_2=opt.beta_2,
                                       epsilon=opt.epsilon, weight_decay=wd)
    if opt.name == "nadam":
        return keras.optimizers.Nadam(learning_rate=lr, beta_1=opt.beta_1, beta_2=opt.beta_2,
                                      epsilon=opt.epsilon, weight_decay=wd)
    if opt.name == "rmsprop":
        return keras.optimizers.RMSprop(learning_rate=lr, rho=opt.rho, momentum=opt.momentum,
                                        epsilon=opt.epsilon, centered=False, weight_decay=wd)
    if opt.name == "adagrad":
        return keras.optimizers.Adagrad(learning_rate=lr, initial_accumulator_value=opt.initial_accumulator_value,
                                        epsilon=opt.epsilon, weight_decay=wd)
    if opt.name == "adadelta":
        return keras.optimizers.Adadelta(learning_rate=lr, rho=opt.rho, epsilon=opt.epsilon, weight_decay=wd)
    if opt.name == "lion":
        return keras.optimizers.Lion(learning_rate=lr, beta_1=opt.beta_1, beta_2=opt.beta_2, weight_decay=wd)
    raise ConfigError(f"unknown optimizer {opt.name!r}; choose one of: {', '.join(OPTIMIZERS)}")
