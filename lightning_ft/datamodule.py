"""Data for Lightning: the core's splits, batched in the core's order, converted to float32 a batch at a time.

Training batches follow `ftmed_core.protocol`: each epoch's permutation under the shuffle policy, consecutive
slices of `batch_size`, last partial batch kept. Lightning accepts any iterable with a length as a
dataloader, so the loaders here are small iterables yielding ready batches: no DataLoader workers, no
per-sample Python work, no collation.

Where the rows come from (a "source"):
- `HostSplit`: the split's memory map on the host; each batch is gathered from it (ascending reads, put
  back in the core's order) and moved to the training device as uint8.
- `DeviceSplit` (`resident_split`): the whole split copied once to the accelerator as uint8 when it fits
  in its free memory (a 224-pixel PathMNIST train split is 16 GB: fits an H100), gathered there.
Either way the uint8 batch becomes float32 on the training device with `to_unit_float`, bitwise the
core's `x / 255`; so peak host memory does not grow with the images.

Each batch is `(x, y, global_rows)`. Under DDP every rank takes its contiguous share of every *global*
batch (`np.array_split`, like `torch.tensor_split`), so the global batch stays `config.batch_size`;
`global_rows` lets the training step weight its loss so that DDP's gradient average equals the gradient
of the global mean loss even when the last batch does not split evenly.
"""

from __future__ import annotations

from typing import Callable, Iterator

import lightning.pytorch as L
import numpy as np
import torch

from ftmed_core.config import ExperimentConfig
from ftmed_core.data import ExperimentData, Split, eval_batch_rows
from ftmed_core.protocol import batch_bounds, epoch_permutation, steps_per_epoch

Batch = tuple[torch.Tensor, torch.Tensor, int]
# Free accelerator memory kept back when deciding whether a split can live there: the model, optimizer
# state, activations and the allocator's own slack need room too.
DEVICE_HEADROOM_BYTES = 2 << 30
DEVICE_HEADROOM_FRACTION = 0.1
_COPY_ROWS_BYTES = 1 << 28  # host memory used per chunk while copying a split to the device


def to_unit_float(x: torch.Tensor) -> torch.Tensor:
    """uint8 pixels (m, D) -> float32 / 255 on x's device, bitwise numpy's `preprocess_images`; float32 passes.

    Divides by a 0-dim tensor on the same device rather than a Python number: CUDA's division by a CPU
    scalar multiplies by the reciprocal, which rounds differently from the study's true division.
    """
    if x.dtype == torch.float32:
        return x
    divisor = torch.full((), 255.0, dtype=torch.float32, device=x.device)
    return x.to(torch.float32).div_(divisor)


