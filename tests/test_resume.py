"""A run killed mid-training resumes from its last finished epoch and ends bitwise identical to a run that
was never interrupted: weights, optimizer state, history (all but the wall-clock `epoch_seconds`), test
outputs. The kill is real: a child process trains and `os._exit`s from inside its epoch callback, so
nothing is flushed, closed or recorded (as with kill -9 or a power cut after the last write).

Each framework runs in its own process here (as `ftmed compare` does), since TensorFlow and torch are
not loaded into one process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

EPOCHS = 4
KILL_AT = 3  # killed inside epoch 3's callback: epochs 1-2 are saved, epoch 3 is lost
ROOT = Path(__file__).resolve().parents[1]

# Run in a child process: train `framework` on the synthetic file into each run dir of argv; for the
# first, kill the process during epoch KILL_AT when asked; print what each run returned, as JSON.
CHILD = textwrap.dedent("""
    import json, os, sys
    from pathlib import Path
    import numpy as np
    from ftmed_core.config import ExperimentConfig, RuntimeConfig

    framework, data_dir, epochs, kill_at = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    run_dirs = sys.argv[5:]
    if framework == "lightning":
        from lightning_ft import train
    else:
        from keras_ref import train
    config = ExperimentConfig(data_dir=data_dir, epochs=epochs, seed=3)
    runtime = RuntimeConfig(accelerator="cpu", threads=1, progress=False)
    out = []
    for run_dir in run_dirs:
        seen = []

        def on_epoch(epoch, total, values):
            seen.append(epoch)
            if epoch == kill_at:
                os._exit(9)

        record = train(config, run_dir=run_dir, runtime=runtime, on_epoch=on_epoch)
        out.append({"status": record.status, "error": record.error, "history": record.history,
                    "epochs_trained_here": seen, "environment": {k: str(v) for k, v in record.environment.items()}})
        kill_at = 0
    print("RESULT " + json.dumps(out))
""")


def _child(framework: str, data_dir: Path, kill_at: int, *run_dirs: Path) -> tuple[int, list]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CUDA_VISIBLE_DEVICES": "", "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run([sys.executable, "-c", CHILD, framework, str(data_dir), str(EPOCHS), str(kill_at),
                           *map(str, run_dirs)], capture_output=True, text=True, env=env, timeout=600)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    return proc.returncode, (json.loads(lines[-1][7:]) if lines else [])


def _without_time(history: dict) -> dict:
    return {k: v for k, v in history.items() if k != "epoch_seconds"}


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    from ftmed_core.synth import write_synthetic

    out = tmp_path_factory.mktemp("resume_data")
    write_synthetic(out, "pathmnist", 28, scale=0.01, seed=2)
    return out


def _killed_then_resumed(framework: str, data_dir: Path, tmp_path: Path):
    killed, reference = tmp_path / "killed", tmp_path / "reference"
    code, out = _child(framework, data_dir, KILL_AT, killed)
    assert code == 9 and out == [], "the child should have died inside epoch 3"
    assert not (killed / "record.json").exists()
    # Rerun: resumes the killed run (epochs 3-4 only), then trains the reference uninterrupted.
    code, out = _child(framework, data_dir, 0, killed, reference)
    assert code == 0, out
    resumed, straight = out
    assert resumed["status"] == straight["status"] == "finished", (resumed["error"], straight["error"])
    assert resumed["epochs_trained_here"] == [3, 4] and straight["epochs_trained_here"] == [1, 2, 3, 4]
    assert _without_time(resumed["history"]) == _without_time(straight["history"])  # exact floats
    assert len(resumed["history"]["epoch_seconds"]) == EPOCHS
    for name in ("test_logits.npy", "test_probabilities.npy"):
        assert np.load(killed / name).tobytes() == np.load(reference / name).tobytes(), name
    return killed, reference, resumed


@pytest.mark.slow
def test_lightning_run_killed_after_epoch_2_resumes_bitwise(tiny_data, tmp_path):
    import torch

    killed, reference, resumed = _killed_then_resumed("lightning", tiny_data, tmp_path)
    assert resumed["environment"]["resumed_after_epoch"] == "2"
    a = torch.load(killed / "checkpoints" / "last.ckpt", weights_only=True)
    b = torch.load(reference / "checkpoints" / "last.ckpt", weights_only=True)
    assert a["epoch"] == b["epoch"] == EPOCHS - 1 and a["global_step"] == b["global_step"]
    assert a["state_dict"].keys() == b["state_dict"].keys()
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
    (opt_a,), (opt_b,) = a["optimizer_states"], b["optimizer_states"]
    for index, state in opt_b["state"].items():
        for key, value in state.items():
            other = opt_a["state"][index][key]
            assert torch.equal(other, value) if torch.is_tensor(value) else other == value, key


@pytest.mark.slow
def test_keras_run_killed_after_epoch_2_resumes_bitwise(tiny_data, tmp_path):
    killed, reference, resumed = _killed_then_resumed("keras", tiny_data, tmp_path)
    assert resumed["environment"]["resumed_after_epoch"] == "2"
    code = (
        "import sys, numpy as np, keras\n"
        "a, b = (keras.saving.load_model(p) for p in sys.argv[1:3])\n"
        "assert all(x.tobytes() == y.tobytes() for x, y in zip(a.get_weights(), b.get_weights()))\n"
        "va = [np.asarray(v) for v in a.optimizer.variables]; vb = [np.asarray(v) for v in b.optimizer.variables]\n"
        "assert len(va) == len(vb) and all(x.tobytes() == y.tobytes() for x, y in zip(va, vb))\n"
        "print('IDENTICAL', int(np.asarray(a.optimizer.iterations)))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CUDA_VISIBLE_DEVICES": "", "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run([sys.executable, "-c", code, str(killed / "model.keras"), str(reference / "model.keras")],
                          capture_output=True, text=True, env=env, timeout=300)
    assert "IDENTICAL" in proc.stdout, proc.stderr[-2000:]
    assert int(proc.stdout.split()[-1]) > 0


@pytest.mark.slow
def test_an_unreadable_keras_state_is_moved_aside_and_the_run_starts_over(tiny_data, tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "keras_state.npz").write_bytes(b"PK\x03\x04 truncated by a full disk")
    code, out = _child("keras", tiny_data, 0, run_dir)
    assert code == 0 and out[0]["status"] == "finished", out
    assert out[0]["epochs_trained_here"] == [1, 2, 3, 4] and out[0]["environment"]["resumed_after_epoch"] == "0"
    assert len(list(run_dir.glob("keras_state.npz.unusable-*"))) == 1
    assert not (run_dir / "keras_state.npz").exists()  # removed once model.keras holds the finished model
