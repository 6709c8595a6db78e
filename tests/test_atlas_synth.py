"""Synthetic files for every 2D MedMNIST flag: the shape of the real dataset, readable by medmnist itself."""

from __future__ import annotations

import numpy as np
import pytest

from ftmed_core.medmnist_info import all_2d_flags, dataset_info, medmnist_info
from ftmed_core.synth import make_synthetic, split_sizes, write_synthetic


def test_all_2d_flags_cover_every_2d_task_including_multi_label():
    flags = all_2d_flags()
    tasks = {medmnist_info()[f]["task"] for f in flags}
    assert "chestmnist" in flags and not any(f.endswith("3d") for f in flags)
    assert tasks == {"multi-class", "binary-class", "ordinal-regression", "multi-label, binary-class"}


@pytest.mark.parametrize("flag", all_2d_flags())
def test_synthetic_file_matches_the_flags_info(flag):
    entry = medmnist_info()[flag]
    arrays = make_synthetic(flag, 28, scale=0.002, seed=1)
    n_labels = len(entry["label"])
    multi_label = entry["task"].startswith("multi-label")
    for split, n_real in entry["n_samples"].items():
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        assert len(images) == len(labels) == max(9, round(n_real * 0.002))
        assert images.dtype == labels.dtype == np.uint8
        expected = (28, 28) if entry["n_channels"] == 1 else (28, 28, entry["n_channels"])
        assert images.shape[1:] == expected
        if multi_label:
            assert labels.shape[1] == n_labels and set(np.unique(labels)) <= {0, 1}
        else:
            assert labels.shape[1] == 1 and labels.max() < n_labels
    assert split_sizes(flag, 0.002)["train"] == len(arrays["train_labels"])


def test_multi_label_synthetic_labels_are_learnable_from_the_images():
    arrays = make_synthetic("chestmnist", 28, scale=0.02, seed=0)
    x = arrays["train_images"].reshape(len(arrays["train_images"]), -1).astype(np.float32)
    y = arrays["train_labels"]
    assert 0.02 < y.mean() < 0.4  # several findings per image on average, most bits 0
    # Each finding's prototype shifts the images that carry it: the mean image differs by label.
    for label in range(3):
        gap = np.abs(x[y[:, label] == 1].mean(0) - x[y[:, label] == 0].mean(0)).mean()
        assert gap > 2.0


def test_medmnist_reads_the_synthetic_files(tmp_path):
    import medmnist

    for flag, size in (("chestmnist", 64), ("retinamnist", 28), ("breastmnist", 128)):
        write_synthetic(tmp_path, flag, size, scale=0.005)
        cls = getattr(medmnist, medmnist_info()[flag]["python_class"])
        ds = cls(split="test", root=str(tmp_path), size=size)
        image, label = ds[0]
        assert image.size == (size, size)
        assert len(label) == dataset_info(flag, trainable=False).n_classes if flag == "chestmnist" else len(label) == 1


def test_every_2d_flag_is_trainable_multi_label_included():
    from ftmed_core.medmnist_info import all_2d_flags, dataset_names

    assert dataset_names() == all_2d_flags() and "chestmnist" in dataset_names()
    assert dataset_info("chestmnist").n_classes == 14
