"""`ftmed parity`: run the parity suite (the `ftmed_parity` package), print its table, write parity.md/json.

This module only renders: the checks, their tolerances and verdicts come from ftmed_parity. The terminal
table is plain fixed-width text (fits 80 columns, reads the same in a CI log); parity.md has every note
and the tolerance table generated from the declared checks.

Exit code 0 when no asserted check fails or errors, 1 otherwise (informational rows never fail); 2 for a
bad --layers value.
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path
from typing import Annotated, Callable, Optional

import typer

from ftmed_core.errors import ConfigError

WIDTH = 79


def parse_layers(text: str | None, statistical: bool) -> tuple[int, ...]:
    """'1,2,5' (or '1-3') -> (1, 2, 5); None -> 1-7, plus 8 with --statistical."""
    from ftmed_parity import DEFAULT_LAYERS, LAYERS

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


def _number(value: float | None) -> str:
    if value is None:
        return "-"
    if value != value:  # NaN
        return "n/a"
    return "0" if value == 0 else f"{value:.2e}"


def _fit(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 2] + ".."


def text_table(results) -> str:
    """Fixed-width rows: layer, check id, subject, measured value, tolerance, verdict (79 columns)."""
    id_width = max([len(r.check_id) for r in results] + [5])
    subject_width = WIDTH - (1 + 2 + id_width + 2 + 2 + 9 + 1 + 9 + 2 + len("verdict"))
    header = f"L  {'check':<{id_width}}  {'subject':<{subject_width}}  {'value':>9} {'tolerance':>9}  verdict"
    lines = [header, "-" * min(WIDTH, len(header))]
    for r in results:
        lines.append(f"{r.layer}  {r.check_id:<{id_width}}  {_fit(r.subject, subject_width):<{subject_width}}  "
                     f"{_number(r.value):>9} {_number(r.tolerance):>9}  {r.verdict}")
    return "\n".join(lines)


def _cell(text) -> str:
    return str(text).replace("|", "\\|")


def summary(results) -> str:
    from ftmed_parity import ERROR, FAIL, INFO, PASS

    counts = {v: sum(r.verdict == v for r in results) for v in (PASS, FAIL, ERROR, INFO)}
    return (f"{len(results)} checks: {counts[PASS]} pass, {counts[FAIL]} FAIL, {counts[ERROR]} ERROR, "
            f"{counts[INFO]} info")


def markdown(results, seconds: dict[int, float], environment: dict, layers) -> str:
    from ftmed_parity import LAYERS, tolerance_table

    lines = ["# ftmed parity", "", summary(results) + ". " + ", ".join(f"{k}={v}" for k, v in environment.items()),
             "", "| layer | check | id | subject | value | tolerance | verdict | note |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r.layer} {LAYERS[r.layer]} | {_cell(r.name)} | {r.check_id} | {_cell(r.subject)} | "
                     f"{_number(r.value)} | {_number(r.tolerance)} | {r.verdict} | {_cell(r.note)} |")
    lines += ["", "Seconds per layer: " + ", ".join(f"{k}: {v:.1f}" for k, v in seconds.items()), "",
              "## Tolerances", "", "Generated from the declared checks (package `ftmed_parity`): each row's value "
              "is compared with its tolerance.", "",
              "| id | layer | check | tolerance | reason |", "|---|---|---|---|---|"]
    for check_id, layer, name, tolerance, reason in tolerance_table(layers):
        lines.append(f"| {check_id} | {layer} | {_cell(name)} | {_cell(tolerance)} | {_cell(reason)} |")
    lines.append("")
    return "\n".join(lines)


def environment_info(total_seconds: float) -> dict:
    import lightning
    import torch

    from keras_ref._backend import keras, tf

    return {"torch": torch.__version__, "lightning": lightning.__version__, "tensorflow": tf.__version__,
            "keras": keras.__version__, "python": platform.python_version(), "device": "cpu", "threads": 1,
            "seconds": round(total_seconds, 1)}


def run_and_report(layers: tuple[int, ...], out: Path, checks_for: Callable | None = None) -> int:
    """Run `layers`, print the table, write parity.md and parity.json under `out`; returns the exit code.

    `checks_for(layer) -> [Check]` replaces the suite's checks (tests plant a failing check with it).
    """
    from ftmed_core.records import atomic_write_text
    from ftmed_parity import LAYERS, layer_checks, run_layers

    def progress(layer: int, rows, seconds: float) -> None:
        bad = sum(r.failed for r in rows)
        typer.echo(f"layer {layer} {LAYERS[layer]}: {len(rows)} checks, {bad} failed ({seconds:.1f} s)", err=True)

    started = time.perf_counter()
    results, seconds = run_layers(layers, on_layer=progress, checks_for=checks_for or layer_checks)
    environment = environment_info(time.perf_counter() - started)
    typer.echo(f"ftmed parity, layers {','.join(map(str, layers))}, {environment['seconds']:.0f} s "
               f"({results[0].frameworks if results else ''})")
    typer.echo(text_table(results))
    for r in results:
        if r.failed or r.verdict == "ERROR":
            typer.echo(f"{r.verdict} {r.check_id} [{r.subject}]: {r.note}")
    out.mkdir(parents=True, exist_ok=True)
    failed = sum(r.failed for r in results)
    payload = {"layers": list(layers), "environment": environment,
               "seconds_per_layer": {str(k): round(v, 2) for k, v in seconds.items()},
               "passed": not failed, "checks": [r.to_dict() for r in results]}
    atomic_write_text(out / "parity.json", json.dumps(payload, indent=2))
    atomic_write_text(out / "parity.md", markdown(results, seconds, environment, layers))
    typer.echo(f"{summary(results)}; wrote {out / 'parity.md'} and {out / 'parity.json'}")
    return 1 if failed else 0


def user_variant_checks(user_variants) -> Callable:
    """`checks_for` with a variants file's variants added to the layers registry variants go through:
    1 (architecture, as every registry variant) and 7 (one epoch of training from the same weights and
    batch order, as the baseline), each row named after its variant."""
    from ftmed_parity import layer_checks
    from ftmed_parity.closed_loop import closed_loop_checks
    from ftmed_parity.structure import architecture_checks

    def checks_for(layer: int) -> list:
        checks = layer_checks(layer)
        if layer == 1:
            checks += architecture_checks(user_variants)
        elif layer == 7:
            checks += [c for v in user_variants for c in closed_loop_checks(v.config, subject=v.name)]
        return checks

    return checks_for


def parity(
    layers: Annotated[Optional[str], typer.Option("--layers", help="Layers to run, e.g. 1,2,5 or 1-7 (default: 1-7).")] = None,
    statistical: Annotated[bool, typer.Option("--statistical", help="Also run layer 8: outcomes over seeds (17 short training runs).")] = False,
    out: Annotated[Path, typer.Option("--out", help="Folder for parity.md and parity.json.")] = Path("runs/parity"),
    variants_file: Annotated[Optional[Path], typer.Option("--variants-file", help="Also check your own variants (layers 1 and 7).")] = None,
) -> None:
    """Prove layer by layer that the Lightning port computes what the Keras reference computes."""
    chosen = parse_layers(layers, statistical)
    checks_for = None
    if variants_file is not None:
        from ftmed_core.user_variants import load_variants_file

        checks_for = user_variant_checks(load_variants_file(variants_file))
    code = run_and_report(chosen, out, checks_for)
    if code:
        raise typer.Exit(code=code)
