"""The optimizer registry against Keras itself: for every entry, the Keras class exists and its constructor
defaults are the registry's defaults, and keras_ref passes every used field explicitly."""

from __future__ import annotations

import inspect

import pytest

from ftmed_core.optimizers import OPTIMIZER_DEFAULTS, OPTIMIZERS, REGISTRY, keras_kwargs
from keras_ref._backend import keras
from keras_ref.optimizers import build_optimizer


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_registry_defaults_are_the_keras_constructor_defaults(name):
    spec = REGISTRY[name]
    signature = inspect.signature(getattr(keras.optimizers, spec.keras_class).__init__)
    keras_defaults = {field: signature.parameters[field].default for field in spec.fields}
    keras_defaults["weight_decay"] = keras_defaults["weight_decay"] or 0.0  # Keras: None = no decay
    assert keras_defaults == spec.defaults


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_keras_optimizer_gets_every_used_field(name):
    opt = OPTIMIZER_DEFAULTS[name]
    built = build_optimizer(opt)
    assert type(built).__name__ == REGISTRY[name].keras_class
    assert set(REGISTRY[name].fields) <= set(keras_kwargs(opt))
    config = built.get_config()
    for field in REGISTRY[name].fields:
        if field != "weight_decay":
            assert config[field] == pytest.approx(getattr(opt, field)), field
