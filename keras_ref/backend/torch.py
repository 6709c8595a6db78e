"""keras_ref on Keras's torch backend: torch's runtime settings, the core's batches as a PyDataset, eager
steps (one per call: Keras's torch trainer accepts no other `steps_per_execution`), and autograd for the
step `fit` differentiates. The functions every backend module provides are listed in
keras_ref/backend/__init__.py.

Against TensorFlow: `torch.use_deterministic_algorithms(True)` (cuBLAS's workspace is set before import,
`ftmed_core.frameworks`); `torch.set_num_threads`; TF32 off for matmul and cuDNN.
"""

from __future__ import annotations

import keras
import torch

from ftmed_core.config import RuntimeConfig
from ftmed_core.errors import ConfigError
from ftmed_core.runner import resolve_threads
from keras_ref.backend.common import (  # noqa: F401  (shared with the other non-TensorFlow backend)
    CoreBatchSequence, check_one_device, distribution_scope, eval_sequence, fresh_output, saving_quietly,
    seed_keras_and_numpy,
)

STEPS_PER_EXECUTION = 1  # the only value Keras's torch trainer accepts
JIT_COMPILE = False  # eager torch, as Lightning (no torch.compile)


def configure_runtime(runtime: RuntimeConfig, seed: int) -> dict:
    """Apply the runtime settings to torch; return where the run executes (for the record). One device."""
    from keras.src.backend.torch.core import get_device

    check_one_device(runtime, "torch")
    requested = resolve_threads(runtime)
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
    seed_keras_and_numpy(seed)
    torch.manual_seed(seed)
    return {"device": device, "threads": torch.get_num_threads(), "threads_requested": requested,
            "gpus": 1 if device.startswith("cuda") else 0,
            "op_determinism": torch.are_deterministic_algorithms_enabled()}


def limit_threads(threads: int) -> None:
    torch.set_num_threads(threads)


def versions() -> dict:
    return {"torch": torch.__version__}


training_batches = CoreBatchSequence
eval_batches = eval_sequence


def gradient_step(model: keras.Model):
    """`compute_loss` then `backward()`, as Keras's torch `train_step`; gradients from the variables."""
    from keras.src.backend.torch.core import convert_to_tensor

    def step(x, y_onehot):
        for v in model.trainable_variables:
            v.value.grad = None
        xt, yt = convert_to_tensor(x), convert_to_tensor(y_onehot)
        y_pred = model(xt, training=True)
        loss = model.compute_loss(x=xt, y=yt, y_pred=y_pred, training=True)
        loss.backward()
        with torch.no_grad():
            return loss.detach(), [v.value.grad.detach().clone() for v in model.trainable_variables]

    return step
