"""`ftmed parity`: parse the options, run the suite (`ftmed_parity.api.run`), print its table, write parity.md/json.

This module only parses and renders: the checks, their tolerances and verdicts, parity.md and parity.json
come from ftmed_parity. The terminal table is plain fixed-width text (fits 80 columns, reads the same in a
CI log).

Exit code 0 when no asserted check fails or errors, 1 otherwise (informational rows never fail); 2 for a
bad --layers or --keras-backends value (a backend that is not installed included).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ftmed_core.errors import ConfigError

WIDTH = 79


def parse_layers(text: str | None, statistical: bool) -> tuple[int, ...]:
    """'1,2,5' (or '1-3') -> (1, 2, 5); None -> 1-7 and 9, plus 8 with --statistical.

    Layer 9 needs the `export` extra: without it the default leaves the layer out and says so on stderr,
    and asking for it by number is a ConfigError naming what to install.
    """
    from ftmed_parity import DEFAULT_LAYERS, LAYERS
    from ftmed_parity.export import missing_packages

    missing = missing_packages()
    if text is None:
        chosen = DEFAULT_LAYERS + ((8,) if statistical else ())
        if missing and 9 in chosen:
            typer.echo(f"layer 9 (export) left out: {', '.join(missing)} not installed (pip install 'ftmed[export]')",
                       err=True)
            chosen = tuple(layer for layer in chosen if layer != 9)
        return tuple(sorted(chosen))
    chosen: list[int] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        try:
            if "-" in part:
                lo, hi = (int(v) for v in part.split("-", 1))
                values = list(range(lo, hi + 1))
            else:
                values = [int(part)]
        except ValueError:
            raise ConfigError(f"--layers takes comma-separated layer numbers like 1,2,5 or 1-7, got {text!r}") from None
        for value in values:
            if value not in LAYERS:
                raise ConfigError(f"unknown parity layer {value}; choose from {min(LAYERS)}-{max(LAYERS)}")
            if value not in chosen:
                chosen.append(value)
    if statistical and 8 not in chosen:
        chosen.append(8)
    if not chosen:
        raise ConfigError("--layers selected no layer; e.g. --layers 1,2,3")
    if 9 in chosen and missing:
        raise ConfigError(f"layer 9 (export) needs {', '.join(missing)}: pip install 'ftmed[export]'")
    return tuple(sorted(chosen))


def parse_keras_backends(text: str | None) -> tuple[str, ...]:
    """'tensorflow,jax' -> ('tensorflow', 'jax'); None -> ('tensorflow',); 'all' -> every installed backend.

    ConfigError (one line) for an unknown name or a backend whose library is not installed here.
    """
    from ftmed_parity.probe import backend_available, installed_backends
    from ftmed_core.frameworks import KERAS_BACKENDS

    if text is None:
        return ("tensorflow",)
    if text.strip().lower() == "all":
        chosen = installed_backends()
        if not chosen:
            raise ConfigError("--keras-backends all: no Keras backend is installed here (keras plus one of "
                              f"{', '.join(KERAS_BACKENDS)})")
        return tuple(chosen)
    chosen = []
    for part in (p.strip().lower() for p in text.split(",")):
        if not part:
            continue
        if part not in KERAS_BACKENDS:
            raise ConfigError(f"unknown Keras backend {part!r} in --keras-backends; choose from "
                              f"{', '.join(KERAS_BACKENDS)} or all")
        if part not in chosen:
            chosen.append(part)
    if not chosen:
        raise ConfigError(f"--keras-backends selected no backend in {text!r}; e.g. --keras-backends tensorflow,jax")
    missing = [b for b in chosen if not backend_available(b)]
    if missing:
        raise ConfigError(f"Keras backend {', '.join(missing)} is not installed here (installed: "
                          f"{', '.join(installed_backends()) or 'none'}); install it or leave it out of --keras-backends")
    return tuple(chosen)


def _fit(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 2] + ".."


def text_table(results) -> str:
    """Fixed-width rows: layer, check id, subject, measured value, tolerance, verdict (79 columns)."""
    id_width = max([len(r.check_id) for r in results] + [5])
    subject_width = WIDTH - (1 + 2 + id_width + 2 + 2 + 9 + 1 + 9 + 2 + len("verdict"))
    from ftmed_parity.api import number

    header = f"L  {'check':<{id_width}}  {'subject':<{subject_width}}  {'value':>9} {'tolerance':>9}  verdict"
    lines = [header, "-" * min(WIDTH, len(header))]
    for r in results:
        lines.append(f"{r.layer}  {r.check_id:<{id_width}}  {_fit(r.subject, subject_width):<{subject_width}}  "
                     f"{number(r.value):>9} {number(r.tolerance):>9}  {r.verdict}")
    return "\n".join(lines)


def render(run, out: Path) -> int:
    """Print the run's table and its failures, write parity.md and parity.json under `out`; the exit code."""
    # "keras[jax] vs lightning", ... -> "keras, keras[jax] vs lightning" (rows vs TF's formula say so in their note)
    pairs = [r.frameworks.split(" vs ") for r in run.results if " vs " in r.frameworks]
    references = list(dict.fromkeys(a for a, b in pairs if b != "keras"))
    ports = list(dict.fromkeys(b for a, b in pairs if b != "keras"))
    typer.echo(f"ftmed parity, layers {','.join(map(str, run.layers))}, {run.environment['seconds']:.0f} s")
    if references:
        typer.echo(_fit(f"frameworks: {', '.join(references)} vs {', '.join(ports)}", WIDTH))
    typer.echo(text_table(run.results))
    for r in run.results:
        if r.failed or r.verdict == "ERROR":
            typer.echo(f"{r.verdict} {r.check_id} [{r.subject}]: {r.note}")
    json_path, md_path = run.write(out)
    typer.echo(f"{run.summary()}; wrote {md_path} and {json_path}")
    return 1 if run.failed else 0


def progress(layer: int, rows, seconds: float) -> None:
    """One line on stderr as each layer ends."""
    from ftmed_parity import LAYERS

    bad = sum(r.failed for r in rows)
    typer.echo(f"layer {layer} {LAYERS[layer]}: {len(rows)} checks, {bad} failed ({seconds:.1f} s)", err=True)


def parity(
    layers: Annotated[Optional[str], typer.Option("--layers", help="Layers to run, e.g. 1,2,5 or 1-7 (default: 1-7 and 9, the ONNX export).")] = None,
    statistical: Annotated[bool, typer.Option("--statistical", help="Also run layer 8: outcomes over seeds (17 short training runs).")] = False,
    out: Annotated[Path, typer.Option("--out", help="Folder for parity.md and parity.json.")] = Path("runs/parity"),
    variants_file: Annotated[Optional[Path], typer.Option("--variants-file", help="Also check your own variants (layers 1 and 7).")] = None,
    keras_backends: Annotated[Optional[str], typer.Option("--keras-backends", help="Keras backends to check against Lightning: tensorflow,jax,torch or all (installed ones); default tensorflow. Non-TF backends run layers 1-7.")] = None,
) -> None:
    """Prove layer by layer that the Lightning port computes what the Keras reference computes."""
    from ftmed_parity.api import require_tensorflow_for, run

    chosen = parse_layers(layers, statistical)
    backends = parse_keras_backends(keras_backends)
    require_tensorflow_for(chosen, backends, variants_file is not None)
    user_variants = None
    if variants_file is not None:
        from ftmed_core.user_variants import load_variants_file

        user_variants = load_variants_file(variants_file)
    code = render(run(chosen, backends, variants=user_variants, on_layer=progress), out)
    if code:
        raise typer.Exit(code=code)
