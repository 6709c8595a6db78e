"""Per-run data start-up at 224 px with the MD5 memo vs hashing the whole file, in one run.

    python benchmarks/hash_memo.py                       # synthetic PathMNIST 224 px at scale 0.01 (~170 MB)
    python benchmarks/hash_memo.py --scale 0.1 --repeats 3 --json out.json

What one run does before its first training step, timed: `load_npz` (the file's MD5 — memoised or
hashed whole — then the `.npy` cache opened, the arrays checked and memory-mapped), `prepare` (the splits
as views) and the first batch of 128 training rows as float32. The cache is built once before timing
(every measured run finds it, as every run after a study's first does). Each mode runs `--repeats` times,
alternating, on a warm page cache (the favourable case for hashing: a cold 16 GB file is read from disk).
Printed: the median seconds of each mode and their ratio. Hashing grows with the file (a full 224 px
PathMNIST is ~16 GB); the memoised start-up does not.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def start_up(path: Path, hash_memo: bool) -> float:
    from ftmed_core.data import load_npz, prepare

    started = time.perf_counter()
    data = prepare(load_npz(path, "pathmnist", 224, hash_memo=hash_memo), "holdout", 0.2)
    x, y = next(data.train.batches(128))
    assert x.dtype.name == "float32" and len(y) == len(x)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=0.01, help="fraction of PathMNIST's split sizes")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--data-dir", type=Path, default=None, help="default: a temporary folder, removed after")
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    args = parser.parse_args()

    from ftmed_core.data import data_path, load_npz
    from ftmed_core.synth import write_synthetic

    with tempfile.TemporaryDirectory() as tmp:
        folder = args.data_dir or Path(tmp)
        path = data_path("pathmnist", 224, folder)
        if not path.is_file():
            write_synthetic(folder, "pathmnist", 224, scale=args.scale, seed=0)
        past = time.time() - 60  # an old file: the memo only records files not changed in the last seconds
        os.utime(path, (past, past))
        load_npz(path, "pathmnist", 224)  # builds the cache and the memo
        times = {"hash": [], "memo": []}
        for _ in range(args.repeats):
            times["hash"].append(start_up(path, hash_memo=False))
            times["memo"].append(start_up(path, hash_memo=True))
        result = {
            "file": path.name, "file_mb": round(path.stat().st_size / 1e6, 1), "scale": args.scale,
            "repeats": args.repeats,
            "hash_median_s": statistics.median(times["hash"]), "memo_median_s": statistics.median(times["memo"]),
        }
        result["ratio"] = result["hash_median_s"] / result["memo_median_s"]
        print(f"{result['file']} SYNTHETIC {result['file_mb']} MB (scale {args.scale}), median of {args.repeats}: "
              f"start-up hashing {result['hash_median_s']:.3f} s, with memo {result['memo_median_s']:.4f} s, "
              f"ratio {result['ratio']:.0f}x")
        if args.json:
            args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
