"""Where ftmed stands: seconds per epoch against its references and against the machine's compute floor.

    python benchmarks/run.py                    # baseline + wider-deeper, 3 repetitions (~25 min on 2 cores)
    python benchmarks/run.py --models baseline --reps 2 --epochs 2 --out benchmarks/latest.json

Every figure comes from this one run: contenders are interleaved within each repetition, each in a fresh
process (TensorFlow and torch never share one), on the same PathMNIST-sized synthetic file (89,996 train
rows, the study's holdout split: 71,996 train / 18,000 val per epoch), batch 128, float32, CPU.

Contenders (seconds per epoch = median over repetitions of the steady epochs; epoch 1 is warm-up):
  ftmed-lightning   lightning_ft.fit (Keras-exact Adam, core batch order, validation each epoch)
  ftmed-keras       keras_ref.fit (core batch order via tf.data)
  study-keras       the study's recipe: model.fit(x, y, validation_split=0.2, batch_size=128)
  torch-loop        a minimal hand-written loop on pre-built tensors, torch.optim.Adam(fused=True)
  tutorial          medmnist Dataset + per-sample ToTensor (PIL) + DataLoader, torch.optim.Adam
The compute floor: the model's FLOPs per epoch (forward + backward over the train rows, forward over the
val rows) divided by the best GEMM rate torch or TensorFlow reaches on this machine for those layer shapes
(batch 128, 1 or all threads), measured here.
Also: 1 vs all threads, data load + preprocess time, `ftmed --help` start-up, and peak memory per run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import bench_common
from bench_common import ROOT, emit, gemm_floor, steady

DATA_DIR = Path(os.environ.get("FTMED_BENCH_DATA", "/tmp/ftmed_bench_data"))
CONTENDERS = ("ftmed-lightning", "ftmed-keras", "study-keras", "torch-loop", "tutorial")


# ---------------------------------------------------------------- children (one measurement per process)

def _config(model: str, epochs: int):
    from ftmed_core.variants import VARIANTS

    return replace(VARIANTS[model].config, epochs=epochs, data_dir=str(DATA_DIR))


def _data(config):
    from ftmed_core.data import load_experiment_data

    return load_experiment_data(config, allow_download=False)


def child_ftmed(framework: str, model: str, threads: int, epochs: int) -> list[float]:
    import tempfile

    from ftmed_core.config import RuntimeConfig
    from ftmed_core.protocol import initial_weights

    config = _config(model, epochs)
    data = _data(config)
    runtime = RuntimeConfig(threads=threads, progress=False)
    weights = initial_weights(config, data.input_dim, data.n_classes)
    if framework == "lightning":
        from lightning_ft.training import fit
    else:
        from keras_ref.training import fit
    with tempfile.TemporaryDirectory() as run_dir:
        result = fit(config, runtime, data, weights, Path(run_dir))
    return result.history["epoch_seconds"]


def child_study_keras(model: str, threads: int, epochs: int) -> list[float]:
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    import keras
    from ftmed_core.data import load_npz

    config = _config(model, epochs)
    raw = load_npz(DATA_DIR / "pathmnist.npz", "pathmnist", 28)
    # The study's own lines.
    x = raw.images["train"].astype("float32") / 255
    x = x.reshape(len(x), -1)
    y = keras.utils.to_categorical(raw.labels["train"], 9)
    keras.utils.set_random_seed(0)
    layers = [keras.Input(shape=(x.shape[1],))]
    for units in config.hidden_units:
        layers += [keras.layers.Dense(units), keras.layers.Activation("relu")]
    layers += [keras.layers.Dense(9), keras.layers.Activation("softmax")]
    model_ = keras.Sequential(layers)
    model_.compile(optimizer=keras.optimizers.Adam(1e-3), loss="categorical_crossentropy", metrics=["accuracy"])
    seconds = []

    class Timer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.t = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            seconds.append(time.perf_counter() - self.t)

    model_.fit(x, y, epochs=epochs, batch_size=128, validation_split=0.2, callbacks=[Timer()], verbose=0)
    return seconds


def _torch_mlp(config, torch):
    from ftmed_core.protocol import initial_weights

    layers = []
    weights = initial_weights(config, 2352, 9)
    for i, (kernel, bias) in enumerate(weights):
        linear = torch.nn.Linear(*kernel.shape)
        with torch.no_grad():
            linear.weight.copy_(torch.from_numpy(kernel.T))
            linear.bias.copy_(torch.from_numpy(bias))
        layers.append(linear)
        if i < len(weights) - 1:
            layers.append(torch.nn.ReLU())
    return torch.nn.Sequential(*layers)


def child_torch_loop(model: str, threads: int, epochs: int) -> list[float]:
    import torch

    torch.set_num_threads(threads)
    config = _config(model, epochs)
    data = _data(config)
    net = _torch_mlp(config, torch)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3, eps=1e-7, fused=True)
    x, y = torch.from_numpy(data.x_train), torch.from_numpy(data.y_train)
    xv, yv = torch.from_numpy(data.x_val), torch.from_numpy(data.y_val)
    seconds = []
    for epoch in range(epochs):
        start = time.perf_counter()
        perm = torch.randperm(len(x))
        for i in range(0, len(x), 128):
            idx = perm[i:i + 128]
            loss = torch.nn.functional.cross_entropy(net(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        with torch.no_grad():
            for i in range(0, len(xv), 1024):
                torch.nn.functional.cross_entropy(net(xv[i:i + 1024]), yv[i:i + 1024])
        seconds.append(time.perf_counter() - start)
    return seconds


def child_tutorial(model: str, threads: int, epochs: int) -> list[float]:
    import medmnist
    import torch
    from torch.utils.data import DataLoader, Subset
    from torchvision import transforms

    torch.set_num_threads(threads)
    config = _config(model, epochs)
    transform = transforms.Compose([transforms.ToTensor()])
    train = medmnist.PathMNIST(split="train", transform=transform, root=str(DATA_DIR))
    split_at = int(len(train) * 0.8)
    loader = DataLoader(Subset(train, range(split_at)), batch_size=128, shuffle=True)
    val_loader = DataLoader(Subset(train, range(split_at, len(train))), batch_size=1024)
    net = _torch_mlp(config, torch)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    seconds = []
    for epoch in range(epochs):
        start = time.perf_counter()
        for images, labels in loader:
            loss = torch.nn.functional.cross_entropy(net(images.flatten(1)), labels[:, 0].long())
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            for images, labels in val_loader:
                torch.nn.functional.cross_entropy(net(images.flatten(1)), labels[:, 0].long())
        seconds.append(time.perf_counter() - start)
    return seconds


def child_gemm(model: str, threads: int) -> dict:
    """Best float32 GEMM rate torch reaches for this model's layer shapes, and the FLOPs of one epoch."""
    return gemm_floor([2352, *_config(model, 1).hidden_units, 9], n_train=71996, n_val=18000, batch=128,
                      threads=threads)


