"""Seconds per epoch: keras_ref (core split + core batch order via tf.data) vs the study's own recipe.

    /work/venv/bin/python benchmarks/keras_speed.py                       # ~4 min on 2 cores
    /work/venv/bin/python benchmarks/keras_speed.py --no-deterministic    # both without op determinism
    /work/venv/bin/python benchmarks/keras_speed.py --check-determinism   # does op determinism change numbers?

Contenders, interleaved within each repetition, all from the same initial weights, same compile (loss,
Adam, accuracy + AUC, no XLA), same thread settings:
  study      model.fit(x, y, validation_split=0.2, batch_size=128)  (the study's recipe; Keras shuffles)
  keras_ref      keras_ref.training.fit: tf.data gathering the core's batches, steps_per_execution=16
  keras_ref_spe1 the same with steps_per_execution=1 (what the 16 buys)
  per_epoch      one model.fit per epoch on x[core permutation], shuffle=False (--per-epoch; the
                 alternative design, not chosen)
Seconds per epoch = median over repetitions of each epoch's wall time, first epoch (tracing) excluded
when there are >= 2 epochs. Target: keras_ref / study <= 1.10. Data: PathMNIST-sized synthetic file
(/tmp/synthfull/pathmnist.npz, else one is generated in /tmp/bench_synth). The machine may be shared:
read the ratio, not the absolute numbers.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

import keras_ref  # noqa: F401  (pins the backend)
from bench_common import steady
from ftmed_core.config import ExperimentConfig, RuntimeConfig
from ftmed_core.data import load_npz, one_hot, prepare, preprocess_images
from ftmed_core.protocol import epoch_permutation, initial_weights
from ftmed_core.synth import write_synthetic
from keras_ref._backend import keras
from keras_ref.losses import compile_model
from keras_ref.model import build_mlp, get_weights
from keras_ref import training as keras_training
from keras_ref.training import configure_runtime, fit


FULL_FILE = Path("/tmp/synthfull/pathmnist.npz")


class EpochTimer(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.seconds: list[float] = []

    def on_epoch_begin(self, epoch, logs=None):
        self._t = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._t)


def data_file(scale: float) -> Path:
    if scale >= 1.0 and FULL_FILE.is_file():
        return FULL_FILE
    out = Path(f"/tmp/bench_synth_{scale:g}")
    path = out / "pathmnist.npz"
    if not path.is_file():
        write_synthetic(out, "pathmnist", 28, scale=scale, seed=0)
    return path


def run_study(config, raw_x, raw_y, n_classes):
    model = build_mlp(config, raw_x.shape[1], n_classes)
    compile_model(model, config)
    timer = EpochTimer()
    model.fit(raw_x, one_hot(raw_y, n_classes), validation_split=config.val_fraction,
              batch_size=config.batch_size, epochs=config.epochs, callbacks=[timer], verbose=0)
    return timer.seconds


def run_keras_ref(config, runtime, data, steps_per_execution):
    keras_training.STEPS_PER_EXECUTION = steps_per_execution
    with tempfile.TemporaryDirectory() as tmp:
        weights = initial_weights(config, data.input_dim, data.n_classes)
        return fit(config, runtime, data, weights, Path(tmp)).history["epoch_seconds"]


def run_per_epoch(config, data):
    model = build_mlp(config, data.input_dim, data.n_classes)
    compile_model(model, config)
    timer = EpochTimer()
    y = one_hot(data.y_train, data.n_classes)
    y_val = one_hot(data.y_val, data.n_classes)
    for epoch in range(config.epochs):
        order = epoch_permutation(config.seed, epoch, len(y), config.shuffle)
        model.fit(data.x_train[order], y[order], validation_data=(data.x_val, y_val),
                  batch_size=config.batch_size, initial_epoch=epoch, epochs=epoch + 1, shuffle=False,
                  callbacks=[timer], verbose=0)
    return timer.seconds


def check_determinism(steps: int = 30) -> None:
    """Train `steps` batches with and without op determinism, each twice, in fresh processes; compare."""
    code = (
        "import sys, numpy as np, keras_ref\n"
        "from keras_ref._backend import tf, keras\n"
        "from ftmed_core.config import ExperimentConfig\n"
        "from keras_ref.losses import compile_model\n"
        "from keras_ref.model import build_mlp, get_weights\n"
        "if sys.argv[1] == '1': tf.config.experimental.enable_op_determinism()\n"
        "cfg = ExperimentConfig()\n"
        "rng = np.random.default_rng(0); x = rng.random((128 * %d, 2352), dtype=np.float32)\n"
        "y = np.eye(9, dtype=np.float32)[rng.integers(0, 9, len(x))]\n"
        "m = compile_model(build_mlp(cfg, 2352, 9), cfg)\n"
        "m.fit(x, y, batch_size=128, shuffle=False, epochs=1, verbose=0)\n"
        "np.save(sys.argv[2], np.concatenate([k.ravel() for k, b in get_weights(m)]))\n" % steps
    )
    with tempfile.TemporaryDirectory() as tmp:
        results = {}
        for mode in ("0", "1"):
            for attempt in ("a", "b"):
                path = f"{tmp}/{mode}{attempt}.npy"
                subprocess.run([sys.executable, "-c", code, mode, path], check=True, capture_output=True)
                results[mode + attempt] = np.load(path)
        print(f"repeatable without op determinism: {np.array_equal(results['0a'], results['0b'])}")
        print(f"repeatable with op determinism:    {np.array_equal(results['1a'], results['1b'])}")
        diff = float(np.abs(results["0a"] - results["1a"]).max())
        print(f"max |dW| with vs without op determinism after {steps} Adam steps: {diff:.3g}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--scale", type=float, default=1.0, help="synthetic data scale (1.0 = PathMNIST size)")
    parser.add_argument("--no-deterministic", dest="deterministic", action="store_false")
    parser.add_argument("--per-epoch", action="store_true", help="also time one fit call per epoch")
    parser.add_argument("--check-determinism", action="store_true")
    args = parser.parse_args()
    if args.check_determinism:
        check_determinism()
        return

    path = data_file(args.scale)
    raw = load_npz(path, "pathmnist", 28)
    config = ExperimentConfig(data_dir=str(path.parent), epochs=args.epochs)
    runtime = RuntimeConfig(deterministic=args.deterministic, progress=False)
    data = prepare(raw, config.val_mode, config.val_fraction)
    raw_x, raw_y = preprocess_images(raw.images["train"]), raw.labels["train"]
    env = configure_runtime(runtime, config.seed)
    spe = keras_training.STEPS_PER_EXECUTION
    print(f"data {path} ({len(raw_y)} train rows), {args.epochs} epochs x {args.repeats} repeats, "
          f"threads={env['threads']}, op_determinism={env['op_determinism']}", flush=True)

    contenders = {"study": lambda: run_study(config, raw_x, raw_y, data.n_classes),
                  "keras_ref": lambda: run_keras_ref(config, runtime, data, spe),
                  "keras_ref_spe1": lambda: run_keras_ref(config, runtime, data, 1)}
    if args.per_epoch:
        contenders["per_epoch"] = lambda: run_per_epoch(config, data)
    seconds: dict[str, list[float]] = {name: [] for name in contenders}
    for repeat in range(args.repeats):
        order = list(contenders) if repeat % 2 == 0 else list(reversed(contenders))
        for name in order:
            epoch_seconds = contenders[name]()
            seconds[name].extend(steady(epoch_seconds))
            print(f"  repeat {repeat + 1} {name:14s} " + " ".join(f"{s:.2f}" for s in epoch_seconds), flush=True)
    medians = {name: statistics.median(values) for name, values in seconds.items()}
    print("median s/epoch: " + ", ".join(f"{name} {value:.2f}" for name, value in medians.items()))
    for name in medians:
        if name != "study":
            print(f"ratio {name} / study = {medians[name] / medians['study']:.3f}  (target <= 1.10)")
    print(json.dumps({"medians": medians, "epochs": args.epochs, "repeats": args.repeats,
                      "op_determinism": env["op_determinism"], "threads": env["threads"]}))


if __name__ == "__main__":
    main()
