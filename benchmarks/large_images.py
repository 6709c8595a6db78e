"""Large images: one epoch of the baseline per framework at a given size, against the GEMM floor, with memory.

    python benchmarks/large_images.py --size 64                  # full-size synthetic PathMNIST at 64 px
    python benchmarks/large_images.py --size 224 --scale 0.1 --frameworks lightning
    python benchmarks/large_images.py --size 224 --delete        # remove the 13.5 GB file and its cache after

Each step runs in a fresh process (TensorFlow and torch never share one, and every peak is that step's):
  prepare    synthesize `pathmnist_<size>.npz` (skipped when present) and build its `.npy` cache
  gemm       the float32 GEMM rate torch reaches for this size's layer shapes (batch 128, `--threads`),
             measured as in benchmarks/run.py: the three GEMMs of a training step per layer, best of
             7x20 (fewer repetitions for layers of over ~0.5 GFLOP per step)
  <framework> `fit` for one epoch of the baseline on the holdout split (train + validation), then the test
             logits, through the memory-mapped cache: what `ftmed train` does. `lightning:in-memory` /
             `keras:in-memory` run the same `fit` on splits converted to float32 whole up front (the data
             path before the cache), as the memory baseline: `--frameworks lightning,lightning:in-memory`
Printed per framework: s/epoch (the history's epoch_seconds: training and validation), the GEMM floor for
that size (model FLOPs per epoch / the GEMM rate measured in this run), their ratio, and the peak private
memory `RssAnon` (sampled every 20 ms from /proc/self/status; memory-mapped file pages are page cache and
are not counted) next to the peak resident set (`ru_maxrss`, which counts them).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

import bench_common
from bench_common import emit, gemm_floor

DEFAULT_DIR = Path(os.environ.get("FTMED_BENCH_DATA", "/tmp/ftmed_bench_large"))


class MemorySampler:
    """Peak RssAnon of this process, sampled by a daemon thread."""

    def __init__(self, interval: float = 0.02):
        self.peak_kb, self.interval = 0, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def rss_anon_kb() -> int:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1])
        return 0

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_kb = max(self.peak_kb, self.rss_anon_kb())
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak_kb = max(self.peak_kb, self.rss_anon_kb())


def _memory(sampler: MemorySampler) -> dict:
    return {"peak_rss_anon_gb": sampler.peak_kb / 1e6,
            "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6}


def _config(size: int, data_dir: Path):
    from ftmed_core.variants import VARIANTS

    return replace(VARIANTS["baseline"].config, size=size, epochs=1, data_dir=str(data_dir))


def child_prepare(size: int, scale: float, data_dir: Path, threads: int) -> dict:
    from ftmed_core.data import data_path, load_npz
    from ftmed_core.synth import write_synthetic

    out = {}
    with MemorySampler() as sampler:
        path = data_path("pathmnist", size, data_dir)
        if not path.is_file():
            started = time.perf_counter()
            write_synthetic(data_dir, "pathmnist", size, scale=scale, seed=0)
            out["synth_seconds"] = time.perf_counter() - started
        started = time.perf_counter()
        raw = load_npz(path, "pathmnist", size)  # MD5 + cache build on first use, MD5 only afterwards
        out["load_seconds"] = time.perf_counter() - started
        out["file_gb"] = path.stat().st_size / 1e9
        out["n_train"] = int(len(raw.labels["train"]))
        out["synthetic_scale"] = raw.synthetic.get("scale") if raw.synthetic else None
    return {**out, **_memory(sampler)}


def child_gemm(size: int, data_dir: Path, threads: int) -> dict:
    from ftmed_core.data import holdout_split_at

    config = _config(size, data_dir)
    n_rows = json.loads(os.environ["FTMED_BENCH_ROWS"])
    n_train = holdout_split_at(n_rows, config.val_fraction)
    # run.py's 7 x 20 repetitions at 28 px; fewer for the huge first layer at large sizes.
    return gemm_floor([size * size * 3, *config.hidden_units, 9], n_train=n_train, n_val=n_rows - n_train,
                      batch=config.batch_size, threads=threads, flops_budget=4e9)


def child_fit(framework: str, size: int, data_dir: Path, threads: int) -> dict:
    import numpy as np

    from ftmed_core.config import RuntimeConfig
    from ftmed_core.data import load_experiment_data
    from ftmed_core.protocol import initial_weights

    framework, _, variant = framework.partition(":")
    if framework == "lightning":
        from lightning_ft.training import fit
    else:
        from keras_ref.training import fit
    config = _config(size, data_dir)
    with MemorySampler() as sampler:
        data = load_experiment_data(config, allow_download=False)
        if variant == "in-memory":  # the baseline: every split converted to float32 up front, as before
            data = data.in_memory()
        weights = initial_weights(config, data.input_dim, data.n_classes)
        with tempfile.TemporaryDirectory() as run_dir:
            started = time.perf_counter()
            result = fit(config, RuntimeConfig(threads=threads, progress=False), data, weights, Path(run_dir))
            total = time.perf_counter() - started
        del weights
    return {"epoch_seconds": result.history["epoch_seconds"][0], "fit_and_test_seconds": total,
            "val_acc": result.history["val_acc"][0], "test_logits_finite": bool(np.isfinite(result.test_logits).all()),
            **_memory(sampler)}


def run_child(kind: str, args: argparse.Namespace, extra_env: dict | None = None) -> dict:
    return bench_common.run_child(__file__, [kind, "--size", str(args.size), "--scale", str(args.scale),
                                             "--threads", str(args.threads), "--data-dir", str(args.data_dir)],
                                  kind, extra_env)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, choices=(28, 64, 128, 224), default=64)
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of PathMNIST's split sizes")
    parser.add_argument("--frameworks", default="lightning,keras")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--data-dir", type=Path, default=None, help=f"default {DEFAULT_DIR}/<size>-<scale>")
    parser.add_argument("--out", type=Path, help="also write the results as JSON here")
    parser.add_argument("--delete", action="store_true", help="delete the file and its cache afterwards")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.data_dir is None:
        args.data_dir = DEFAULT_DIR / f"{args.size}-{args.scale:g}"

    if args.child:
        if args.child == "prepare":
            out = child_prepare(args.size, args.scale, args.data_dir, args.threads)
        elif args.child == "gemm":
            out = child_gemm(args.size, args.data_dir, args.threads)
        else:
            out = child_fit(args.child, args.size, args.data_dir, args.threads)
        emit(out)
        return

    load = os.getloadavg()
    results = {"size": args.size, "scale": args.scale, "threads": args.threads, "loadavg_before": load,
               "cpus": os.cpu_count(), "prepare": run_child("prepare", args)}
    print(f"size {args.size}, scale {args.scale:g}, {args.threads} thread(s), load average {load[0]:.2f} "
          f"on {os.cpu_count()} CPUs; data in {args.data_dir}")
    print(f"prepare: {json.dumps(results['prepare'])}")
    if "error" in results["prepare"]:
        sys.exit(1)
    rows_env = {"FTMED_BENCH_ROWS": str(results["prepare"]["n_train"])}
    results["gemm"] = run_child("gemm", args, rows_env)
    floor = results["gemm"].get("floor_seconds")
    print(f"GEMM floor: {json.dumps(results['gemm'])}")
    print(f"{'framework':<19} {'s/epoch':>9} {'floor s':>9} {'ratio':>6} {'peak RssAnon GB':>16} {'peak RSS GB':>12}")
    for framework in [f.strip() for f in args.frameworks.split(",") if f.strip()]:
        run = results[framework] = run_child(framework, args)
        if "error" in run:
            print(f"{framework:<19} {run['error']}")
            continue
        ratio = run["epoch_seconds"] / floor if floor else float("nan")
        print(f"{framework:<19} {run['epoch_seconds']:>9.1f} {floor or float('nan'):>9.1f} {ratio:>6.2f} "
              f"{run['peak_rss_anon_gb']:>16.2f} {run['peak_rss_gb']:>12.2f}")
    results["loadavg_after"] = os.getloadavg()
    print(f"load average after: {results['loadavg_after'][0]:.2f}")
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))
    if args.delete:
        import shutil

        shutil.rmtree(args.data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