def child_gemm_tf(model: str, threads: int) -> dict:
    """The same three GEMMs per layer through TensorFlow (oneDNN), to see whose kernels are faster here."""
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    config = _config(model, 1)
    sizes = [2352, *config.hidden_units, 9]
    batch = 128
    mm = tf.function(lambda a, b: tf.linalg.matmul(a, b))
    mm_ta = tf.function(lambda a, b: tf.linalg.matmul(a, b, transpose_a=True))
    mm_tb = tf.function(lambda a, b: tf.linalg.matmul(a, b, transpose_b=True))
    layer_seconds = 0.0
    wall0, cpu0 = time.perf_counter(), time.process_time()
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        a, w, g = (tf.random.normal(shape) for shape in ((batch, fan_in), (fan_in, fan_out), (batch, fan_out)))
        for f, x, y in ((mm, a, w), (mm_ta, a, g), (mm_tb, g, w)):
            f(x, y).numpy()  # trace
        best = float("inf")
        for _ in range(7):
            start = time.perf_counter()
            for _ in range(20):
                mm(a, w)
                mm_ta(a, g)
                if i:
                    out = mm_tb(g, w)
            out = mm(a, w).numpy()
            best = min(best, (time.perf_counter() - start) / 20)
        layer_seconds += best
    step_flops = sum(2.0 * a * b * (3 if i else 2) for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:]))) * batch
    cores_used = (time.process_time() - cpu0) / (time.perf_counter() - wall0)
    return {"gemm_flops_per_s": step_flops / layer_seconds, "cores_used": cores_used}


def child_load() -> dict:
    from ftmed_core.config import ExperimentConfig

    start = time.perf_counter()
    _data(replace(ExperimentConfig(), data_dir=str(DATA_DIR)))
    return {"load_seconds": time.perf_counter() - start}


def child_main(argv: list[str]) -> None:
    kind, model, threads, epochs = argv[0], argv[1], int(argv[2]), int(argv[3])
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(threads)
    if kind == "ftmed-lightning":
        out = {"epoch_seconds": child_ftmed("lightning", model, threads, epochs)}
    elif kind == "ftmed-keras":
        out = {"epoch_seconds": child_ftmed("keras", model, threads, epochs)}
    elif kind == "study-keras":
        out = {"epoch_seconds": child_study_keras(model, threads, epochs)}
    elif kind == "torch-loop":
        out = {"epoch_seconds": child_torch_loop(model, threads, epochs)}
    elif kind == "tutorial":
        out = {"epoch_seconds": child_tutorial(model, threads, epochs)}
    elif kind == "gemm":
        out = child_gemm(model, threads)
    elif kind == "gemm-tf":
        out = child_gemm_tf(model, threads)
    elif kind == "load":
        out = child_load()
    else:
        raise SystemExit(f"unknown child kind {kind}")
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    emit(out)


# ---------------------------------------------------------------- parent

def run_child(kind: str, model: str, threads: int, epochs: int) -> dict:
    return bench_common.run_child(__file__, [kind, model, str(threads), str(epochs)], kind)


