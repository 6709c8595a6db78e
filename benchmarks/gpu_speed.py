"""Seconds per epoch on one device: ftmed's Lightning paths against hand-written loops of the same model.

    python benchmarks/gpu_speed.py                                  # CUDA if available, full-size data
    python benchmarks/gpu_speed.py --device cpu --scale 0.1 --epochs 3 --threads 1   # small CPU check

Every figure comes from this one run, on one device, on the same PathMNIST-sized synthetic file
(`--scale 1.0`: 89,996 train rows, the study's holdout split = 71,996 train / 18,000 val per epoch),
batch 128, float32 (TF32 off on CUDA, as ftmed's parity mode). Rows, per model (baseline 512-256-128 and
wider-deeper 1024-512-512-256-128), each doing per epoch one training pass in the core's batch order and
one no-grad validation pass:

  ftmed fast     lightning_ft.fit with steps_per_execution=K (CUDA graphs where they apply)
  ftmed plain    lightning_ft.fit with steps_per_execution=1 (one step per Lightning training_step)
  eager loop     a hand-written loop: the split on the device, rows gathered there, the same optimizer
                 (ftmed's Keras-exact rule), no Lightning
  graph loop     CUDA only: one training step captured in a CUDA graph and replayed (row offset and
                 torch's fused Adam state on the device; the last partial batch eager) - the floor

s/epoch = median over the steady epochs (epoch 1, with warm-up and graph capture, is left out; so run
`--epochs` >= 2). For ftmed this is the run's own `epoch_seconds` (train + validation, as the history
reports it); `fit/epoch` is the whole `trainer.fit` wall time divided by the epochs (Trainer start-up and
checkpoint writing included). Ratios are against the graph loop on CUDA, the eager loop on CPU.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from bench_common import steady
from ftmed_core.config import RuntimeConfig
from ftmed_core.data import load_experiment_data
from ftmed_core.protocol import batch_bounds, epoch_permutation, initial_weights
from ftmed_core.synth import write_synthetic
from ftmed_core.variants import get_variant
from lightning_ft.losses import keras_loss
from lightning_ft.model import build_mlp
from lightning_ft.optimizers import build_optimizer


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _validate(model, xv, yv, config) -> None:
    with torch.no_grad():
        for start, stop in batch_bounds(len(xv), 1024):
            keras_loss(model(xv[start:stop]), yv[start:stop], config.output_activation, config.loss)


def eager_loop(config, data, device, epochs: int) -> list[float]:
    """The hand-written eager loop (see the module docstring)."""
    model = build_mlp(config, data.input_dim, data.n_classes, initial_weights(config, data.input_dim, data.n_classes)).to(device)
    opt = build_optimizer(model.parameters(), config.optimizer)
    x, y = torch.from_numpy(data.x_train).to(device), torch.from_numpy(data.y_train).to(device)
    xv, yv = torch.from_numpy(data.x_val).to(device), torch.from_numpy(data.y_val).to(device)
    times = []
    for epoch in range(epochs):
        _sync(device)
        started = time.perf_counter()
        perm = torch.from_numpy(epoch_permutation(config.seed, epoch, len(x))).to(device)
        model.train()
        for start, stop in batch_bounds(len(x), config.batch_size):
            rows = perm[start:stop]
            loss = keras_loss(model(x.index_select(0, rows)), y.index_select(0, rows), config.output_activation, config.loss)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        model.eval()
        _validate(model, xv, yv, config)
        _sync(device)
        times.append(time.perf_counter() - started)
    return times


def graph_loop(config, data, device, epochs: int) -> list[float]:
    """One step captured in a CUDA graph, replayed once per full batch (see the module docstring)."""
    model = build_mlp(config, data.input_dim, data.n_classes, initial_weights(config, data.input_dim, data.n_classes)).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=config.learning_rate, eps=config.optimizer.epsilon,
                           fused=True, capturable=True)
    x, y = torch.from_numpy(data.x_train).to(device), torch.from_numpy(data.y_train).to(device)
    xv, yv = torch.from_numpy(data.x_val).to(device), torch.from_numpy(data.y_val).to(device)
    bs, n = config.batch_size, len(x)
    perm = torch.empty(n, dtype=torch.int64, device=device)
    pos = torch.zeros(1, dtype=torch.int64, device=device)
    offsets = torch.arange(bs, device=device)

    def step(rows_per_step: int, offs) -> None:
        rows = perm.index_select(0, pos + offs)
        loss = keras_loss(model(x.index_select(0, rows)), y.index_select(0, rows), config.output_activation, config.loss)
        loss.backward()
        opt.step()
        pos.add_(rows_per_step)

    full, partial = n // bs, n % bs
    graph = None
    times = []
    for epoch in range(epochs):
        _sync(device)
        started = time.perf_counter()
        perm.copy_(torch.from_numpy(epoch_permutation(config.seed, epoch, n)))
        pos.zero_()
        model.train()
        done = 0
        if graph is None:  # warm-up steps on a side stream, then capture (torch's recipe)
            stream = torch.cuda.Stream(device)
            stream.wait_stream(torch.cuda.current_stream(device))
            with torch.cuda.stream(stream):
                for _ in range(3):
                    opt.zero_grad(set_to_none=True)
                    step(bs, offsets)
            torch.cuda.current_stream(device).wait_stream(stream)
            done = 3
            opt.zero_grad(set_to_none=True)
            graph = torch.cuda.CUDAGraph()
            saved = pos.clone()
            with torch.cuda.graph(graph, stream=stream):  # capture on the warm-up stream
                step(bs, offsets)
            pos.copy_(saved)
        for _ in range(full - done):
            graph.replay()
        if partial:
            for p in model.parameters():
                p.grad = None
            step(partial, torch.arange(partial, device=device))
        model.eval()
        _validate(model, xv, yv, config)
        _sync(device)
        times.append(time.perf_counter() - started)
    return times


def ftmed(config, data, accelerator: str, threads: int, steps: int) -> tuple[list[float], float, str]:
    from lightning_ft.training import fit

    rt = RuntimeConfig(accelerator=accelerator, threads=threads, progress=False, steps_per_execution=steps)
    with tempfile.TemporaryDirectory() as run_dir:
        result = fit(config, rt, data, initial_weights(config, data.input_dim, data.n_classes), Path(run_dir))
    return (list(result.history["epoch_seconds"]), result.training_seconds / config.epochs,
            result.environment.get("training_path", "?"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", default="/tmp/ftmed_gpu_bench")
    parser.add_argument("--scale", type=float, default=1.0, help="synthetic file size (1.0 = PathMNIST's)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--reps", type=int, default=1, help="repetitions, interleaved")
    parser.add_argument("--models", default="baseline,wider-deeper")
    parser.add_argument("--steps", type=int, default=0, help="ftmed fast: steps per training_step (0 = ftmed's default on the device)")
    parser.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = all cores)")
    parser.add_argument("--out", default=None, help="also write the results as JSON here")
    args = parser.parse_args()

    cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    device = torch.device("cuda" if cuda else "cpu")
    threads = args.threads or torch.get_num_threads()
    torch.set_num_threads(threads)
    if cuda:
        from lightning_ft.training import _cuda_determinism

        _cuda_determinism()
    steps = args.steps
    if steps == 0:
        from lightning_ft.fast import AUTO_STEPS_CUDA

        steps = AUTO_STEPS_CUDA if cuda else 16  # the CPU default is the plain path: measure blocks of 16
    data_dir = Path(args.data_dir)
    if not (data_dir / "pathmnist.npz").is_file():
        print(f"writing synthetic PathMNIST (scale {args.scale}) to {data_dir} ...", flush=True)
        write_synthetic(data_dir, "pathmnist", 28, scale=args.scale, seed=0)
    card = torch.cuda.get_device_name(device) if cuda else f"CPU ({platform.processor() or platform.machine()}, {threads} thread(s))"
    print(f"device: {card}; torch {torch.__version__}; fast path: {steps} steps per training_step", flush=True)

    results = {}
    for model in [m.strip() for m in args.models.split(",") if m.strip()]:
        config = replace(get_variant(model).config, data_dir=str(data_dir), epochs=args.epochs)
        data = load_experiment_data(config, allow_download=False)
        rows: dict[str, list[float]] = {"ftmed fast": [], "ftmed plain": [], "eager loop": []}
        if cuda:
            rows["graph loop"] = []
        fit_per_epoch: dict[str, list[float]] = {"ftmed fast": [], "ftmed plain": []}
        path = "?"
        for _ in range(args.reps):
            epochs, per_epoch, path = ftmed(config, data, "gpu" if cuda else "cpu", threads, steps)
            rows["ftmed fast"].append(statistics.median(steady(epochs)))
            fit_per_epoch["ftmed fast"].append(per_epoch)
            epochs, per_epoch, _ = ftmed(config, data, "gpu" if cuda else "cpu", threads, 1)
            rows["ftmed plain"].append(statistics.median(steady(epochs)))
            fit_per_epoch["ftmed plain"].append(per_epoch)
            rows["eager loop"].append(statistics.median(steady(eager_loop(config, data, device, args.epochs))))
            if cuda:
                rows["graph loop"].append(statistics.median(steady(graph_loop(config, data, device, args.epochs))))
        medians = {name: statistics.median(values) for name, values in rows.items()}
        reference = "graph loop" if cuda else "eager loop"
        print(f"\n{model}: {len(data.y_train)} train / {len(data.y_val)} val rows; ftmed fast ran '{path}'")
        print(f"  {'pipeline':<12} {'s/epoch':>9} {'x ' + reference:>15} {'fit/epoch':>10}")
        for name, value in medians.items():
            fit_value = f"{statistics.median(fit_per_epoch[name]):10.3f}" if name in fit_per_epoch else " " * 10
            print(f"  {name:<12} {value:9.3f} {value / medians[reference]:15.2f} {fit_value}")
        print(f"  ftmed plain / ftmed fast: {medians['ftmed plain'] / medians['ftmed fast']:.2f}x")
        results[model] = {"s_per_epoch": medians, "fit_per_epoch": {k: statistics.median(v) for k, v in fit_per_epoch.items()},
                          "reference": reference, "fast_path": path, "train_rows": int(len(data.y_train))}
    if args.out:
        Path(args.out).write_text(json.dumps({"device": card, "torch": torch.__version__, "steps": steps,
                                              "epochs": args.epochs, "reps": args.reps, "models": results}, indent=2))
        print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
