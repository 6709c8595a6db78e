"""Framework labels: `lightning`, and Keras 3 on each of its backends -- `keras` (TensorFlow), `keras[jax]`,
`keras[torch]` -- and what follows from the label: the Keras backend, the loss formula that backend computes,
the label's spelling in run keys, and the environment a process must have before it imports keras.

Keras fixes its backend when it is first imported (KERAS_BACKEND), so each Keras backend trains in a
process of its own; `prepare_keras_backend` sets the variables before that import and refuses, with one
line, a process where keras is already loaded with another backend. Stdlib only: it sets environment
variables and reads `sys.modules`, it never imports a framework.

The loss, read in keras/src/backend/{tensorflow,jax,torch}/nn.py (keras 3.15) and measured
(tests/test_keras_backends.py): `categorical_crossentropy(from_logits=False)` on TensorFlow takes the
logits a softmax or sigmoid activation attaches to its output (`_keras_logits`) and computes softmax
cross-entropy on them; the JAX and torch backends have no such shortcut and always compute
-sum(y log clip(p / sum p, 1e-7, 1 - 1e-7)) on the activated outputs -- the core's "probability" mode.
So the config's loss "keras" (the study's plain `categorical_crossentropy`) means the "probability" formula
on `keras[jax]` and `keras[torch]`; `effective_loss` says which formula a framework computes.
"""

from __future__ import annotations

import os
import sys

from ftmed_core.errors import ConfigError

KERAS_BACKENDS = ("tensorflow", "jax", "torch")
# The label of each Keras backend; TensorFlow keeps the plain "keras" of the study (and of existing records).
KERAS_LABELS = {"tensorflow": "keras", "jax": "keras[jax]", "torch": "keras[torch]"}
FRAMEWORKS = ("lightning", *KERAS_LABELS.values())
# Accepted spellings -> the label (`keras[tensorflow]` is the same framework as `keras`).
_ALIASES = {"keras[tensorflow]": "keras", "keras[tf]": "keras"}
# The loss formula each Keras backend computes for the config's loss "keras" (see the module docstring).
_KERAS_LOSS_ON = {"tensorflow": "keras", "jax": "probability", "torch": "probability"}


def canonical(label: str) -> str:
    """The framework's label for any accepted spelling; ConfigError naming the choices otherwise."""
    text = str(label).strip().lower()
    text = _ALIASES.get(text, text)
    if text not in FRAMEWORKS:
        raise ConfigError(f"unknown framework {label!r}; choose one of: {', '.join(FRAMEWORKS)}")
    return text


def parse_frameworks(text: str) -> list[str]:
    """'lightning,keras,keras[jax]' -> the labels in that order (duplicates dropped); ConfigError otherwise."""
    labels = []
    for part in str(text).split(","):
        if part.strip():
            label = canonical(part)
            if label not in labels:
                labels.append(label)
    if not labels:
        raise ConfigError(f"no framework given in {text!r}; choose from: {', '.join(FRAMEWORKS)}")
    return labels


def is_keras(label: str) -> bool:
    return canonical(label) != "lightning"


def keras_backend(label: str) -> str:
    """The Keras backend a Keras label names ('keras' -> 'tensorflow')."""
    label = canonical(label)
    for backend, name in KERAS_LABELS.items():
        if name == label:
            return backend
    raise ConfigError(f"{label!r} is not a Keras framework; choose one of: {', '.join(KERAS_LABELS.values())}")


def keras_label(backend: str) -> str:
    if backend not in KERAS_LABELS:
        raise ConfigError(f"unknown Keras backend {backend!r}; choose one of: {', '.join(KERAS_BACKENDS)}")
    return KERAS_LABELS[backend]


def slug(label: str) -> str:
    """The label as it appears in run keys and file names: 'keras[jax]' -> 'keras-jax'."""
    return canonical(label).replace("[", "-").replace("]", "")


def effective_loss(label: str, loss: str) -> str:
    """The loss formula (a core loss mode) `label` computes for the config's `loss`.

    Lightning computes exactly the mode it is given. A Keras backend computes the study's
    `categorical_crossentropy` for "keras" (softmax CE on the logits on TensorFlow, the probability formula
    on JAX and torch) and keras_ref's probability loss for "probability" on every backend.
    """
    label = canonical(label)
    if label == "lightning" or loss != "keras":
        return loss
    return _KERAS_LOSS_ON[keras_backend(label)]


def matching_lightning_loss(label: str, loss: str) -> str:
    """The Lightning loss mode that computes what `label` computes for `loss` (the exact counterpart)."""
    return effective_loss(label, loss)


def loaded_keras_backend() -> str | None:
    """The backend of the keras already imported in this process, or None when keras is not loaded."""
    keras = sys.modules.get("keras")
    if keras is None:
        return None
    try:
        return str(keras.backend.backend())
    except AttributeError:  # a half-imported keras
        return os.environ.get("KERAS_BACKEND")


def keras_backend_environment(backend: str, accelerator: str = "auto", threads: int = 0,
                              environ: dict | None = None) -> dict[str, str]:
    """The environment variables a process needs before `import keras` to run `backend` (see
    `prepare_keras_backend`), given the current `environ` (default: os.environ). Returns only the changes."""
    if backend not in KERAS_BACKENDS:
        raise ConfigError(f"unknown Keras backend {backend!r}; choose one of: {', '.join(KERAS_BACKENDS)}")
    environ = os.environ if environ is None else environ
    changes = {"KERAS_BACKEND": backend}
    if backend == "jax":
        if accelerator == "cpu":
            changes["JAX_PLATFORMS"] = "cpu"
        flags = environ.get("XLA_FLAGS", "")
        if "xla_gpu_deterministic_ops" not in flags:
            flags = (flags + " --xla_gpu_deterministic_ops=true").strip()
        if threads == 1 and "xla_cpu_multi_thread_eigen" not in flags:
            flags += " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
        changes["XLA_FLAGS"] = flags.strip()
    elif backend == "torch":
        if accelerator == "cpu":
            changes["KERAS_TORCH_DEVICE"] = "cpu"
        if "CUBLAS_WORKSPACE_CONFIG" not in environ:
            changes["CUBLAS_WORKSPACE_CONFIG"] = ":4096:8"
    return changes


def prepare_keras_backend(backend: str, accelerator: str = "auto", threads: int = 0) -> None:
    """Make the next `import keras` in this process load `backend`; call it before keras_ref is imported.

    Sets KERAS_BACKEND, and for JAX the platform (JAX_PLATFORMS=cpu for accelerator "cpu"), deterministic
    GPU reductions (XLA_FLAGS --xla_gpu_deterministic_ops) and, for `threads` 1, XLA's single-threaded CPU
    runtime (XLA has no flag for N > 1 CPU threads: it uses one per core); for torch the device
    (KERAS_TORCH_DEVICE=cpu for "cpu") and cuBLAS's deterministic workspace. Raises ConfigError (one line)
    when keras is already imported with another backend: Keras cannot switch backends in a running process.
    """
    changes = keras_backend_environment(backend, accelerator, threads)
    loaded = loaded_keras_backend()
    if loaded is not None:
        if loaded != backend:
            raise ConfigError(
                f"keras is already imported in this process with the {loaded!r} backend and cannot switch to "
                f"{backend!r}; run {keras_label(backend)} in a fresh process (ftmed compare does)")
        return
    os.environ.update(changes)
