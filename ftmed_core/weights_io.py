"""The framework-neutral weights file: kernels and biases in the core's layout, for exchange both ways.

Format: an `.npz` with `kernel_{i}` float32 (fan_in, fan_out) and `bias_{i}` float32 (fan_out,) per Dense
layer i, plus `meta` (JSON: ftmed version, layer sizes, and whatever the writer adds -- config, framework).
A Keras kernel is stored as is; a torch `nn.Linear.weight` is stored transposed.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np

from ftmed_core.errors import DataError
from ftmed_core.protocol import Weights
from ftmed_core.records import atomic_write_bytes


def save_weights(path: str | Path, weights: Weights, meta: dict | None = None) -> Path:
    from ftmed_core import __version__

    path = Path(path)
    arrays = {}
    for i, (kernel, bias) in enumerate(weights):
        kernel, bias = np.asarray(kernel, dtype=np.float32), np.asarray(bias, dtype=np.float32)
        if kernel.ndim != 2 or bias.shape != (kernel.shape[1],):
            raise DataError(f"layer {i}: kernel {kernel.shape} and bias {bias.shape} do not form a Dense layer")
        arrays[f"kernel_{i}"], arrays[f"bias_{i}"] = kernel, bias
    sizes = [int(weights[0][0].shape[0])] + [int(np.shape(k)[1]) for k, _ in weights]
    info = {"ftmed": __version__, "layout": "kernel (fan_in, fan_out)", "layer_sizes": sizes, **(meta or {})}
    arrays["meta"] = np.array(json.dumps(info))
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, buffer.getvalue())
    return path


def load_weights(path: str | Path) -> tuple[Weights, dict]:
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            meta = json.loads(str(npz["meta"])) if "meta" in npz.files else {}
            n = sum(1 for k in npz.files if k.startswith("kernel_"))
            weights = [(npz[f"kernel_{i}"].astype(np.float32), npz[f"bias_{i}"].astype(np.float32)) for i in range(n)]
    except FileNotFoundError:
        raise DataError(f"weights file {path} does not exist") from None
    except (OSError, ValueError, KeyError) as exc:
        raise DataError(f"{path} is not an ftmed weights file ({exc})") from None
    if not weights:
        raise DataError(f"{path} holds no kernel_0/bias_0 arrays: not an ftmed weights file")
    for i in range(1, len(weights)):
        if weights[i][0].shape[0] != weights[i - 1][0].shape[1]:
            raise DataError(f"{path}: layer {i} expects {weights[i][0].shape[0]} inputs, "
                            f"layer {i - 1} gives {weights[i - 1][0].shape[1]}")
    return weights, meta
