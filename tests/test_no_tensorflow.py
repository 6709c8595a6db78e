"""The Lightning half works on a machine without TensorFlow (a GPU box may have torch and medmnist only):
`ftmed train -f lightning` and `ftmed compare --frameworks lightning` run with `tensorflow` and `keras`
made unimportable (a sitecustomize on PYTHONPATH, inherited by compare's worker processes, puts None in sys.modules), and asking for
Keras there is one clear line, not a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

BLOCKER = """
import sys

# A None entry is what Python reports for a module that cannot be imported: `import tensorflow` raises
# ModuleNotFoundError and importlib.util.find_spec("tensorflow") returns None, as when it is not installed.
for name in ("tensorflow", "keras", "tf_keras"):
    sys.modules[name] = None
"""


def run_cli(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    site = tmp_path / "site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(BLOCKER)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(site), str(ROOT)]), OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "cli.main", *args], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=600)


def test_the_blocker_blocks(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(BLOCKER)
    env = dict(os.environ, PYTHONPATH=str(site))
    probe = "import importlib.util; assert importlib.util.find_spec('tensorflow') is None; import tensorflow"
    done = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True)
    assert done.returncode != 0 and "ModuleNotFoundError" in done.stderr and "AssertionError" not in done.stderr


@pytest.mark.slow
def test_lightning_train_and_compare_run_without_tensorflow(tiny_synth_dir, tmp_path):
    common = ["--data-dir", str(tiny_synth_dir), "--epochs", "1", "--runs-dir", str(tmp_path / "runs")]
    train = run_cli(["train", "-f", "lightning", "--threads", "1", *common], tmp_path)
    assert train.returncode == 0, train.stderr[-2000:]
    assert "test accuracy" in train.stdout
    compare = run_cli(["compare", "--frameworks", "lightning", "--variants", "baseline,sgd-momentum", "--seeds", "0",
                       "--threads", "1", *common], tmp_path)
    assert compare.returncode == 0, compare.stderr[-2000:]
    assert (tmp_path / "runs" / "comparison.md").is_file()


def test_asking_for_keras_without_tensorflow_is_one_clear_line(tiny_synth_dir, tmp_path):
    done = run_cli(["train", "-f", "keras", "--data-dir", str(tiny_synth_dir), "--epochs", "1",
                    "--runs-dir", str(tmp_path / "runs")], tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "error: keras runs need tensorflow, which is not installed here; install it or use --framework/--frameworks lightning"]
    done = run_cli(["compare", "--frameworks", "lightning,keras", "--data-dir", str(tiny_synth_dir),
                    "--runs-dir", str(tmp_path / "runs")], tmp_path)
    assert done.returncode == 2 and "keras runs need tensorflow" in done.stderr and "Traceback" not in done.stderr
