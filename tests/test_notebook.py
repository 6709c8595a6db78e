"""examples/study.ipynb runs top to bottom (nbclient) on a small generated file, so it cannot rot.

Settings reach the notebook through its environment variables (FTMED_NB_*); CI runs 5 variants x 2
frameworks x 2 seeds x 1 epoch on a 1 % synthetic file.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

NOTEBOOK = Path(__file__).resolve().parents[1] / "examples" / "study.ipynb"
SMALL = {"FTMED_NB_DATA_DIR": "synthetic", "FTMED_NB_EPOCHS": "1", "FTMED_NB_SEEDS": "0,1",
         "FTMED_NB_SCALE": "0.01", "FTMED_NB_JOBS": "2"}


def outputs_text(notebook) -> str:
    parts = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            parts.append(output.get("text", ""))
            parts.extend(str(v) for k, v in output.get("data", {}).items() if k.startswith("text/"))
    return "\n".join(parts)


@pytest.mark.slow
def test_study_notebook_runs_top_to_bottom_on_generated_data(tmp_path, monkeypatch):
    for key, value in SMALL.items():
        monkeypatch.setenv(key, os.environ.get(key, value))
    monkeypatch.setenv("FTMED_NB_RUNS_DIR", str(tmp_path / "runs"))
    # the kernel (and the runs it starts) import this checkout's packages
    root = str(NOTEBOOK.parents[1])
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p))
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(notebook, timeout=1200, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError, naming the cell, on any error

    text = outputs_text(notebook)
    assert "SYNTHETIC" in text
    assert "pairs: sigmoid-output's accuracy equals the baseline's exactly" in text
    assert "distinct rankings across" in text
    images = sum("image/png" in o.get("data", {}) for c in notebook.cells for o in c.get("outputs", []))
    assert images >= 3  # the sample images, the accuracy bars, the curves
    assert (tmp_path / "runs" / "comparison.md").is_file()
    assert "\x1b[" not in text  # no raw terminal escapes in a notebook
