"""Lightning's training batches under each shuffle policy follow `ftmed_core.protocol.epoch_permutation`."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ftmed_core.config import ExperimentConfig
from ftmed_core.data import load_experiment_data
from ftmed_core.protocol import epoch_permutation
from lightning_ft.datamodule import DeviceSplit, EpochBatches, MedMNISTDataModule


def _rows(loader) -> np.ndarray:
    return torch.cat([b[1] for b in loader]).numpy()


def test_epoch_batches_under_each_policy():
    x = torch.arange(23, dtype=torch.float32).view(-1, 1)
    y = torch.arange(23)
    epoch = {"now": 0}
    by_policy = {}
    for policy in ("per-epoch", "fixed", "none"):
        loader = EpochBatches(DeviceSplit(x, y), 5, seed=3, shuffle=policy, epoch_fn=lambda: epoch["now"])
        by_policy[policy] = []
        for epoch["now"] in range(3):
            by_policy[policy].append(_rows(loader))
            np.testing.assert_array_equal(by_policy[policy][-1], epoch_permutation(3, epoch["now"], 23, policy))
    fixed, per_epoch = by_policy["fixed"], by_policy["per-epoch"]
    assert all(np.array_equal(f, fixed[0]) for f in fixed) and not np.array_equal(fixed[0], np.arange(23))
    assert not np.array_equal(per_epoch[0], per_epoch[1])
    assert all(np.array_equal(r, np.arange(23)) for r in by_policy["none"])


@pytest.mark.parametrize("policy", ["fixed", "per-epoch"])
def test_datamodule_hands_the_configs_policy_to_the_batches(tiny_synth_dir, policy):
    config = ExperimentConfig(data_dir=str(tiny_synth_dir), shuffle=policy, seed=1)
    data = load_experiment_data(config)
    module = MedMNISTDataModule(data, config)
    module.setup()
    epoch = {"now": 0}
    module._current_epoch = lambda: epoch["now"]  # what the trainer's current_epoch would say
    loader = module.train_dataloader()
    seen = []
    for epoch["now"] in range(3):
        seen.append(_rows(loader))
    n = len(data.y_train)
    for e, rows in enumerate(seen):
        np.testing.assert_array_equal(rows, data.y_train[epoch_permutation(1, e, n, policy)])
    assert np.array_equal(seen[0], seen[2]) == (policy == "fixed")
