"""What keras_ref does differently on the JAX and torch backends: runtime (devices, threads, seeds,
determinism) and feeding. TensorFlow's own versions stay in keras_ref/training.py.

| TensorFlow (training.py)             | JAX                                              | torch                                             |
|--------------------------------------|--------------------------------------------------|---------------------------------------------------|
| `CoreBatches`: tf.data gather by index | `CoreBatchSequence`: a `keras.utils.PyDataset` of numpy batches gathered by index, epoch set by a callback | the same |
| `enable_op_determinism()`            | deterministic on CPU; GPU: XLA_FLAGS --xla_gpu_deterministic_ops (set before import, ftmed_core.frameworks) | `torch.use_deterministic_algorithms(True)`; cuBLAS workspace set before import |
| TF intra/inter-op threads            | XLA CPU threads: 1 via XLA_FLAGS before import, else one per core (XLA has no N-thread flag) | `torch.set_num_threads(threads)` |
| TF32 off on GPU                      | `jax_default_matmul_precision="highest"` (float32 matmuls, no TF32) | `torch.backends.{cuda.matmul,cudnn}.allow_tf32 = False` |
| `keras.utils.set_random_seed`        | the same seeds without importing TensorFlow (`seed_everything`) | the same, plus `torch.manual_seed` |
| `steps_per_execution=16`             | 16 (one jitted call runs 16 steps)               | 1: Keras's torch trainer accepts no other value   |
| `jit_compile=False`                  | True: JAX runs everything through XLA; eager JAX dispatches op by op | False (eager torch, as Lightning) |

The weights come from the core (model.py) and the batch order from the core (`epoch_permutation`), on every
backend, so a seed means the same start and the same batches everywhere.
"""

from __future__ import annotations

import os
import random

import numpy as np

from ftmed_core.config import RuntimeConfig
from ftmed_core.data import Split, one_hot
from ftmed_core.protocol import epoch_permutation, steps_per_epoch
from ftmed_core.errors import ConfigError
from ftmed_core.runner import resolve_threads
from keras_ref._backend import BACKEND, keras

# Train steps per call into the compiled train function, per backend (see the table above).
STEPS_PER_EXECUTION = {"tensorflow": 16, "jax": 16, "torch": 1}


def seed_everything(seed: int) -> None:
    """What `keras.utils.set_random_seed` does, minus `tf.random.set_seed`: that call imports TensorFlow
    (when installed) into a JAX or torch process. Nothing in keras_ref draws from these generators (weights
    and batch order come from the core); they are seeded so that any Keras-side randomness repeats."""
    from keras.src.backend.common import global_state
    from keras.src.random import seed_generator
    from keras.src.utils import rng_utils

    global_state.set_global_attribute(rng_utils.GLOBAL_RANDOM_SEED, seed)
    global_state.set_global_attribute(seed_generator.GLOBAL_SEED_GENERATOR, None)
    random.seed(seed)
    np.random.seed(seed)
    if BACKEND == "torch":
        import torch

        torch.manual_seed(seed)


def _jax_runtime(runtime: RuntimeConfig, requested: int) -> dict:
    import jax

    gpus = [d for d in jax.devices() if d.platform == "gpu"] if runtime.accelerator != "cpu" else []
    if runtime.accelerator == "gpu" and not gpus:
        raise ConfigError("accelerator 'gpu' was asked for, but JAX sees no GPU; choose auto or cpu")
    if gpus:
        jax.config.update("jax_default_matmul_precision", "highest")  # no TF32 on Ampere and newer
    device = str(gpus[0]) if gpus else "cpu"
    single = "xla_cpu_multi_thread_eigen=false" in os.environ.get("XLA_FLAGS", "")
    return {"device": device, "threads": 1 if single else resolve_threads(RuntimeConfig()),
            "threads_requested": requested, "gpus": 1 if gpus else 0,
            "xla_flags": os.environ.get("XLA_FLAGS", ""),
            # XLA on CPU is deterministic; on GPU, --xla_gpu_deterministic_ops (set before import).
            "op_determinism": True}


