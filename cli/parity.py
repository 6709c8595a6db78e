"""`ftmed parity`: run the parity suite (the `ftmed_parity` package), print its table, write parity.md/json.

This module only renders: the checks, their tolerances and verdicts come from ftmed_parity. The terminal
table is plain fixed-width text (fits 80 columns, reads the same in a CI log); parity.md has every note
and the tolerance table generated from the declared checks.

Exit code 0 when no asserted check fails or errors, 1 otherwise (informational rows never fail); 2 for a
bad --layers or --keras-backends value (a backend that is not installed included).
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


def parse_keras_backends(text: str | None) -> tuple[str, ...]:
    """'tensorflow,jax' -> ('tensorflow', 'jax'); None -> ('tensorflow',); 'all' -> every installed backend.

    ConfigError (one line) for an unknown name or a backend whose library is not installed here.
    """
    from ftmed_core.backend_probe import backend_available, installed_backends
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


def markdown(results, seconds: dict[int, float], environment: dict, layers,
             keras_backends: tuple[str, ...] = ("tensorflow",)) -> str:
    from ftmed_parity import LAYERS, tolerance_table

    lines = ["# ftmed parity", "", summary(results) + ". " + ", ".join(f"{k}={v}" for k, v in environment.items()),
             "", "| layer | check | id | frameworks | subject | value | tolerance | verdict | note |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r.layer} {LAYERS[r.layer]} | {_cell(r.name)} | {r.check_id} | {r.frameworks} | "
                     f"{_cell(r.subject)} | {_number(r.value)} | {_number(r.tolerance)} | {r.verdict} | "
                     f"{_cell(r.note)} |")
    lines += ["", "Seconds per layer: " + ", ".join(f"{k}: {v:.1f}" for k, v in seconds.items()), "",
              "## Tolerances", "", "Generated from the declared checks (package `ftmed_parity`): each row's value "
              "is compared with its tolerance.", "",
              "| id | layer | check | tolerance | reason |", "|---|---|---|---|---|"]
    for check_id, layer, name, tolerance, reason in tolerance_table(layers, keras_backends):
        lines.append(f"| {check_id} | {layer} | {_cell(name)} | {_cell(tolerance)} | {_cell(reason)} |")
    lines.append("")
    return "\n".join(lines)


def environment_info(total_seconds: float, keras_backends: tuple[str, ...] = ("tensorflow",)) -> dict:
    """Versions (read from the installed packages: no framework is imported for it), device, threads, time."""
    from importlib.metadata import PackageNotFoundError, version

    def installed(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "absent"

    libraries = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}
    info = {"torch": installed("torch"), "lightning": installed("lightning"), "keras": installed("keras")}
    info.update({libraries[b]: installed(libraries[b]) for b in keras_backends})
    info.update({"keras_backends": ",".join(keras_backends), "python": platform.python_version(), "device": "cpu",
                 "threads": 1, "seconds": round(total_seconds, 1)})
    return info


def run_and_report(layers: tuple[int, ...], out: Path, checks_for: Callable | None = None,
                   keras_backends: tuple[str, ...] = ("tensorflow",)) -> int:
    """Run `layers`, print the table, write parity.md and parity.json under `out`; returns the exit code.

    `checks_for(layer) -> [Check]` replaces the suite's checks (tests plant a failing check with it);
    `keras_backends`: the Keras backends whose rows run (TensorFlow in this process, others via the probe).
    """
    from ftmed_core.records import atomic_write_text
    from ftmed_parity import LAYERS, layer_checks, run_layers
    from ftmed_parity.sides import port_sides

    def progress(layer: int, rows, seconds: float) -> None:
        bad = sum(r.failed for r in rows)
        typer.echo(f"layer {layer} {LAYERS[layer]}: {len(rows)} checks, {bad} failed ({seconds:.1f} s)", err=True)

    started = time.perf_counter()
    if checks_for is None:
        def checks_for(layer: int) -> list:
            return layer_checks(layer, keras_backends)
    # Without TensorFlow only the port runs here (each other backend's Keras runs in a child process).
    sides = None if "tensorflow" in keras_backends else port_sides()
    results, seconds = run_layers(layers, sides=sides, on_layer=progress, checks_for=checks_for)
    environment = environment_info(time.perf_counter() - started, keras_backends)
    # "keras[jax] vs lightning", ... -> "keras, keras[jax] vs lightning" (rows vs TF's formula say so in their note)
    pairs = [r.frameworks.split(" vs ") for r in results if " vs " in r.frameworks]
    references = list(dict.fromkeys(a for a, b in pairs if b != "keras"))
    ports = list(dict.fromkeys(b for a, b in pairs if b != "keras"))
    typer.echo(f"ftmed parity, layers {','.join(map(str, layers))}, {environment['seconds']:.0f} s")
    if references:
        typer.echo(_fit(f"frameworks: {', '.join(references)} vs {', '.join(ports)}", WIDTH))
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
    atomic_write_text(out / "parity.md", markdown(results, seconds, environment, layers, keras_backends))
    typer.echo(f"{summary(results)}; wrote {out / 'parity.md'} and {out / 'parity.json'}")
    return 1 if failed else 0


def user_variant_checks(user_variants, keras_backends: tuple[str, ...] = ("tensorflow",)) -> Callable:
    """`checks_for` with a variants file's variants added to the layers registry variants go through:
    1 (architecture, as every registry variant) and 7 (one epoch of training from the same weights and
    batch order, as the baseline), each row named after its variant; TensorFlow's reference only (it runs in
    this process)."""
    from ftmed_parity import layer_checks
    from ftmed_parity.closed_loop import closed_loop_checks
    from ftmed_parity.structure import architecture_checks

    def checks_for(layer: int) -> list:
        checks = layer_checks(layer, keras_backends)
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
    keras_backends: Annotated[Optional[str], typer.Option("--keras-backends", help="Keras backends to check against Lightning: tensorflow,jax,torch or all (installed ones); default tensorflow. Non-TF backends run layers 1-7.")] = None,
) -> None:
    """Prove layer by layer that the Lightning port computes what the Keras reference computes."""
    chosen = parse_layers(layers, statistical)
    backends = parse_keras_backends(keras_backends)
    if "tensorflow" not in backends and (8 in chosen or variants_file is not None):
        what = "layer 8 (--statistical)" if 8 in chosen else "--variants-file"
        raise ConfigError(f"{what} runs on the TensorFlow backend only; add tensorflow to --keras-backends")
    checks_for = None
    if variants_file is not None:
        from ftmed_core.user_variants import load_variants_file

        checks_for = user_variant_checks(load_variants_file(variants_file), backends)
    code = run_and_report(chosen, out, checks_for, backends)
    if code:
        raise typer.Exit(code=code)
