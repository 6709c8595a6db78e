"""Which adapter trains a framework label: the one place the CLI and the Python API pick `lightning_ft`
or `keras_ref` (imported lazily, never both in one process)."""

from __future__ import annotations

import importlib.util
from typing import Callable

from ftmed_core.config import RuntimeConfig
from ftmed_core.errors import ConfigError
from ftmed_core.frameworks import canonical, keras_backend, prepare_keras_backend
from ftmed_core.records import RunRecord


def require_framework(framework: str) -> None:
    """A clear error, before anything runs, when the framework's libraries are not installed (a Keras label
    needs keras and its backend's library: tensorflow, jax or torch)."""
    framework = canonical(framework)
    needed = ["lightning"] if framework == "lightning" else [keras_backend(framework), "keras"]
    for module in needed:
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):  # a broken or blocked installation counts as missing
            found = False
        if not found:
            other = "lightning" if framework != "lightning" else "keras"
            raise ConfigError(f"{framework} runs need {module}, which is not installed here; "
                              f"install it or use --framework/--frameworks {other}")


def framework_train(framework: str, runtime: RuntimeConfig | None = None) -> Callable[..., RunRecord]:
    """The framework's `train(config, ...)`, imported only when needed (never both in one process).

    A Keras label (`keras`, `keras[jax]`, `keras[torch]`) selects the Keras backend before keras is
    imported; a process where keras is already loaded with another backend gets a ConfigError (one line).
    """
    require_framework(framework)
    framework = canonical(framework)
    if framework == "lightning":
        from lightning_ft import train
        return train
    prepare_keras_backend(keras_backend(framework), runtime.accelerator if runtime else "auto",
                          runtime.threads if runtime else 0)
    from keras_ref import train
    return train


def check_runtime(framework: str, runtime: RuntimeConfig) -> None:
    """ConfigError, before any run is claimed or any record written, when `framework` cannot honour `runtime`
    on this machine (an accelerator it lacks, several CPU devices without DDP, a precision the device lacks).

    Lightning is asked through `lightning_ft.training.check_runtime` (this imports torch); the Keras adapter
    checks its runtime before it claims a run, so nothing is asked here for a Keras label.
    """
    if canonical(framework) != "lightning":
        return
    require_framework(framework)
    from lightning_ft.training import check_runtime as check_lightning

    check_lightning(runtime)


def runtime_needs_check(runtime: RuntimeConfig) -> bool:
    """Whether `runtime` asks for anything beyond the default CPU/auto single process (only then is it worth
    importing a framework in a process that trains nothing itself, such as the grid's parent)."""
    return (runtime.accelerator not in ("auto", "cpu") or runtime.devices > 1 or runtime.precision != "32"
            or runtime.strategy != "auto")
