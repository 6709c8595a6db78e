"""Device checks of the Lightning paths on one CUDA GPU (run by scripts/gpu_check.sh; also by hand):

    python3 scripts/gpu_checks.py --data-dir DIR [--out results.json]

For each configuration (baseline = Keras-exact Adam, sgd-momentum, wider-deeper, and Keras-exact Nadam,
which is not capturable and so runs eager blocks), `lightning_ft.fit` trains 2 epochs three ways on the
GPU: the plain path (1 step per training_step), eager blocks (8 steps, no graph) and graph blocks (8 steps,
CUDA graphs). Printed per configuration: max |difference| of the weights, the optimizer state, the epoch
losses and the test logits, plain vs graphs and eager vs graphs. Then the graph path twice with the same
seed (must be bitwise identical).

Verdicts: eager vs graphs must be bitwise equal (the replayed kernels are the eager kernels); plain vs
graphs passes at max |dW| <= 1e-5 (float32 rounding over 2 epochs of steps; 0 is expected where cuBLAS
picks the same kernels with and without capture); the repeat must be bitwise. Exit code 1 if any fails.
No TensorFlow needed. With pytest installed, run tests/test_lightning_fast.py too (its CUDA tests run here).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from ftmed_core.config import ExperimentConfig, RuntimeConfig, optimizer_config
from ftmed_core.data import load_experiment_data
from ftmed_core.protocol import initial_weights
from ftmed_core.variants import get_variant
from lightning_ft.training import fit

CASES = {
    "baseline": lambda c: c,
    "sgd-momentum": lambda c: replace(c, optimizer=get_variant("sgd-momentum").config.optimizer),
    "wider-deeper": lambda c: replace(c, hidden_units=get_variant("wider-deeper").config.hidden_units),
    "nadam (eager blocks)": lambda c: replace(c, optimizer=optimizer_config("nadam")),
}


def train(config: ExperimentConfig, data, steps: int, graphs: bool | None) -> dict:
    rt = RuntimeConfig(accelerator="gpu", threads=1, progress=False, steps_per_execution=steps, cuda_graphs=graphs)
    with tempfile.TemporaryDirectory() as run_dir:
        started = time.perf_counter()
        result = fit(config, rt, data, initial_weights(config, data.input_dim, data.n_classes), Path(run_dir))
        seconds = time.perf_counter() - started
        state = torch.load(Path(run_dir) / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    tensors = {f"w:{k}": v for k, v in state["state_dict"].items()}
    for index, st in state["optimizer_states"][0]["state"].items():
        tensors.update({f"opt:{index}:{name}": t for name, t in st.items() if torch.is_tensor(t)})
    return {"tensors": tensors, "history": result.history, "logits": result.test_logits, "seconds": seconds,
            "path": result.environment["training_path"]}


def max_diff(a: dict, b: dict) -> dict:
    def tensor_diff(prefix: str) -> float:
        keys = [k for k in a["tensors"] if k.startswith(prefix)]
        return max(float((a["tensors"][k].double() - b["tensors"][k].double()).abs().max()) for k in keys) if keys else 0.0

    losses = [abs(x - y) for key in ("train_loss", "val_loss") for x, y in zip(a["history"][key], b["history"][key])]
    return {"weights": tensor_diff("w:"), "optimizer_state": tensor_diff("opt:"), "losses": max(losses),
            "test_logits": float(np.abs(a["logits"] - b["logits"]).max())}


def bitwise(d: dict) -> bool:
    return all(v == 0 for v in d.values())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device: nothing to check here (the CPU tests cover the block path)")
        return 0
    print(f"device: {torch.cuda.get_device_name()}; torch {torch.__version__}", flush=True)
    base = ExperimentConfig(data_dir=args.data_dir, epochs=2)
    data = load_experiment_data(base, allow_download=False)
    print(f"data: {len(data.y_train)} train rows, batch {base.batch_size}", flush=True)
    results, failed = {}, []
    for name, make in CASES.items():
        config = make(base)
        plain = train(config, data, 1, None)
        eager = train(config, data, 8, False)
        graphs = train(config, data, 8, None)
        d_plain, d_eager = max_diff(plain, graphs), max_diff(eager, graphs)
        ok = bitwise(d_eager) and d_plain["weights"] <= 1e-5
        results[name] = {"plain_vs_fast": d_plain, "eager_vs_fast": d_eager, "fast_path": graphs["path"], "ok": ok}
        print(f"{name}: fast path '{graphs['path']}'; plain vs fast max |d| {d_plain}; eager vs fast {d_eager} "
              f"-> {'PASS' if ok else 'FAIL'}", flush=True)
        if not ok:
            failed.append(name)
    again_a, again_b = train(base, data, 8, True), train(base, data, 8, True)
    repeat = max_diff(again_a, again_b)
    results["same seed twice (graphs)"] = {"diff": repeat, "ok": bitwise(repeat)}
    print(f"same seed twice, CUDA graphs: {repeat} -> {'PASS (bitwise)' if bitwise(repeat) else 'FAIL'}", flush=True)
    if not bitwise(repeat):
        failed.append("repeat")
    if args.out:
        Path(args.out).write_text(json.dumps({"device": torch.cuda.get_device_name(), "results": results}, indent=2))
    print("device checks: " + ("all PASS" if not failed else f"FAIL: {', '.join(failed)}"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
