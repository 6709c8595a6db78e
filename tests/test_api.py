"""The public Python API: README's example block run exactly as written, and each function's contract."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import ftmed

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_block(marker: str, language: str) -> str:
    text = README.read_text()
    match = re.search(re.escape(marker) + r"\s*```" + language + r"\n(.*?)```", text, re.S)
    assert match, f"README has no {language} block after {marker}"
    return match.group(1)


@pytest.mark.slow
def test_readme_api_example_runs_as_written(tmp_path, monkeypatch):
    """`import ftmed` ... as README's "Python API" section shows it, in a fresh folder."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "my_variants.toml").write_text(readme_block("<!-- variants-example -->", "toml"))
    namespace: dict = {}
    exec(compile(readme_block("<!-- api-example -->", "python"), "README.md", "exec"), namespace)

    record, comparison = namespace["record"], namespace["comparison"]
    assert record.finished and record.framework == "keras" and len(record.history["val_acc"]) == 2
    assert record.synthetic and (tmp_path / "runs" / record.run_key / "record.json").is_file()

    table = comparison.table
    assert list(table.index) == ["baseline", "lr-1e-4"]
    assert table.loc["baseline", "lightning_n"] == 2 and 0 < table.loc["baseline", "lightning_acc_mean"] <= 100
    assert "SYNTHETIC" in table.attrs["title"]
    from matplotlib.figure import Figure

    figures = comparison.figures()
    assert {"accuracy_bars", "curves_baseline", "curves_lr-1e-4", "confusion_lightning"} <= set(figures)
    assert all(isinstance(f, Figure) for f in figures.values())
    assert (tmp_path / "runs" / "comparison.md").is_file()

    loaded = ftmed.load_runs("runs")  # the keras train run + 4 compare runs
    runs = loaded.runs
    assert len(runs) == 5 and set(runs["framework"]) == {"keras", "lightning"}
    assert set(runs.columns) >= {"variant", "framework", "seed", "status", "test_accuracy", "run_key"}
    assert "lr-1e-4" in loaded.markdown and "SYNTHETIC" in loaded._repr_markdown_()


def test_every_public_function_has_a_docstring_with_an_example():
    for name in ("train", "compare", "load_runs", "variants", "load_variants", "load_data", "synthesize", "export"):
        doc = getattr(ftmed, name).__doc__ or ""
        assert "Example:" in doc and f"ftmed.{name}(" in doc, name
    assert "Example:" in (ftmed.Comparison.__doc__ or "")


def test_variants_and_train_fields(synth_dir, tmp_path):
    assert [v.name for v in ftmed.variants("study")][:2] == ["baseline", "sigmoid-output"]
    with pytest.raises(ftmed.ConfigError, match="unknown variant 'nope'"):
        ftmed.variants("nope")
    with pytest.raises(ftmed.ConfigError, match="unknown field 'lr'"):
        ftmed.train("baseline", data_dir=synth_dir, lr=0.1)
    with pytest.raises(ftmed.ConfigError, match="unknown framework 'jax'"):
        ftmed.train("baseline", framework="jax")
    seen = []
    record = ftmed.train("baseline", framework="lightning", epochs=1, data_dir=synth_dir, runs_dir=tmp_path,
                         optimizer="sgd", momentum=0.9, progress=False, on_epoch=lambda *a: seen.append(a[:2]))
    assert record.finished and seen == [(1, 1)]
    assert record.config["name"] == "baseline+sgd(lr=0.01, momentum=0.9)"
    assert record.config["optimizer"]["name"] == "sgd" and record.config["optimizer"]["momentum"] == 0.9
    # the same call again reuses the finished run
    again = ftmed.train("baseline", framework="lightning", epochs=1, data_dir=synth_dir, runs_dir=tmp_path,
                        optimizer="sgd", momentum=0.9, progress=False)
    assert again.run_key == record.run_key and again.started_at == record.started_at


def test_load_runs_on_an_empty_folder_says_so(tmp_path):
    with pytest.raises(ftmed.RunError, match="holds no usable run records"):
        ftmed.load_runs(tmp_path)


def test_compare_rejects_bad_input_before_training(tmp_path):
    with pytest.raises(ftmed.ConfigError, match="unknown framework"):
        ftmed.compare(frameworks=["jax"], runs_dir=tmp_path)
    with pytest.raises(ftmed.ConfigError, match="seeds must be comma-separated integers"):
        ftmed.compare(seeds="a,b", runs_dir=tmp_path)
    assert not any(tmp_path.iterdir())


def test_no_package_below_the_cli_imports_it():
    """The layering is a star: ftmed_core <- adapters <- (ftmed API, ftmed_parity) <- cli. An import of `cli`
    anywhere below it (even inside a function) would make a cycle."""
    import ast

    root = Path(__file__).resolve().parents[1]
    offenders = []
    for package in ("ftmed", "ftmed_core", "ftmed_parity", "lightning_ft", "keras_ref"):
        for path in sorted((root / package).glob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                         else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
                offenders += [f"{path.relative_to(root)}: {n}" for n in names if n == "cli" or n.startswith("cli.")]
    assert offenders == []
