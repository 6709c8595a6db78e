"""Inference speed on CPU: images/s at batch 1 and batch 256 of one trained baseline run, served four ways,
as ratios to torch eager measured in the same run. Writes benchmarks/inference_latest.json (docs/export.md
renders it through benchmarks/tables.py).

    python benchmarks/inference.py                        # 1 thread per process, ~2 min on a laptop core
    python benchmarks/inference.py --threads 2 --seconds 1

The paths, each timed in a fresh process of its own (bench_common.run_child):
- onnxruntime          the Lightning run exported by `ftmed export` (float32 input), ONNX Runtime's CPU provider
- onnxruntime uint8    the same run exported `--with-preprocessing`, fed uint8 images (the /255 in the graph)
- torch eager          the run's checkpoint (`lightning_ft.training.load_checkpoint`) under inference_mode
- keras predict        the Keras run's model.keras, `model.predict(x, batch_size=...)` on TensorFlow

The float32 paths get the preprocessed test images (pixels / 255, flattened: not timed); the uint8 path
gets the images as stored. Each (path, batch) is timed in rounds of at least `--seconds`, after one
warm-up round; images/s is the median over `--rounds`. The machine may be shared: read the ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import bench_common
from bench_common import emit

OUT = Path(__file__).resolve().parent / "inference_latest.json"
BATCHES = (1, 256)
BASELINE = "torch eager"
PATHS = ("onnxruntime", "onnxruntime uint8", "torch eager", "keras predict")


def _threads(n: int) -> None:
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(n)


def train_child(spec: dict) -> dict:
    """Train the baseline for one epoch in this process (lightning or keras); the run's directory."""
    from dataclasses import replace

    from ftmed_core.config import RuntimeConfig
    from ftmed_core.variants import BASELINE as CONFIG

    _threads(spec["threads"])
    if spec["framework"] == "lightning":
        from lightning_ft import train
    else:
        from keras_ref import train
    config = replace(CONFIG, data_dir=spec["data_dir"], epochs=1)
    record = train(config, runtime=RuntimeConfig(accelerator="cpu", threads=spec["threads"], progress=False),
                   runs_dir=spec["runs_dir"])
    if not record.finished:
        raise SystemExit(f"{spec['framework']} failed: {record.error}")
    return {"run_dir": str(Path(spec["runs_dir"]) / record.run_key)}


def _predictor(spec: dict):
    """(predict(batch) function, version string) for the path in this fresh process."""
    path, threads = spec["path"], spec["threads"]
    if path.startswith("onnxruntime"):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = threads
        session = ort.InferenceSession(spec["model"], options, providers=["CPUExecutionProvider"])
        return (lambda x: session.run(["logits"], {"input": x})[0]), f"onnxruntime {ort.__version__}"
    if path == "torch eager":
        import torch

        from lightning_ft.training import load_checkpoint

        torch.set_num_threads(threads)
        model = load_checkpoint(Path(spec["model"]) / "checkpoints" / "last.ckpt").eval()

        def predict(x):
            with torch.inference_mode():
                return model(torch.from_numpy(x)).numpy()
        return predict, f"torch {torch.__version__}"
    from keras_ref._backend import keras, tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    model = keras.saving.load_model(Path(spec["model"]) / "model.keras", compile=False)
    return (lambda x: model.predict(x, batch_size=len(x), verbose=0)), f"keras {keras.__version__}, tensorflow {tf.__version__}"


def measure_child(spec: dict) -> dict:
    """images/s per batch size for one path, in this fresh process."""
    import numpy as np

    from ftmed_core.data import preprocess_images

    _threads(spec["threads"])
    images = np.load(spec["data"])["test_images"]
    x_all = images if spec["path"] == "onnxruntime uint8" else preprocess_images(images)
    predict, version = _predictor(spec)
    rates = {}
    for batch in BATCHES:
        starts = list(range(0, len(x_all) - batch + 1, batch))
        x_batches = [np.ascontiguousarray(x_all[s:s + batch]) for s in starts]
        per_round = []
        for round_ in range(spec["rounds"] + 1):  # round 0 warms up
            done, started = 0, time.perf_counter()
            while True:
                predict(x_batches[done % len(x_batches)])
                done += 1
                elapsed = time.perf_counter() - started
                if elapsed >= spec["seconds"]:
                    break
            if round_:
                per_round.append(done * batch / elapsed)
        rates[str(batch)] = statistics.median(per_round)
    return {"images_per_s": rates, "version": version}


def _run(kind: str, spec: dict, name: str) -> dict:
    result = bench_common.run_child(__file__, [kind, json.dumps(spec)], name)
    if "error" in result:
        raise SystemExit(result["error"])
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads in every process (default 1)")
    parser.add_argument("--seconds", type=float, default=0.5, help="minimum seconds per timed round")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds per (path, batch); the median is kept")
    parser.add_argument("--scale", type=float, default=0.04, help="synthetic file scale (>= 256 test rows)")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--child", nargs=2, metavar=("KIND", "SPEC"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, spec = args.child
        emit((train_child if kind == "train" else measure_child)(json.loads(spec)))
        return 0

    import ftmed
    from ftmed_core.synth import write_synthetic

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="ftmed-inference-") as scratch:
        scratch = Path(scratch)
        write_synthetic(scratch / "data", "pathmnist", 28, scale=args.scale, seed=0)
        data = scratch / "data" / "pathmnist.npz"
        runs = {fw: _run("train", {"framework": fw, "data_dir": str(scratch / "data"), "threads": args.threads,
                                   "runs_dir": str(scratch / "runs")}, f"train {fw}")["run_dir"]
                for fw in ("lightning", "keras")}
        [float_model] = ftmed.export(runs["lightning"], out=scratch / "float")
        [uint8_model] = ftmed.export(runs["lightning"], out=scratch / "uint8", with_preprocessing=True)
        models = {"onnxruntime": float_model, "onnxruntime uint8": uint8_model, "torch eager": runs["lightning"],
                  "keras predict": runs["keras"]}
        results = {}
        for path in PATHS:
            spec = {"path": path, "model": str(models[path]), "data": str(data), "threads": args.threads,
                    "seconds": args.seconds, "rounds": args.rounds}
            results[path] = _run("measure", spec, path)
            print(f"{path:<18} " + "  ".join(f"batch {b}: {results[path]['images_per_s'][str(b)]:>10,.0f} images/s"
                                            for b in BATCHES), flush=True)
    base = results[BASELINE]["images_per_s"]
    payload = {
        "model": "baseline MLP 2352-512-256-128-9 (PathMNIST 28 x 28 x 3), 1 epoch on a synthetic file",
        "device": "cpu", "processor": _processor(), "threads": args.threads, "baseline": BASELINE,
        "batches": list(BATCHES), "seconds_per_round": args.seconds, "rounds": args.rounds,
        "paths": {path: {"version": r["version"], "images_per_s": r["images_per_s"],
                         "ratio": {b: r["images_per_s"][b] / base[b] for b in base}}
                  for path, r in results.items()},
        "elapsed_s": round(time.perf_counter() - started, 1),
    }
    args.out.write_text(json.dumps(payload, indent=2) + "\n")
    for path, r in payload["paths"].items():
        print(f"{path:<18} " + "  ".join(f"batch {b}: {r['ratio'][b]:.2f}x {BASELINE}" for b in r["ratio"]))
    print(f"wrote {args.out} ({payload['elapsed_s']:.0f} s)")
    return 0


def _processor() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


if __name__ == "__main__":
    raise SystemExit(main())