def ensure_data() -> None:
    path = DATA_DIR / "pathmnist.npz"
    if not path.is_file():
        sys.path.insert(0, str(ROOT))
        from ftmed_core.synth import write_synthetic

        print(f"writing a full-size synthetic file to {path} ...", flush=True)
        write_synthetic(DATA_DIR, "pathmnist", 28, scale=1.0, seed=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="baseline,wider-deeper")
    parser.add_argument("--contenders", default=",".join(CONTENDERS))
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=2, help="epochs per measurement (the first is warm-up)")
    parser.add_argument("--threads", default="1,2", help="thread counts to compare for ftmed-lightning")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "latest.json"))
    args = parser.parse_args()
    ensure_data()
    models = args.models.split(",")
    contenders = args.contenders.split(",")
    thread_counts = [int(t) for t in args.threads.split(",")]
    results: dict = {"machine": {"platform": platform.platform(), "processor": platform.processor(),
                                 "cpus": os.cpu_count(), "python": platform.python_version()},
                     "started": time.strftime("%Y-%m-%d %H:%M:%S"), "models": {}}

    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "cli.main", "--help"], capture_output=True, cwd=ROOT)
    help_times = []
    for _ in range(5):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "cli.main", "--help"], capture_output=True, cwd=ROOT)
        help_times.append(time.perf_counter() - t)
    results["help_seconds"] = statistics.median(help_times)
    results["load"] = [run_child("load", "baseline", 1, 1) for _ in range(3)]

    for model in models:
        entry = {"gemm": {t: run_child("gemm", model, t, 1) for t in thread_counts},
                 "gemm_tf": {t: run_child("gemm-tf", model, t, 1) for t in thread_counts}, "runs": {}}
        plan = [(c, 1) for c in contenders] + [("ftmed-lightning", t) for t in thread_counts if t != 1]
        for rep in range(args.reps):
            for contender, threads in plan:
                label = f"{contender}@{threads}t"
                result = run_child(contender, model, threads, args.epochs)
                entry["runs"].setdefault(label, []).append(result)
                shown = result.get("error") or f"{statistics.median(steady(result['epoch_seconds'])):.2f} s/epoch"
                print(f"[{model} rep {rep + 1}/{args.reps}] {label:24s} {shown}", flush=True)
        results["models"][model] = entry
    results["wall_seconds"] = time.perf_counter() - start
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print_summary(results)


def summarize_runs(runs: list[dict]) -> dict | None:
    good = [r for r in runs if "epoch_seconds" in r]
    if not good:
        return None
    per_rep = [statistics.median(steady(r["epoch_seconds"])) for r in good]
    return {"s_per_epoch": statistics.median(per_rep), "peak_rss_mb": max(r["peak_rss_mb"] for r in good),
            "n": len(good)}


def print_summary(results: dict) -> None:
    print(f"\nmachine: {results['machine']}")
    print(f"`ftmed --help`: {results['help_seconds']:.2f} s; data load + preprocess of the whole file: "
          f"{statistics.median(r['load_seconds'] for r in results['load'] if 'load_seconds' in r):.2f} s")
    for model, entry in results["models"].items():
        gemm = {t: g for t, g in entry["gemm"].items() if "floor_seconds" in g}
        gemm_tf = {t: g for t, g in entry.get("gemm_tf", {}).items() if "gemm_flops_per_s" in g}
        flops = next(iter(gemm.values()))["flops_per_epoch"]
        rates = {f"torch {t}t ({g.get('cores_used', 0):.1f} cores busy)": g["gemm_flops_per_s"]
                 for t, g in gemm.items()}
        rates.update({f"tf {t}t ({g.get('cores_used', 0):.1f} cores busy)": g["gemm_flops_per_s"]
                      for t, g in gemm_tf.items()})
        best = max(rates, key=rates.get)
        floor = flops / rates[best]
        print(f"\n{model}: {flops / 1e9:.0f} GFLOP/epoch; GEMM rates (GFLOP/s): "
              + ", ".join(f"{k} {v / 1e9:.0f}" for k, v in rates.items())
              + f" -> compute floor {floor:.2f} s/epoch (best: {best})")
        summary = {label: summarize_runs(runs) for label, runs in entry["runs"].items()}
        loop = summary.get("torch-loop@1t")
        study = summary.get("study-keras@1t")
        print(f"{'pipeline':26s} {'s/epoch':>8s} {'samples/s':>10s} {'x floor':>8s} {'x torch-loop':>12s} "
              f"{'x study':>8s} {'peak MB':>8s}")
        for label, s in summary.items():
            if s is None:
                print(f"{label:26s} failed: {entry['runs'][label][0].get('error')}")
                continue
            sec = s["s_per_epoch"]
            print(f"{label:26s} {sec:8.2f} {71996 / sec:10.0f} {sec / floor:8.2f} "
                  f"{(sec / loop['s_per_epoch']) if loop else float('nan'):12.2f} "
                  f"{(sec / study['s_per_epoch']) if study else float('nan'):8.2f} {s['peak_rss_mb']:8.0f}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        sys.path.insert(0, str(ROOT))
        child_main(sys.argv[2:])
    else:
        main()
