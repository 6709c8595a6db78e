"""Seconds per epoch: the baseline through `lightning_ft` (Keras-exact Adam) vs a minimal torch loop.

    /work/venv/bin/python benchmarks/lightning_speed.py [--data-dir /tmp/synthfull] [--reps 3] [--epochs 2]

Data: full PathMNIST-sized synthetic file (89,996 train rows -> 71,996 train / 18,000 val), made with
`ftmed data synth --out DIR --scale 1.0` if DIR has none. Both pipelines use 1 thread, the baseline MLP
(2352-512-256-128-9, batch 128) and per epoch: one pass over the training rows in a fresh random order,
then a no-grad pass over the validation rows. The torch loop runs on pre-built tensors with
`torch.optim.Adam(fused=True)` (torch's fastest built-in). Runs are interleaved (lightning, loop,
lightning, ...) and medians are reported, because the machine is shared. `lightning_ft`'s epoch time is
its own `epoch_seconds` (train + validation + checkpoint); its whole `trainer.fit` wall time divided by
the epochs is printed too (includes Trainer start-up).

Target: ratio <= 1.15; loading + preprocessing the whole file < 3 s.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ftmed_core.config import ExperimentConfig, RuntimeConfig
from ftmed_core.data import load_experiment_data
from ftmed_core.protocol import initial_weights
from ftmed_core.synth import write_synthetic


def plain_torch_epochs(config, data, epochs: int) -> list[float]:
    """The minimal loop: tensors built once, index_select batches, fused Adam, no-grad validation."""
    from lightning_ft.model import build_mlp

    model = build_mlp(config, data.input_dim, data.n_classes, initial_weights(config, data.input_dim, data.n_classes))
    opt = torch.optim.Adam(model.parameters(), lr=config.learning_rate, eps=config.optimizer.epsilon, fused=True)
    x, y = torch.from_numpy(data.x_train), torch.from_numpy(data.y_train)
    xv, yv = torch.from_numpy(data.x_val), torch.from_numpy(data.y_val)
    n, bs = len(x), config.batch_size
    times = []
    for epoch in range(epochs):
        started = time.perf_counter()
        model.train()
        perm = torch.randperm(n)
        for start in range(0, n, bs):
            rows = perm[start:start + bs]
            loss = F.cross_entropy(model(x.index_select(0, rows)), y.index_select(0, rows))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            for start in range(0, len(xv), 1024):
                F.cross_entropy(model(xv[start:start + 1024]), yv[start:start + 1024])
        times.append(time.perf_counter() - started)
    return times


def lightning_epochs(config, data, epochs: int) -> tuple[list[float], float]:
    from lightning_ft.training import fit

    runtime = RuntimeConfig(accelerator="cpu", threads=1, progress=False)
    with tempfile.TemporaryDirectory() as run_dir:
        weights = initial_weights(config, data.input_dim, data.n_classes)
        result = fit(config, runtime, data, weights, Path(run_dir))
    return list(result.history["epoch_seconds"]), result.training_seconds / epochs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", default="/tmp/synthfull")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(1)

    data_dir = Path(args.data_dir)
    if not (data_dir / "pathmnist.npz").is_file():
        print(f"writing full-scale synthetic PathMNIST to {data_dir} ...")
        write_synthetic(data_dir, "pathmnist", 28, scale=1.0, seed=0)
    config = ExperimentConfig(data_dir=str(data_dir), epochs=args.epochs)

    load_times = []
    for _ in range(3):
        started = time.perf_counter()
        data = load_experiment_data(config, allow_download=False)
        load_times.append(time.perf_counter() - started)
    print(f"data: {len(data.y_train)} train / {len(data.y_val)} val / {len(data.y_test)} test rows, "
          f"input_dim {data.input_dim}")
    print(f"load + validate + MD5 + preprocess whole file: median {statistics.median(load_times):.2f} s "
          f"(runs: {', '.join(f'{t:.2f}' for t in load_times)})  target < 3 s")

    lit, lit_fit, loop = [], [], []
    for rep in range(args.reps):
        epochs, per_epoch_fit = lightning_epochs(config, data, args.epochs)
        lit += epochs
        lit_fit.append(per_epoch_fit)
        loop += plain_torch_epochs(config, data, args.epochs)
        print(f"rep {rep + 1}: lightning_ft {', '.join(f'{t:.2f}' for t in epochs)} s/epoch | "
              f"torch loop {', '.join(f'{t:.2f}' for t in loop[-args.epochs:])} s/epoch")
    lit_med, loop_med, fit_med = statistics.median(lit), statistics.median(loop), statistics.median(lit_fit)
    print(f"median s/epoch: lightning_ft (Keras-exact Adam) {lit_med:.2f} | torch loop + Adam(fused) {loop_med:.2f}")
    print(f"ratio lightning_ft / torch loop: {lit_med / loop_med:.3f}  (target <= 1.15)")
    print(f"lightning_ft trainer.fit wall time / epochs (incl. Trainer start-up): {fit_med:.2f} s "
          f"-> ratio {fit_med / loop_med:.3f}")


if __name__ == "__main__":
    main()
