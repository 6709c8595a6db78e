"""The LightningModule: the MLP from `build_mlp`, one shared step, Keras-style epoch metrics.

Metrics are accumulated as running sums on the device and reduced once per epoch (no per-step `log`,
no per-step sync): `train_loss` is the batch-size-weighted mean of the pre-update batch losses over the
epoch and `train_acc` the share of rows right before each update, like Keras's History; `val_*` are
computed on the end-of-epoch weights. On a multi-label task (`ftmed_core.tasks`) the loss is Keras's
`binary_crossentropy` and `*_acc` the share of label bits right at 0.5 (Keras's `BinaryAccuracy`).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable

import lightning.pytorch as L
import torch

from ftmed_core.config import ExperimentConfig
from ftmed_core.protocol import Weights
from ftmed_core.records import HISTORY_KEYS, atomic_write_text
from ftmed_core.runner import check_finite
from ftmed_core.tasks import head_for
from lightning_ft.losses import task_correct, task_loss
from lightning_ft.model import build_mlp
from lightning_ft.optimizers import build_optimizer


class MLPSystem(L.LightningModule):
    def __init__(self, config: dict, input_dim: int, n_classes: int, weights: Weights | None = None):
        super().__init__()
        self.save_hyperparameters(ignore=["weights"])  # enough to rebuild the model from a checkpoint
        self.config = ExperimentConfig.from_dict(config)
        self.model = build_mlp(self.config, input_dim, n_classes, weights)
        # Multi-label (ChestMNIST): label bits, per-finding sigmoid head, Keras binary_crossentropy.
        self.multi_label, self.head = head_for(self.config.dataset, self.config.output_activation)
        self.history: list[dict] = []  # one row per epoch (the core's HISTORY_KEYS)
        self.epoch_end: Callable[[int, dict], None] | None = None  # set by train.fit; never pickled to workers
        self.history_file: str | None = None  # rank 0 rewrites it each epoch (how ddp_spawn hands history back)
        self._sums: dict[str, torch.Tensor] = {}
        self._val: dict = {}
        self._epoch_started = 0.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def _shared_step(self, batch, stage: str) -> torch.Tensor:
        x, y, _ = batch
        logits = self.model(x)
        loss = task_loss(logits, y, self.head, self.config.loss, self.multi_label)
        correct = task_correct(logits.detach(), y, self.head, self.multi_label)
        self._sums[stage] += torch.stack([loss.detach().double() * len(y), correct.double(),
                                          torch.tensor(float(len(y)), dtype=torch.float64, device=y.device)])
        return loss

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        x, y, global_rows = batch
        if len(y) == 0:  # a DDP rank whose share of a tiny last batch is empty: contribute zero gradient
            return self.model(x).sum() * 0.0
        loss = self._shared_step(batch, "train")
        if self.trainer.world_size > 1:
            # DDP averages gradients over ranks; weight by this rank's share so the average is the
            # gradient of the mean loss over the global batch.
            loss = loss * (len(y) * self.trainer.world_size / global_rows)
        return loss

    def validation_step(self, batch, batch_idx: int) -> None:
        self._shared_step(batch, "val")

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return build_optimizer(self.model.parameters(), self.config.optimizer)

    # -- epoch bookkeeping -------------------------------------------------------------------------
    def _reset(self, stage: str) -> None:
        self._sums[stage] = torch.zeros(3, dtype=torch.float64, device=self.device)

    def _reduced(self, stage: str) -> tuple[float, float]:
        sums = self._sums[stage]
        if self.trainer.world_size > 1:
            sums = self.trainer.strategy.reduce(sums, reduce_op="sum")
        loss_sum, correct, rows = sums.tolist()
        return (loss_sum / rows, correct / rows) if rows else (float("nan"), float("nan"))

    def on_train_epoch_start(self) -> None:
        self._epoch_started = time.perf_counter()
        self._reset("train")

    def on_validation_epoch_start(self) -> None:
        self._reset("val")

    def on_validation_epoch_end(self) -> None:
        val_loss, val_acc = self._reduced("val")
        self._val = {"val_loss": val_loss, "val_acc": val_acc}
        self.log_dict(self._val, prog_bar=True)

    def on_train_epoch_end(self) -> None:
        train_loss, train_acc = self._reduced("train")
        row = {"train_loss": train_loss, "train_acc": train_acc,
               "val_loss": self._val.get("val_loss", float("nan")), "val_acc": self._val.get("val_acc", float("nan")),
               "epoch_seconds": time.perf_counter() - self._epoch_started}
        self.log_dict({"train_loss": train_loss, "train_acc": train_acc, "epoch_seconds": row["epoch_seconds"]})
        self.history.append(row)
        if self.history_file and self.trainer.is_global_zero:
            atomic_write_text(Path(self.history_file), json.dumps(self.history))
        epoch = self.current_epoch + 1
        if self.epoch_end is not None and self.trainer.is_global_zero:
            self.epoch_end(epoch, row)
        check_finite(train_loss, epoch,
                     history={key: [r.get(key) for r in self.history] for key in HISTORY_KEYS})

    def __getstate__(self):
        state = self.__dict__.copy()
        state["epoch_end"] = None  # a caller's callback stays in the caller's process (ddp_spawn pickles us)
        return state
