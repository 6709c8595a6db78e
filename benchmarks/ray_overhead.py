"""Per-run overhead of `ftmed compare --executor ray` against the local executor, on this machine.

    python benchmarks/ray_overhead.py [--repeats 2] [--nodes 1] [--scale 0.01]

Runs the tests' small grid (baseline and sgd-momentum x lightning and keras x seeds 0,1, 1 epoch, on a
synthetic PathMNIST-shaped file) with both executors, alternating, each into a fresh runs folder, with the
same parallelism: the local executor 2 jobs at a time, the Ray executor on a Ray cluster started on this
machine with 2 CPUs in all (`--nodes 2`: a head and a worker node, 1 CPU each), 1 thread per run. Prints
median wall time per run for each, the ratio ray/local, and the extra seconds per run; Ray's start-up
(cluster and connection, paid once per study) is printed apart. A shared machine drifts: compare the
ratio, measured in one invocation.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def grid(data_dir: Path):
    from ftmed.grid import plan
    from ftmed_core.config import RuntimeConfig
    from ftmed_core.data import data_path, load_npz, prepare
    from ftmed_core.runner import data_summary
    from ftmed_core.variants import select_variants

    path = data_path("pathmnist", 28, data_dir)
    raw = load_npz(path, "pathmnist", 28)
    chosen = select_variants("baseline,sgd-momentum")
    source = data_summary(prepare(raw, chosen[0].config.val_mode, chosen[0].config.val_fraction))
    runtime = RuntimeConfig(threads=1, progress=False)
    jobs = plan(chosen, ["lightning", "keras"], [0, 1], data_md5=raw.md5, precision=runtime.precision, epochs=1,
                data_dir=data_dir)
    return jobs, runtime, source, path


def timed(executor, jobs, runtime, source, path, runs_dir: Path) -> float:
    from ftmed_core.records import list_records

    runs_dir.mkdir(parents=True)
    started = time.perf_counter()
    executor.run(jobs, runtime, source, runs_dir, path)
    wall = time.perf_counter() - started
    finished = [r for r in list_records(runs_dir) if r.finished]
    if len(finished) != len(jobs):
        raise SystemExit(f"only {len(finished)} of {len(jobs)} runs finished in {runs_dir}")
    return wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--nodes", type=int, choices=(1, 2), default=1)
    parser.add_argument("--scale", type=float, default=0.01)
    args = parser.parse_args()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

    import ray
    from ray.cluster_utils import Cluster

    from ftmed.executors import LocalExecutor, RayExecutor
    from ftmed_core.synth import write_synthetic

    work = Path(tempfile.mkdtemp(prefix="ftmed-ray-bench-"))
    write_synthetic(work / "data", "pathmnist", 28, scale=args.scale, seed=1)
    jobs, runtime, source, path = grid(work / "data")

    started = time.perf_counter()
    per_node = {"num_cpus": 2 // args.nodes, "object_store_memory": 300 << 20}
    cluster = Cluster(initialize_head=True, head_node_args={**per_node, "include_dashboard": False})
    for _ in range(args.nodes - 1):
        cluster.add_node(**per_node)
    cluster.wait_for_nodes()
    cluster_start = time.perf_counter() - started
    started = time.perf_counter()
    ray.init(address=cluster.address, log_to_driver=False, logging_level="WARNING")
    connect = time.perf_counter() - started
    walls = {"local": [], "ray": []}
    try:
        for i in range(args.repeats):
            for name, executor in (("local", LocalExecutor(2)), ("ray", RayExecutor(cluster.address))):
                wall = timed(executor, jobs, runtime, source, path, work / f"runs-{name}-{i}")
                walls[name].append(wall)
                print(f"  {name:5s} repeat {i + 1}: {wall:6.1f} s for {len(jobs)} runs", flush=True)
    finally:
        ray.shutdown()
        cluster.shutdown()
        shutil.rmtree(work, ignore_errors=True)

    n = len(jobs)
    local, remote = statistics.median(walls["local"]), statistics.median(walls["ray"])
    print(f"grid: {n} runs (2 variants x 2 frameworks x 2 seeds, 1 epoch, scale {args.scale}), 2 at a time, "
          f"1 thread each; Ray cluster: {args.nodes} node(s), 2 CPUs; median of {args.repeats}")
    print(f"local executor: {local / n:6.2f} s/run (wall {local:.1f} s)")
    print(f"ray executor:   {remote / n:6.2f} s/run (wall {remote:.1f} s)")
    print(f"ratio ray/local: {remote / local:.2f}; extra per run: {(remote - local) / n:+.2f} s of wall time "
          f"({2 * (remote - local) / n:+.2f} s per run on its CPU)")
    print(f"once per study: Ray cluster start {cluster_start:.1f} s, connect {connect:.1f} s")


if __name__ == "__main__":
    main()
