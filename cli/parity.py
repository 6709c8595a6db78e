"""`ftmed parity`: run the parity layers (cli/parity_checks.py), print the table, write parity.md/json.

Exit code 0 when every asserted check passes, 1 when any fails (informational rows never fail).
Expected on a 2-core CPU: layers 1-7 in about a minute; `--statistical` adds layer 8 (~2-3 minutes).
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from ftmed_core.errors import ConfigError


def parse_layers(text: str | None, statistical: bool) -> tuple[int, ...]:
    """'1,2,5' (or '1-3') -> (1, 2, 5); None -> 1-7, plus 8 with --statistical."""
    from cli.parity_checks import DEFAULT_LAYERS, LAYERS

    if text is None:
        return DEFAULT_LAYERS + ((8,) if statistical else ())
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
    return tuple(sorted(chosen))


def _number(value: float | None, digits: int = 2) -> str:
    if value is None:
        return "-"
    if value != value:  # NaN
        return "n/a"
    return "0" if value == 0 else f"{value:.{digits}e}"


def markdown(checks, seconds: dict[int, float], environment: dict) -> str:
    from cli.parity_checks import LAYERS

    failed = sum(c.passed is False for c in checks)
    lines = [
        "# ftmed parity",
        "",
        f"{len(checks)} checks: {sum(c.passed is True for c in checks)} pass, {failed} FAIL, "
        f"{sum(c.passed is None for c in checks)} info. " + ", ".join(f"{k}={v}" for k, v in environment.items()),
        "",
        "| layer | check | variant / optimizer | max abs diff | tolerance | verdict | note |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in checks:
        note = c.note.replace("|", "\\|")
        lines.append(f"| {c.layer} {LAYERS[c.layer]} | {c.name} | {c.subject} | {_number(c.max_abs_diff)} | "
                     f"{_number(c.tolerance)} | {c.verdict} | {note} |")
    lines += ["", "Seconds per layer: " + ", ".join(f"{k}: {v:.1f}" for k, v in seconds.items()), "",
              "## Tolerances", "", "Each one's origin (measurement and float32 analysis) is in the docstring of its "
              "layer function in cli/parity_checks.py.", ""]
    import cli.parity_checks as checks_module

    lines += [line for line in (checks_module.__doc__ or "").splitlines() if line.startswith("|")]
    lines.append("")
    return "\n".join(lines)


def user_variant_checks(user_variants, chosen, on_layer, seconds: dict) -> list:
    """A variants file's variants through the layers the registry's variants go through: 1 (architecture,
    as every registry variant) and 7 (one epoch of training from the same weights and batch order, as the
    baseline), each row named after its variant."""
    from dataclasses import replace as _replace

    from cli.parity_checks import layer_1_architecture, layer_7_closed_loop

    rows: list = []
    for layer, run in ((1, lambda: layer_1_architecture(user_variants)),
                       (7, lambda: [_replace(c, subject=f"{v.name}: {c.subject}") for v in user_variants
                                    for c in layer_7_closed_loop(v.config)])):
        if layer not in chosen:
            continue
        started = time.perf_counter()
        found = run()
        seconds[layer] = seconds.get(layer, 0.0) + time.perf_counter() - started
        on_layer(layer, found, time.perf_counter() - started)
        rows += found
    return rows


def parity(
    layers: Annotated[Optional[str], typer.Option("--layers", help="Layers to run, e.g. 1,2,5 or 1-7 (default: 1-7).")] = None,
    statistical: Annotated[bool, typer.Option("--statistical", help="Also run layer 8: outcomes over seeds (a few minutes).")] = False,
    out: Annotated[Path, typer.Option("--out", help="Folder for parity.md and parity.json.")] = Path("runs/parity"),
    variants_file: Annotated[Optional[Path], typer.Option("--variants-file", help="Also check your own variants (layers 1 and 7).")] = None,
) -> None:
    """Prove layer by layer that the Lightning port computes what the Keras reference computes."""
    chosen = parse_layers(layers, statistical)
    from ftmed_core.user_variants import load_variants_file

    user_variants = load_variants_file(variants_file) if variants_file is not None else []
    from rich.console import Console
    from rich.table import Table

    from cli.parity_checks import LAYERS, run_layers
    from ftmed_core.records import atomic_write_text

    console = Console()
    err = Console(stderr=True)

    def progress(layer: int, rows, seconds: float) -> None:
        bad = sum(r.passed is False for r in rows)
        err.print(f"layer {layer} {LAYERS[layer]}: {len(rows)} checks, {bad} failed ({seconds:.1f} s)", highlight=False)

    started = time.perf_counter()
    checks, seconds = run_layers(chosen, progress)
    if user_variants:
        checks += user_variant_checks(user_variants, chosen, progress, seconds)
    total = time.perf_counter() - started

    import lightning
    import torch

    from keras_ref._backend import keras, tf

    environment = {"torch": torch.__version__, "lightning": lightning.__version__, "tensorflow": tf.__version__,
                   "keras": keras.__version__, "python": platform.python_version(), "device": "cpu",
                   "threads": 1, "seconds": round(total, 1)}
    table = Table(title=f"ftmed parity (layers {','.join(map(str, chosen))}, {total:.0f} s)")
    table.add_column("layer")
    table.add_column("check", no_wrap=True)
    table.add_column("variant / optimizer", overflow="fold")
    table.add_column("max |Δ|", justify="right", no_wrap=True)
    table.add_column("tolerance", justify="right", no_wrap=True)
    table.add_column("verdict", no_wrap=True)
    styles = {"pass": "green", "FAIL": "bold red", "info": "cyan"}
    for c in checks:
        table.add_row(str(c.layer), c.name, c.subject, _number(c.max_abs_diff), _number(c.tolerance),
                      f"[{styles[c.verdict]}]{c.verdict}[/]")
    console.print(table)
    for c in checks:
        if c.passed is False:
            console.print(f"FAIL layer {c.layer} {c.name} [{c.subject}]: {c.note}", highlight=False, markup=False)

    out.mkdir(parents=True, exist_ok=True)
    payload = {"layers": list(chosen), "environment": environment,
               "seconds_per_layer": {str(k): round(v, 2) for k, v in seconds.items()},
               "passed": not any(c.passed is False for c in checks),
               "checks": [c.to_dict() for c in checks]}
    atomic_write_text(out / "parity.json", json.dumps(payload, indent=2))
    atomic_write_text(out / "parity.md", markdown(checks, seconds, environment))
    failed = sum(c.passed is False for c in checks)
    console.print(f"{len(checks)} checks, {failed} failed; wrote {out / 'parity.md'} and {out / 'parity.json'}",
                  highlight=False)
    if failed:
        raise typer.Exit(code=1)
