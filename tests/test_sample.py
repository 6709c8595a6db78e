"""The committed sample (docs/sample/) is an output of its committed records: re-rendering them must give
the same bytes, so a change to the table or the plots cannot leave the sample stale.

PNGs are compared byte for byte too: `plots._save` writes no "Software" stamp and matplotlib writes no date,
so the bytes depend on the drawing only (an upgrade of matplotlib or its fonts that moves pixels fails this
test: re-render the sample with the command below and commit it).
"""

from __future__ import annotations

from pathlib import Path


SAMPLE = Path(__file__).resolve().parents[1] / "docs" / "sample"
COMMAND = "ftmed report docs/sample/runs --out docs/sample --no-predictions"


def _outputs(folder: Path) -> dict:
    names = ["comparison.md", "comparison.csv", "comparison.json"]
    names += sorted(f"plots/{p.name}" for p in (folder / "plots").glob("*.png"))
    return {name: (folder / name).read_bytes() for name in names if (folder / name).is_file()}


def test_committed_sample_is_what_its_records_render(tmp_path):
    from ftmed.api import report

    committed = _outputs(SAMPLE)
    assert "comparison.md" in committed and any(n.endswith(".png") for n in committed)
    outputs = report(SAMPLE / "runs", out_dir=tmp_path, predictions=False)
    assert outputs["damaged"] == [] and outputs["predictions"] == []
    fresh = _outputs(tmp_path)
    assert sorted(fresh) == sorted(committed), f"plots differ: re-render with `{COMMAND}`"
    stale = [name for name in committed if fresh[name] != committed[name]]
    assert not stale, f"{stale} differ from what the records render: run `{COMMAND}` and commit"


def test_sample_records_are_small_and_hold_no_checkpoints():
    files = [p for p in (SAMPLE / "runs").rglob("*") if p.is_file()]
    assert {p.name for p in files} <= {"record.json", "test_probabilities.npy", "test_labels.npy"}
    assert sum(p.stat().st_size for p in files) < 12 * 2**20
