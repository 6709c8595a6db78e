"""Data for Lightning: the core's arrays as tensors (made once), batched in the core's order.

Training batches follow `ftmed_core.protocol`: each epoch's permutation under the shuffle policy, consecutive
slices of `batch_size`, last partial batch kept. A batch is gathered with one `index_select` on the
training tensor: no per-sample Python work, no DataLoader workers, no collation. Lightning accepts any
iterable with a length as a dataloader, so the loaders here are small iterables yielding ready batches.

Each batch is `(x, y, global_rows)`. Under DDP every rank takes its contiguous share of every *global*
batch (`torch.tensor_split`), so the global batch stays `config.batch_size`; `global_rows` lets the
training step weight its loss so that DDP's gradient average equals the gradient of the global mean loss
even when the last batch does not split evenly.
"""

from __future__ import annotations

from typing import Callable, Iterator

import lightning.pytorch as L
import torch

from ftmed_core.config import ExperimentConfig
from ftmed_core.data import ExperimentData
from ftmed_core.protocol import batch_bounds, epoch_permutation, steps_per_epoch

Batch = tuple[torch.Tensor, torch.Tensor, int]


class EpochBatches:
    """The training batches of one epoch; `iter()` asks `epoch_fn` which epoch it is (0-based)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int, seed: int, shuffle: str | bool,
                 epoch_fn: Callable[[], int], rank: int = 0, world_size: int = 1):
        self.x, self.y = x, y
        self.batch_size, self.seed, self.shuffle = batch_size, seed, shuffle
        self.epoch_fn, self.rank, self.world_size = epoch_fn, rank, world_size

    def __len__(self) -> int:
        return steps_per_epoch(len(self.x), self.batch_size)

    def __iter__(self) -> Iterator[Batch]:
        n = len(self.x)
        order = None
        if self.shuffle not in (False, "none"):  # file order needs no index: batches are views
            perm = epoch_permutation(self.seed, self.epoch_fn(), n, self.shuffle)
            order = torch.from_numpy(perm).to(self.x.device)
        for start, stop in batch_bounds(n, self.batch_size):
            if order is None and self.world_size == 1:
                yield self.x[start:stop], self.y[start:stop], stop - start  # views, no copy
                continue
            rows = order[start:stop] if order is not None else torch.arange(start, stop, device=self.x.device)
            if self.world_size > 1:
                rows = torch.tensor_split(rows, self.world_size)[self.rank]
            yield self.x.index_select(0, rows), self.y.index_select(0, rows), stop - start


class SequentialBatches:
    """Validation/evaluation batches in file order; under DDP each rank gets a contiguous share of rows."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int, rank: int = 0, world_size: int = 1):
        bounds = torch.tensor_split(torch.arange(len(x)), world_size)[rank] if world_size > 1 else None
        if bounds is not None:
            lo, hi = (int(bounds[0]), int(bounds[-1]) + 1) if len(bounds) else (0, 0)
            x, y = x[lo:hi], y[lo:hi]
        self.x, self.y, self.batch_size = x, y, batch_size

    def __len__(self) -> int:
        return steps_per_epoch(len(self.x), self.batch_size) if len(self.x) else 0

    def __iter__(self) -> Iterator[Batch]:
        for start, stop in batch_bounds(len(self.x), self.batch_size):
            yield self.x[start:stop], self.y[start:stop], stop - start


class MedMNISTDataModule(L.LightningDataModule):
    """Train/val batches of an `ExperimentData`, in the core's order, on the training device."""

    def __init__(self, data: ExperimentData, config: ExperimentConfig, eval_batch_size: int = 1024):
        super().__init__()
        self.data, self.config, self.eval_batch_size = data, config, eval_batch_size
        self.tensors: dict[str, torch.Tensor] = {}

    def setup(self, stage: str | None = None) -> None:
        if self.tensors:
            return
        device = torch.device("cpu")
        if self.trainer is not None and self.trainer.strategy.root_device.type != "cpu":
            device = self.trainer.strategy.root_device  # the whole split lives on the accelerator
        d = self.data
        for name, array in (("x_train", d.x_train), ("y_train", d.y_train), ("x_val", d.x_val), ("y_val", d.y_val)):
            self.tensors[name] = torch.as_tensor(array).to(device)  # zero-copy on CPU

    def _rank_world(self) -> tuple[int, int]:
        if self.trainer is None:
            return 0, 1
        return self.trainer.global_rank, self.trainer.world_size

    def _current_epoch(self) -> int:
        return self.trainer.current_epoch if self.trainer is not None else 0

    def train_dataloader(self) -> EpochBatches:
        rank, world = self._rank_world()
        t = self.tensors
        return EpochBatches(t["x_train"], t["y_train"], self.config.batch_size, self.config.seed,
                            self.config.shuffle, self._current_epoch, rank, world)

    def val_dataloader(self) -> SequentialBatches:
        rank, world = self._rank_world()
        return SequentialBatches(self.tensors["x_val"], self.tensors["y_val"], self.eval_batch_size, rank, world)