def _torch_runtime(runtime: RuntimeConfig, requested: int) -> dict:
    import torch

    from keras.src.backend.torch.core import get_device

    device = str(get_device())
    if runtime.accelerator == "gpu" and not device.startswith("cuda"):
        raise ConfigError("accelerator 'gpu' was asked for, but Keras's torch backend sees no GPU; "
                          "choose auto or cpu")
    if runtime.accelerator == "cpu" and device != "cpu":
        raise ConfigError("accelerator 'cpu' must be chosen before keras is imported "
                          "(ftmed_core.frameworks.prepare_keras_backend sets KERAS_TORCH_DEVICE)")
    torch.set_num_threads(requested)
    if device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    if runtime.deterministic:
        torch.use_deterministic_algorithms(True)
    return {"device": device, "threads": torch.get_num_threads(), "threads_requested": requested,
            "gpus": 1 if device.startswith("cuda") else 0,
            "op_determinism": torch.are_deterministic_algorithms_enabled()}


def configure_runtime(runtime: RuntimeConfig, seed: int) -> dict:
    """Apply the runtime settings to the JAX or torch backend; return where the run executes (for the record).

    One device: Keras's JAX and torch trainers have no MirroredStrategy counterpart that keras_ref uses.
    """
    if runtime.num_nodes != 1 or runtime.devices != 1:
        raise ConfigError(f"keras_ref on the {BACKEND} backend trains on one device; got devices="
                          f"{runtime.devices}, num_nodes={runtime.num_nodes}")
    if runtime.accelerator == "mps":
        raise ConfigError(f"accelerator 'mps' is not supported by keras_ref on {BACKEND}; choose auto, cpu or gpu")
    if runtime.precision == "16-mixed":
        raise ConfigError(f"precision 16-mixed (loss scaling) is TensorFlow-only in keras_ref; on {BACKEND} use "
                          f"32 or bf16-mixed")
    requested = resolve_threads(runtime)
    env = _jax_runtime(runtime, requested) if BACKEND == "jax" else _torch_runtime(runtime, requested)
    seed_everything(seed)
    return env


class CoreBatchSequence(keras.utils.PyDataset):
    """The core's batches of a split as a `keras.utils.PyDataset` (numpy arrays): batch i of the current
    epoch's order under the shuffle policy (file order for `shuffle="none"`, as for evaluation).

    `callback` sets `epoch` at the start of each Keras epoch; Keras builds the epoch's iterator after
    `on_epoch_begin`, and with one worker and `fit(shuffle=False)` it reads the batches in index order in
    the training thread. Each batch is gathered from the split's memory map and converted to float32 on
    its own (`Split.rows`), so memory holds one epoch's order and one batch, never a split; the last
    partial batch is kept.
    """

    def __init__(self, split: Split, n_classes: int, batch_size: int, seed: int = 0,
                 shuffle: str | bool = "none"):
        super().__init__(workers=1, use_multiprocessing=False)
        self.split, self.n_classes, self.batch_size = split, n_classes, batch_size
        self.seed, self.shuffle = seed, shuffle
        self.epoch = 0
        self.steps = steps_per_epoch(len(split), batch_size)
        self.callback = SetEpoch(self)
        self._order: tuple[int, np.ndarray | None] | None = None

    @property
    def dataset(self) -> "CoreBatchSequence":
        """What `fit` consumes (as `CoreBatches.dataset` on TensorFlow): the sequence itself."""
        return self

    def __len__(self) -> int:
        return self.steps

    def order(self) -> np.ndarray | None:
        """This epoch's row order (None: file order), drawn once per epoch."""
        if self._order is None or self._order[0] != self.epoch:
            order = (None if self.shuffle in (False, "none")
                     else epoch_permutation(self.seed, self.epoch, len(self.split), self.shuffle))
            self._order = (self.epoch, order)
        return self._order[1]

    def __getitem__(self, index: int):
        if not 0 <= index < self.steps:
            raise IndexError(index)
        start, stop = index * self.batch_size, min((index + 1) * self.batch_size, len(self.split))
        order = self.order()
        rows = slice(start, stop) if order is None else order[start:stop]
        return self.split.rows(rows), one_hot(self.split.labels[rows], self.n_classes)


class SetEpoch(keras.callbacks.Callback):
    """Sets `batches.epoch` (a CoreBatchSequence's or keras_ref.training.CoreBatches') at each epoch's start."""

    def __init__(self, batches):
        super().__init__()
        self.batches = batches

    def on_epoch_begin(self, epoch, logs=None):
        self.batches.epoch = epoch


def versions() -> dict:
    """The backend library's version, for the run record."""
    if BACKEND == "jax":
        import jax

        return {"jax": jax.__version__}
    import torch

    return {"torch": torch.__version__}
