"""What the benchmark scripts share: the steady epochs, a child process per measurement, the GEMM floor.

Each benchmark runs every measurement in a fresh child (`python <script> --child ...`) so that one
framework's threads, caches and allocator never colour another's numbers. A child prints its result as
one line `RESULT {json}`; `run_child` returns that dict, or `{"error": ...}` naming the child and its exit.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def steady(seconds: list[float]) -> list[float]:
    """The epochs after the first (which pays for compilation and warm-up); all of them if there is one."""
    return seconds[1:] if len(seconds) > 1 else seconds


def emit(result: dict) -> None:
    """Print a child's result as the `RESULT {json}` line that `run_child` reads."""
    print("RESULT " + json.dumps(result), flush=True)


def run_child(script: str | Path, args: list[str], name: str, extra_env: dict | None = None) -> dict:
    """Run `script --child *args` in a fresh interpreter from the repository root.

    Returns the child's last `RESULT` dict plus `process_seconds` (the child's wall time), or
    `{"error": "<name> failed (exit N): <last lines of its output>"}` when it exits non-zero or prints none.
    """
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(ROOT), **(extra_env or {})}
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, str(script), "--child", *args], capture_output=True, text=True,
                          env=env, cwd=ROOT)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return {"error": f"{name} failed (exit {proc.returncode}): {' | '.join(tail)}"}
    return {**json.loads(lines[-1][len("RESULT "):]), "process_seconds": time.perf_counter() - started}


def gemm_floor(sizes: list[int], n_train: int, n_val: int, batch: int, threads: int,
               flops_budget: float | None = None) -> dict:
    """The compute floor of one epoch of an MLP with layer widths `sizes`, from torch's float32 GEMM rate.

    Per layer, the three GEMMs of a training step at `batch` rows (forward, weight gradient, input
    gradient - none for the first layer) are timed, best of 7 x 20 repetitions. With `flops_budget`, a
    layer whose step costs more than the budget is repeated fewer times (best of 4 x fewer), so the huge
    first layer of large images stays quick. Returns the model FLOPs of one epoch (training over
    `n_train` rows, forward over `n_val`), the GEMM rate (FLOP/s), `floor_seconds` (their quotient) and
    `cores_used` (CPU seconds per wall second while timing).
    """
    import torch

    torch.set_num_threads(threads)
    flops_epoch, layer_seconds = 0.0, 0.0
    wall0, cpu0 = time.perf_counter(), time.process_time()
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        forward = 2.0 * fan_in * fan_out
        backward = forward * (1 if i == 0 else 2)  # weight grad always; input grad except the first layer
        flops_epoch += (forward + backward) * n_train + forward * n_val
        a, w, g = torch.randn(batch, fan_in), torch.randn(fan_in, fan_out), torch.randn(batch, fan_out)
        inner = 20 if flops_budget is None else max(1, min(20, int(flops_budget // (forward * batch * 3))))
        best = float("inf")
        for _ in range(7 if inner == 20 else 4):
            start = time.perf_counter()
            for _ in range(inner):
                torch.mm(a, w)
                torch.mm(a.t(), g)
                if i:
                    torch.mm(g, w.t())
            best = min(best, (time.perf_counter() - start) / inner)
        layer_seconds += best
    step_flops = sum(2.0 * a * b * (3 if i else 2) for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:]))) * batch
    rate = step_flops / layer_seconds
    cores_used = (time.process_time() - cpu0) / (time.perf_counter() - wall0)
    return {"flops_per_epoch": flops_epoch, "gemm_flops_per_s": rate, "floor_seconds": flops_epoch / rate,
            "cores_used": cores_used}
