"""A finished Lightning run's final weights as an ONNX graph, through torch's TorchScript-based exporter.

The graph is the study's network (`build_mlp`) followed by the run's output activation; with
`image_shape`, the study's input pipeline comes first: uint8 pixels -> float32 / 255 -> flattened
(float32 division, bitwise `ftmed_core.data.preprocess_images`). Names are set by `ftmed.export`.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from lightning_ft.training import LAST_CHECKPOINT, load_checkpoint

OUTPUT_ACTIVATIONS = {"softmax": lambda z: torch.softmax(z, dim=1), "sigmoid": torch.sigmoid,
                      "tanh": torch.tanh, "linear": lambda z: z}


def preprocess(images: torch.Tensor) -> torch.Tensor:
    """uint8 images (batch, H, W[, C]) -> float32 pixels / 255, flattened: bitwise
    `ftmed_core.data.preprocess_images`, as graph operations."""
    return torch.flatten(images.to(torch.float32) / 255.0, 1)  # a Python float: a float32 constant in the graph


class _Exported(nn.Module):
    def __init__(self, model: nn.Module, output_activation: str, preprocess: bool):
        super().__init__()
        self.model, self.activation, self.preprocess = model, OUTPUT_ACTIVATIONS[output_activation], preprocess

    def forward(self, x):
        if self.preprocess:
            x = preprocess(x)
        logits = self.model(x)
        return logits, self.activation(logits)


def export_onnx(run_dir: Path, path: Path, output_activation: str, input_dim: int,
                image_shape: tuple[int, ...] | None) -> None:
    """Write the run's `checkpoints/last.ckpt` (the weights its test logits came from) to `path`."""
    model = load_checkpoint(Path(run_dir) / LAST_CHECKPOINT).eval()
    module = _Exported(model, output_activation, image_shape is not None).eval()
    example = (torch.zeros((2, *image_shape), dtype=torch.uint8) if image_shape is not None
               else torch.zeros((2, input_dim), dtype=torch.float32))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter; needs only onnx
        torch.onnx.export(module, (example,), str(path), input_names=["input"],
                          output_names=["logits", "probabilities"], opset_version=17, dynamo=False,
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"},
                                        "probabilities": {0: "batch"}})
