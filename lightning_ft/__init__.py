"""ftmed's Lightning adapter: the study's MLP as an nn.Module + LightningModule + DataModule.

Public entry points: `train(config, run_dir)` -> RunRecord, `fit` (the core's FitFunction), `build_mlp`,
`build_optimizer`, `load_checkpoint`, `MLPSystem`, `MedMNISTDataModule`.

Imported eagerly (torch and lightning load with the package; the CLI imports it inside commands only).
The module `lightning_ft.training` holds `train`, `fit` and `load_checkpoint`.
"""

import sys

if "tensorflow" in sys.modules and "triton" not in sys.modules:
    # Loading triton's native library after TensorFlow's segfaults the process (measured: torch 2.14,
    # TF 2.21: `import tensorflow; import triton` -> SIGSEGV). lightning -> torchmetrics -> torchvision
    # -> torch._dynamo probes for triton at import, so a process that imported TF first (a parity test,
    # a pytest session collecting keras tests first) would crash here. A None entry makes the probe see
    # "not installed"; only Triton kernels (torch.compile on GPU) are lost, which ftmed does not use.
    sys.modules["triton"] = None  # type: ignore[assignment]

from lightning_ft.datamodule import MedMNISTDataModule  # noqa: E402
from lightning_ft.model import build_mlp, get_weights, set_weights  # noqa: E402
from lightning_ft.optimizers import SEMANTICS_TABLE, build_optimizer  # noqa: E402
from lightning_ft.system import MLPSystem  # noqa: E402
from lightning_ft.training import fit, load_checkpoint, train  # noqa: E402

__all__ = [
    "train", "fit", "load_checkpoint", "build_mlp", "get_weights", "set_weights", "build_optimizer",
    "SEMANTICS_TABLE", "MLPSystem", "MedMNISTDataModule",
]
