"""Seconds per epoch of keras_ref on each Keras backend (and lightning_ft as a reference), as ratios to
keras_ref on TensorFlow measured in the same run.

    python benchmarks/keras_backends.py                          # 10 % PathMNIST-sized synthetic, 3 epochs, 1 thread
    python benchmarks/keras_backends.py --scale 0.25 --epochs 4 --threads 2 --repeats 2
    python benchmarks/keras_backends.py --frameworks keras,keras[jax] --accelerator gpu

Each framework trains the baseline (`keras_ref.training.fit` / `lightning_ft.training.fit`, the code `ftmed train`
runs: the core's split, batch order and initial weights) in a fresh process with the backend chosen before
keras is imported (`ftmed_core.frameworks.prepare_keras_backend`). Repetitions are interleaved across
frameworks. Seconds per epoch = median over repetitions of each run's median epoch, the first epoch
(tracing / XLA compilation) excluded. Also printed: the first epoch (what compilation costs) and the test
accuracy (same seed, so equal up to rounding drift -- and on a sigmoid output, the loss each backend
computes). The machine may be shared: read the ratios, not the absolute numbers.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

import bench_common
from bench_common import emit


def child(spec: dict) -> dict:
    """One run in this (fresh) process: returns epoch seconds and test accuracy."""
    import os

    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(spec["threads"])
    from dataclasses import replace

    from ftmed_core.config import RuntimeConfig
    from ftmed_core.frameworks import keras_backend, prepare_keras_backend
    from ftmed_core.variants import VARIANTS

    runtime = RuntimeConfig(threads=spec["threads"], accelerator=spec["accelerator"], progress=False)
    if spec["framework"] == "lightning":
        from lightning_ft import train
    else:
        prepare_keras_backend(keras_backend(spec["framework"]), runtime.accelerator, runtime.threads)
        from keras_ref import train
    config = replace(VARIANTS[spec["variant"]].config, data_dir=spec["data_dir"], epochs=spec["epochs"])
    with tempfile.TemporaryDirectory() as runs:
        record = train(config, runtime=runtime, runs_dir=runs)
    if not record.finished:
        raise SystemExit(f"{spec['framework']} failed: {record.error}")
    return {"epoch_seconds": record.history["epoch_seconds"], "accuracy": record.test["accuracy"],
            "device": record.environment.get("device")}


def run_child(spec: dict) -> dict:
    result = bench_common.run_child(__file__, [json.dumps(spec)], spec["framework"])
    if "error" in result:
        raise SystemExit(result["error"])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frameworks", default="keras,keras[jax],keras[torch],lightning")
    parser.add_argument("--variant", default="baseline")
    parser.add_argument("--scale", type=float, default=0.1, help="synthetic PathMNIST scale (1.0 = 89,996 rows)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--accelerator", default="cpu")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        emit(child(json.loads(args.child)))
        return

    from ftmed_core.frameworks import parse_frameworks
    from ftmed_core.synth import write_synthetic

    frameworks = parse_frameworks(args.frameworks)
    if args.epochs < 2:
        raise SystemExit("--epochs must be >= 2 (the first epoch, with compilation, is reported apart)")
    with tempfile.TemporaryDirectory() as data_dir:
        write_synthetic(Path(data_dir), "pathmnist", 28, scale=args.scale, seed=0)
        results: dict[str, list[dict]] = {fw: [] for fw in frameworks}
        for _ in range(args.repeats):
            for fw in frameworks:
                results[fw].append(run_child({"framework": fw, "variant": args.variant, "data_dir": data_dir,
                                              "epochs": args.epochs, "threads": args.threads,
                                              "accelerator": args.accelerator}))
    per_epoch = {fw: statistics.median(statistics.median(r["epoch_seconds"][1:]) for r in runs)
                 for fw, runs in results.items()}
    first = {fw: statistics.median(r["epoch_seconds"][0] for r in runs) for fw, runs in results.items()}
    reference = per_epoch.get("keras", next(iter(per_epoch.values())))
    print(f"{args.variant}, PathMNIST-sized synthetic at scale {args.scale}, {args.epochs} epochs, "
          f"{args.threads} thread(s), {args.repeats} repetition(s), accelerator {args.accelerator}")
    print(f"{'framework':<14}{'s/epoch':>10}{'vs keras':>10}{'1st epoch s':>13}{'test acc':>10}  device")
    for fw in frameworks:
        acc = statistics.mean(r["accuracy"] for r in results[fw])
        print(f"{fw:<14}{per_epoch[fw]:>10.3f}{per_epoch[fw] / reference:>10.2f}{first[fw]:>13.2f}"
              f"{100 * acc:>9.2f}%  {results[fw][0]['device']}")


if __name__ == "__main__":
    main()
