"""Every measured table in README.md and docs/ is an output of benchmarks/tables.py from the committed
JSON: a figure edited by hand, or JSON updated without re-rendering, fails here."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_generated_tables_match_the_committed_json():
    proc = subprocess.run([sys.executable, "benchmarks/tables.py", "--check"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_gpu_table_names_the_card_and_shows_every_path():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import tables
    finally:
        sys.path.pop(0)
    text = tables.gpu_speed_table()
    assert "NVIDIA" in text
    for path in tables.PATHS:
        assert path in text
