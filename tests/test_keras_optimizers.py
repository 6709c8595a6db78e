"""The optimizer registry against Keras itself: for every entry, the Keras class exists and its constructor
defaults are the registry's defaults (test_keras_model checks what keras_ref builds from them)."""

from __future__ import annotations

import inspect

import pytest

from ftmed_core.optimizers import OPTIMIZERS, REGISTRY
from keras_ref._backend import keras


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_registry_defaults_are_the_keras_constructor_defaults(name):
    spec = REGISTRY[name]
    signature = inspect.signature(getattr(keras.optimizers, spec.keras_class).__init__)
    keras_defaults = {field: signature.parameters[field].default for field in spec.fields}
    keras_defaults["weight_decay"] = keras_defaults["weight_decay"] or 0.0  # Keras: None = no decay
    assert keras_defaults == spec.defaults