class HostSplit:
    """A split's rows gathered on the host from its (memory-mapped) arrays, one batch at a time."""

    def __init__(self, split: Split):
        self.split = split
        self.labels = torch.from_numpy(np.ascontiguousarray(split.labels))

    def __len__(self) -> int:
        return len(self.split)

    def gather(self, rows: slice | np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.from_numpy(self.split.raw_rows(rows))
        y = self.labels[rows] if isinstance(rows, slice) else self.labels[torch.from_numpy(rows)]
        return x, y


class DeviceSplit:
    """A whole split resident on an accelerator as stored (uint8 (N, D)), gathered there."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def gather(self, rows: slice | np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        if isinstance(rows, slice):
            return self.images[rows], self.labels[rows]
        index = torch.from_numpy(rows).to(self.images.device, non_blocking=True)
        return self.images.index_select(0, index), self.labels.index_select(0, index)


def device_free_bytes(device: torch.device) -> int | None:
    """Free memory on a CUDA device (None for devices that do not report it)."""
    if device.type != "cuda":
        return None
    free, _total = torch.cuda.mem_get_info(device)
    return int(free)


def fits_on_device(nbytes: int, free: int | None) -> bool:
    """Whether `nbytes` fit in `free` bytes with headroom for the model and activations (the policy of
    `resident_split`, kept apart so it can be tested without a GPU)."""
    if free is None:
        return False
    return nbytes + DEVICE_HEADROOM_BYTES + DEVICE_HEADROOM_FRACTION * free <= free


def resident_split(split: Split, device: torch.device, free: int | None = None) -> DeviceSplit | None:
    """`split` copied to `device` as stored (uint8 (N, D) or float32), or None when it does not fit.

    For the GPU fast path: gather and convert batches on the device, nothing per step on the host.
    `free` overrides the measured free memory (tests). The copy goes a chunk of rows at a time, so host
    memory holds one chunk of the memory map, never the split.
    """
    n, dim = len(split), split.input_dim
    nbytes = n * dim * split.stored_dtype.itemsize
    if not fits_on_device(nbytes, device_free_bytes(device) if free is None else free):
        return None
    dtype = torch.uint8 if split.stored_dtype == np.uint8 else torch.float32
    try:
        images = torch.empty((n, dim), dtype=dtype, device=device)
        rows = max(1, _COPY_ROWS_BYTES // max(1, dim * split.stored_dtype.itemsize))
        for start in range(0, n, rows):
            stop = min(start + rows, n)
            images[start:stop].copy_(torch.from_numpy(split.raw_rows(slice(start, stop))))
    except torch.cuda.OutOfMemoryError:  # another process took the memory meanwhile: stream instead
        return None
    labels = torch.from_numpy(np.ascontiguousarray(split.labels)).to(device)
    return DeviceSplit(images, labels)


class EpochBatches:
    """The training batches of one epoch; `iter()` asks `epoch_fn` which epoch it is (0-based)."""

    def __init__(self, source: HostSplit | DeviceSplit, batch_size: int, seed: int, shuffle: str | bool,
                 epoch_fn: Callable[[], int], rank: int = 0, world_size: int = 1,
                 device: torch.device | None = None):
        self.source, self.device = source, device
        self.batch_size, self.seed, self.shuffle = batch_size, seed, shuffle
        self.epoch_fn, self.rank, self.world_size = epoch_fn, rank, world_size

    def __len__(self) -> int:
        return steps_per_epoch(len(self.source), self.batch_size)

    def __iter__(self) -> Iterator[Batch]:
        n = len(self.source)
        # File order needs no index: batches are slices.
        order = (None if self.shuffle in (False, "none")
                 else epoch_permutation(self.seed, self.epoch_fn(), n, self.shuffle))
        for start, stop in batch_bounds(n, self.batch_size):
            rows = order[start:stop] if order is not None else slice(start, stop)
            if self.world_size > 1:
                if isinstance(rows, slice):
                    rows = np.arange(start, stop)
                rows = np.array_split(rows, self.world_size)[self.rank]
            x, y = self.source.gather(rows)
            yield _on_device(x, self.device), y, stop - start


class SequentialBatches:
    """Validation/evaluation batches in file order; under DDP each rank gets a contiguous share of rows."""

    def __init__(self, source: HostSplit | DeviceSplit, batch_size: int, rank: int = 0, world_size: int = 1,
                 device: torch.device | None = None):
        self.lo, self.hi = 0, len(source)
        if world_size > 1:
            share = np.array_split(np.arange(len(source)), world_size)[rank]
            self.lo, self.hi = (int(share[0]), int(share[-1]) + 1) if len(share) else (0, 0)
        self.source, self.batch_size, self.device = source, batch_size, device

    def __len__(self) -> int:
        return steps_per_epoch(self.hi - self.lo, self.batch_size) if self.hi > self.lo else 0

    def __iter__(self) -> Iterator[Batch]:
        for start, stop in batch_bounds(self.hi - self.lo, self.batch_size):
            x, y = self.source.gather(slice(self.lo + start, self.lo + stop))
            yield _on_device(x, self.device), y, stop - start


def _on_device(x: torch.Tensor, device: torch.device | None) -> torch.Tensor:
    """The uint8 batch moved to the training device (4x fewer bytes than float32), converted there."""
    if device is not None and x.device != device:
        x = x.to(device, non_blocking=False)
    return to_unit_float(x)


def split_batches(split: Split, batch_size: int, device: torch.device | None = None) -> Iterator[torch.Tensor]:
    """float32 batches of `split` in file order on `device` (evaluation and test logits); `batch_size`
    rows, fewer where that many float32 rows would be large (`eval_batch_rows`)."""
    for x, _, _ in SequentialBatches(HostSplit(split), eval_batch_rows(split.input_dim, batch_size), device=device):
        yield x


class MedMNISTDataModule(L.LightningDataModule):
    """Train/val batches of an `ExperimentData`, in the core's order, on the training device."""

    def __init__(self, data: ExperimentData, config: ExperimentConfig, eval_batch_size: int = 1024):
        super().__init__()
        self.data, self.config, self.eval_batch_size = data, config, eval_batch_size
        self.sources: dict[str, HostSplit | DeviceSplit] = {}
        self.device = torch.device("cpu")

    def setup(self, stage: str | None = None) -> None:
        if self.sources:
            return
        if self.trainer is not None:
            self.device = self.trainer.strategy.root_device
        for name in ("train", "val"):
            split = getattr(self.data, name)
            resident = resident_split(split, self.device) if self.device.type == "cuda" else None
            self.sources[name] = resident if resident is not None else HostSplit(split)

    def _rank_world(self) -> tuple[int, int]:
        if self.trainer is None:
            return 0, 1
        return self.trainer.global_rank, self.trainer.world_size

    def _current_epoch(self) -> int:
        return self.trainer.current_epoch if self.trainer is not None else 0

    def train_dataloader(self) -> EpochBatches:
        rank, world = self._rank_world()
        return EpochBatches(self.sources["train"], self.config.batch_size, self.config.seed, self.config.shuffle,
                            self._current_epoch, rank, world, device=self.device)

    def val_dataloader(self) -> SequentialBatches:
        rank, world = self._rank_world()
        batch = eval_batch_rows(self.data.input_dim, self.eval_batch_size)
        return SequentialBatches(self.sources["val"], batch, rank, world, device=self.device)
