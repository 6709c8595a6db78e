"""The layering, stated once: per package, the third-party and project packages it may import.

Every import statement counts, at module level or inside a function (a lazy import is still a
dependency). The standard library is always allowed. A package not listed for a layer is a layering
error: e.g. the core never imports torch, keras or a presentation library, and nothing below `cli`
imports `cli`.
"""
from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# What each package may import besides the standard library and itself.
ALLOWED: dict[str, set[str]] = {
    # tomli: the TOML reader on Python < 3.11 (tomllib's backport).
    "ftmed_core": {"numpy", "scipy", "sklearn", "tomli"},
    "lightning_ft": {"ftmed_core", "numpy", "torch", "lightning", "torchmetrics"},
    # torch and jax: the Keras backends other than TensorFlow.
    "keras_ref": {"ftmed_core", "numpy", "keras", "tensorflow", "jax", "torch", "mlflow"},
    # medmnist: its Evaluator is the independent reference the multi-label metric rows are checked against;
    # onnxruntime: runs the exported graphs (layer 9).
    "ftmed_parity": {"ftmed_core", "lightning_ft", "keras_ref", "numpy", "torch", "lightning", "medmnist",
                     "onnxruntime"},
    # onnx, onnxruntime: the export and its check.
    "ftmed": {"ftmed_core", "lightning_ft", "keras_ref", "ftmed_parity", "numpy", "torch", "ray", "rich",
              "tqdm", "pandas", "matplotlib", "IPython", "mlflow", "onnx", "onnxruntime"},
    "cli": {"ftmed_core", "ftmed", "ftmed_parity", "typer", "rich"},
}

def imported_packages(source: str) -> set[str]:
    """Top-level names of every absolute import in `source` (module level or nested)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def layering_errors(root: Path) -> list[str]:
    """`path: imports name` for every import under `root` that its package's rule does not allow."""
    errors = []
    for package, allowed in ALLOWED.items():
        for path in sorted((root / package).rglob("*.py")):
            relative = path.relative_to(root).as_posix()
            may = allowed | {package, "__future__"}
            for name in sorted(imported_packages(path.read_text(encoding="utf-8"))):
                if name not in may and name not in sys.stdlib_module_names:
                    errors.append(f"{relative}: imports {name}")
    return errors


def test_every_package_imports_only_what_its_layer_allows():
    assert layering_errors(ROOT) == []


def test_the_checker_sees_module_level_nested_and_from_imports():
    source = ("import os\nimport numpy.linalg as la\nfrom torch import nn\n"
              "def f():\n    import tensorflow\n    from . import sibling\n")
    assert imported_packages(source) == {"os", "numpy", "torch", "tensorflow"}


@pytest.mark.parametrize("package, planted", [
    ("ftmed_core", "import torch"),
    ("ftmed_core", "from matplotlib import pyplot"),
    ("lightning_ft", "import keras"),
    ("keras_ref", "from lightning_ft import model"),
    ("ftmed_parity", "from cli import parity"),
    ("ftmed", "import typer"),
])
def test_a_planted_wrong_import_fails(tmp_path, package, planted):
    for name in ALLOWED:
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    target = tmp_path / package / "planted.py"
    target.write_text(f"def lazy():\n    {planted}\n", encoding="utf-8")
    assert layering_errors(tmp_path) == [f"{package}/planted.py: imports {planted.split()[1].split('.')[0]}"]


def _modules_after(code: str) -> list[str]:
    """Run `code` in a fresh interpreter; it prints a list, returned here."""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180,
                            cwd=ROOT)
    assert result.returncode == 0, result.stderr
    return ast.literal_eval(result.stdout.strip().splitlines()[-1])


FRAMEWORKS = ("torch", "tensorflow", "keras", "lightning")


def test_core_api_and_parity_import_no_framework_until_asked():
    code = ("import sys, ftmed_core.runner, ftmed_core.synth, ftmed_core.weights_io, ftmed_core.variants; "
            f"print(sorted(m for m in {FRAMEWORKS + ('medmnist.dataset',)!r} if m in sys.modules))")
    assert _modules_after(code) == []
    code = f"import sys, ftmed; print(sorted(m for m in {FRAMEWORKS + ('pandas',)!r} if m in sys.modules))"
    assert _modules_after(code) == []
    code = ("import sys, ftmed_parity, ftmed_parity.suite, ftmed_parity.sides; "
            f"print(sorted(m for m in {FRAMEWORKS!r} if m in sys.modules))")
    assert _modules_after(code) == []


def test_cli_help_imports_no_framework():
    code = ("import sys; from cli.main import app; from typer.testing import CliRunner; "
            "r = CliRunner().invoke(app, ['--help']); assert r.exit_code == 0, r.output; "
            "assert 'variants' in r.output and 'data' in r.output; "
            "r = CliRunner().invoke(app, ['parity', '--help']); assert r.exit_code == 0, r.output; "
            f"print(sorted(m for m in {FRAMEWORKS!r} if m in sys.modules))")
    assert _modules_after(code) == []
    out = subprocess.run([sys.executable, "-X", "importtime", "-m", "cli.main", "--help"],
                         capture_output=True, text=True, check=True, cwd=ROOT)
    imported = {line.split("|")[-1].strip().split(".")[0] for line in out.stderr.splitlines()}
    assert not imported & set(FRAMEWORKS)
