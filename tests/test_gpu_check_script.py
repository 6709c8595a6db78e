"""scripts/gpu_check.sh, dry-run on CPU: every stage's CPU-possible part runs, the output folder holds at most
6 flat files, the summary lists every stage with a verdict, and a check cut short (by its budget or killed
from outside) still leaves a readable summary of what it finished."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STAGES = ["1 environment", "2 data", "3 device checks", "4 benchmark", "5 study", "6 determinism",
          "7 keras[jax]", "8 224 px"]


def check_env(tmp_path: Path, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("OUT", "FTMED_CHECK_INNER")}
    env.update(OUT=str(tmp_path / "out"), FTMED_GPU_DATA=str(tmp_path / "work"), PYTHON=sys.executable,
               FTMED_CHECK_ACCELERATOR="cpu", FTMED_CHECK_SCALE="0.01", FTMED_CHECK_EPOCHS="1",
               FTMED_CHECK_SEEDS="0", FTMED_CHECK_BENCH_MODELS="baseline", FTMED_CHECK_224_SCALE="0.002")
    env.update(extra)
    return env


def summary(tmp_path: Path) -> dict:
    return json.loads((tmp_path / "out" / "gpu_check.json").read_text())


def assert_flat_and_few(out: Path) -> None:
    entries = list(out.iterdir())
    assert len(entries) <= 6, entries
    assert all(e.is_file() for e in entries), entries


@pytest.mark.slow
def test_a_dry_run_passes_every_stage_within_budget_and_leaves_few_flat_files(tmp_path):
    started = time.monotonic()
    proc = subprocess.run(["bash", "scripts/gpu_check.sh"], cwd=ROOT, env=check_env(tmp_path),
                          capture_output=True, text=True, timeout=600)
    assert time.monotonic() - started < 480
    doc = summary(tmp_path)
    assert proc.returncode == 0, (doc["failed_stages"], proc.stdout[-3000:])
    assert [s["stage"].split(" (")[0] for s in doc["stages"]] == STAGES
    assert all(s["verdict"] == "pass" for s in doc["stages"]), doc["stages"]
    assert doc["overall"] == "PASS" and doc["complete"]
    assert doc["figures"]["determinism"]["same_seed_test_logits_bitwise"] is True
    assert doc["figures"]["study"]["finished"] == doc["figures"]["study"]["runs"] == 5
    out = tmp_path / "out"
    assert_flat_and_few(out)
    assert {p.name for p in out.iterdir()} == {"gpu_check.log", "gpu_check.json", "gpu_speed.json", "records.tar.gz"}


@pytest.mark.slow
def test_a_check_out_of_budget_still_lists_every_stage(tmp_path):
    """A budget too small for the later stages: they are recorded as skipped (out of time), the summary is
    complete and says FAIL/INCOMPLETE rather than PASS."""
    proc = subprocess.run(["bash", "scripts/gpu_check.sh"], cwd=ROOT, env=check_env(tmp_path, FTMED_CHECK_BUDGET="20"),
                          capture_output=True, text=True, timeout=120)
    doc = summary(tmp_path)
    assert [s["stage"].split(" (")[0] for s in doc["stages"]] == STAGES
    assert all(s["verdict"] in ("pass", "fail", "timeout", "skipped") for s in doc["stages"])
    assert any(s["note"] == "out of time" for s in doc["stages"])
    assert doc["overall"] != "PASS" and proc.returncode != 0
    assert_flat_and_few(tmp_path / "out")


@pytest.mark.slow
def test_a_check_killed_from_outside_leaves_the_summary_of_what_it_finished(tmp_path):
    proc = subprocess.Popen(["bash", "scripts/gpu_check.sh"], cwd=ROOT, env=check_env(tmp_path),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 180
    try:
        while time.monotonic() < deadline:
            path = tmp_path / "out" / "gpu_check.json"
            if path.exists() and len(json.loads(path.read_text() or "{}").get("stages", [])) >= 2:
                break
            time.sleep(0.5)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # no trap runs: only what was written per stage survives
        proc.wait()
    doc = summary(tmp_path)
    assert [s["stage"] for s in doc["stages"]][:2] == ["1 environment", "2 data"]
    assert doc["complete"] is False and doc["overall"] != "PASS"
