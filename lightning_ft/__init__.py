"""ftmed's Lightning adapter: the study's MLP as an nn.Module + LightningModule + DataModule.

Public entry points: `train(config, run_dir)` -> RunRecord, `fit` (the core's FitFunction), `build_mlp`,
`build_optimizer`, `load_checkpoint`, `MLPSystem`, `MedMNISTDataModule`.

Imported eagerly (torch and lightning load with the package; the CLI imports it inside commands only).
Eager on purpose: the submodule `lightning_ft.train` and the function `train` share a name, and importing
the submodule lazily later would rebind `lightning_ft.train` to the module.
"""

from lightning_ft.datamodule import MedMNISTDataModule
from lightning_ft.model import build_mlp, get_weights, set_weights
from lightning_ft.optimizers import SEMANTICS_TABLE, build_optimizer
from lightning_ft.system import MLPSystem
from lightning_ft.train import fit, load_checkpoint, train

__all__ = [
    "train", "fit", "load_checkpoint", "build_mlp", "get_weights", "set_weights", "build_optimizer",
    "SEMANTICS_TABLE", "MLPSystem", "MedMNISTDataModule",
]
