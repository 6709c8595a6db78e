"""Lightning on the memory-mapped, per-batch-converted data: bitwise the old in-memory path; large sizes."""

from __future__ import annotations

from typing import Iterator

import lightning_ft  # noqa: F401  first: its import guard must run before lightning/triton load

import lightning.pytorch as L
import numpy as np
import pytest
import torch

from ftmed_core.config import ExperimentConfig, RuntimeConfig
from ftmed_core.data import ExperimentData, Split, load_experiment_data
from ftmed_core.protocol import batch_bounds, epoch_permutation, initial_weights, steps_per_epoch
from ftmed_core.synth import write_synthetic
from lightning_ft.datamodule import (
    DeviceSplit,
    HostSplit,
    fits_on_device,
    resident_split,
    to_unit_float,
)
from lightning_ft import training as lightning_train

RUNTIME = RuntimeConfig(threads=1, progress=False)


# -- the path this replaced, written out: whole float32 tensors, index_select batches, float32 test array --

class OldBatches:
    def __init__(self, x, y, batch_size, seed, shuffle, epoch_fn):
        self.x, self.y, self.batch_size, self.seed, self.shuffle, self.epoch_fn = x, y, batch_size, seed, shuffle, epoch_fn

    def __len__(self):
        return steps_per_epoch(len(self.x), self.batch_size)

    def __iter__(self) -> Iterator:
        order = torch.from_numpy(epoch_permutation(self.seed, self.epoch_fn(), len(self.x), True))
        for start, stop in batch_bounds(len(self.x), self.batch_size):
            if self.shuffle in (False, "none"):  # the config's policy ("none" = the old shuffle=False)
                yield self.x[start:stop], self.y[start:stop], stop - start
            else:
                rows = order[start:stop]
                yield self.x.index_select(0, rows), self.y.index_select(0, rows), stop - start


class OldDataModule(L.LightningDataModule):
    def __init__(self, data: ExperimentData, config: ExperimentConfig):
        super().__init__()
        self.data, self.config = data, config
        # The old `prepare`: every split preprocessed whole, up front.
        self.x_train, self.x_val = torch.as_tensor(data.x_train), torch.as_tensor(data.x_val)
        self.y_train, self.y_val = torch.as_tensor(data.y_train), torch.as_tensor(data.y_val)

    def train_dataloader(self):
        return OldBatches(self.x_train, self.y_train, self.config.batch_size, self.config.seed, self.config.shuffle,
                          lambda: self.trainer.current_epoch)

    def val_dataloader(self):
        return OldBatches(self.x_val, self.y_val, 1024, self.config.seed, False, lambda: 0)


@torch.no_grad()
def old_predict_logits(model, split, batch_size=4096):
    x = torch.as_tensor(split.to_float32())
    model.eval()
    out = torch.cat([model(x[a:a + batch_size]) for a in range(0, len(x), batch_size)]).numpy()
    model.train()
    return out


def final_state(run_dir):
    return torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]


@pytest.mark.parametrize("shuffle", [True, False])
def test_memory_mapped_training_is_bitwise_the_old_in_memory_path(synth_dir, tmp_path, monkeypatch, shuffle):
    config = ExperimentConfig(data_dir=str(synth_dir), epochs=2, shuffle=shuffle)
    data = load_experiment_data(config)
    assert isinstance(data.train.images, np.memmap) and data.train.images.dtype == np.uint8
    weights = initial_weights(config, data.input_dim, data.n_classes)
    new = lightning_train.fit(config, RUNTIME, data, weights, tmp_path / "new")

    monkeypatch.setattr(lightning_train, "MedMNISTDataModule", OldDataModule)
    monkeypatch.setattr(lightning_train, "predict_logits", old_predict_logits)
    old = lightning_train.fit(config, RUNTIME, data, weights, tmp_path / "old")

    for key in ("train_loss", "train_acc", "val_loss", "val_acc"):  # epoch_seconds is wall time
        assert new.history[key] == old.history[key], key
    assert new.test_logits.tobytes() == old.test_logits.tobytes()
    a, b = final_state(tmp_path / "new"), final_state(tmp_path / "old")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_unit_float_conversion_is_the_cores_for_every_pixel_value():
    every = torch.arange(256, dtype=torch.uint8).view(-1, 1)
    expected = np.arange(256, dtype=np.uint8).reshape(-1, 1).astype(np.float32) / np.float32(255)
    assert to_unit_float(every).numpy().tobytes() == expected.tobytes()
    features = torch.rand(3, 2)
    assert to_unit_float(features) is features


def test_a_resident_split_gathers_what_the_host_split_gathers():
    images = np.random.default_rng(0).integers(0, 256, size=(37, 5, 5, 3), dtype=np.uint8)
    split = Split(images, np.arange(37))
    # The placement policy: the split plus headroom must fit in free memory.
    assert not fits_on_device(10 << 30, free=11 << 30) and fits_on_device(10 << 30, free=16 << 30)
    assert not fits_on_device(1, free=None)
    assert resident_split(split, torch.device("cpu"), free=1 << 20) is None
    # The copy and the gather, on the CPU device (the same code a GPU runs), in small chunks.
    device_split = resident_split(split, torch.device("cpu"), free=64 << 30)
    assert isinstance(device_split, DeviceSplit) and device_split.images.dtype == torch.uint8
    host = HostSplit(split)
    rows = np.random.default_rng(1).permutation(37)[:11]
    for index in (rows, slice(4, 20)):
        (xd, yd), (xh, yh) = device_split.gather(index), host.gather(index)
        assert torch.equal(xd, xh) and torch.equal(yd, yh)


@pytest.mark.parametrize("size", [64, 128, 224])
def test_large_images_train_one_epoch(tmp_path_factory, size):
    folder = tmp_path_factory.mktemp(f"px{size}")
    write_synthetic(folder, "pathmnist", size, scale=0.001, seed=0)
    config = ExperimentConfig(data_dir=str(folder), size=size, epochs=1, hidden_units=(16,))
    record = lightning_train.train(config, run_dir=tmp_path_factory.mktemp("run"), runtime=RUNTIME)
    assert record.finished, record.error
    assert record.data["input_dim"] == size * size * 3
    assert len(record.history["train_loss"]) == 1 and np.isfinite(record.history["val_loss"][0])
