"""Run the parity suite and hand back its results: `run(...)` -> `ParityRun` (results, seconds, environment),
which writes parity.json and parity.md. `ftmed parity` and `ftmed.parity` both call `run`; the CLI only
parses options and prints."""

from __future__ import annotations

import json
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

from ftmed_core.errors import ConfigError
from ftmed_parity.checks import ERROR, FAIL, INFO, PASS, Result
from ftmed_parity.suite import DEFAULT_LAYERS, LAYERS, layer_checks, run_layers, tolerance_table


@dataclass
class ParityRun:
    """What one run of the suite found: every result in layer order, the seconds per layer, the environment
    (library versions read from the installed packages, device, threads, total seconds)."""

    layers: tuple[int, ...]
    keras_backends: tuple[str, ...]
    results: list[Result]
    seconds: dict[int, float]
    environment: dict = field(default_factory=dict)

    @property
    def failed(self) -> int:
        """How many asserted checks failed or errored (informational rows never fail)."""
        return sum(r.failed for r in self.results)

    @property
    def passed(self) -> bool:
        return not self.failed

    def summary(self) -> str:
        """'90 checks: 72 pass, 0 FAIL, 0 ERROR, 18 info'."""
        counts = {v: sum(r.verdict == v for r in self.results) for v in (PASS, FAIL, ERROR, INFO)}
        return (f"{len(self.results)} checks: {counts[PASS]} pass, {counts[FAIL]} FAIL, {counts[ERROR]} ERROR, "
                f"{counts[INFO]} info")

    def to_dict(self) -> dict:
        """The parity.json payload."""
        return {"layers": list(self.layers), "environment": self.environment,
                "seconds_per_layer": {str(k): round(v, 2) for k, v in self.seconds.items()},
                "passed": self.passed, "checks": [r.to_dict() for r in self.results]}

    def markdown(self) -> str:
        """parity.md: every row with its note, the seconds per layer, the tolerance table of the checks run."""
        lines = ["# ftmed parity", "",
                 self.summary() + ". " + ", ".join(f"{k}={v}" for k, v in self.environment.items()),
                 "", "| layer | check | id | frameworks | subject | value | tolerance | verdict | note |",
                 "|---|---|---|---|---|---|---|---|---|"]
        for r in self.results:
            lines.append(f"| {r.layer} {LAYERS[r.layer]} | {_cell(r.name)} | {r.check_id} | {r.frameworks} | "
                         f"{_cell(r.subject)} | {number(r.value)} | {number(r.tolerance)} | {r.verdict} | "
                         f"{_cell(r.note)} |")
        lines += ["", "Seconds per layer: " + ", ".join(f"{k}: {v:.1f}" for k, v in self.seconds.items()), "",
                  "## Tolerances", "", "Generated from the declared checks (package `ftmed_parity`): each row's "
                  "value is compared with its tolerance.", "",
                  "| id | layer | check | tolerance | reason |", "|---|---|---|---|---|"]
        for check_id, layer, name, tolerance, reason in tolerance_table(self.layers, self.keras_backends):
            lines.append(f"| {check_id} | {layer} | {_cell(name)} | {_cell(tolerance)} | {_cell(reason)} |")
        lines.append("")
        return "\n".join(lines)

    def write(self, out: str | Path) -> tuple[Path, Path]:
        """Write parity.json and parity.md under `out` (created); returns their paths."""
        from ftmed_core.records import atomic_write_text

        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "parity.json", json.dumps(self.to_dict(), indent=2))
        atomic_write_text(out / "parity.md", self.markdown())
        return out / "parity.json", out / "parity.md"


def number(value: float | None) -> str:
    """A measured value or tolerance as printed: '-' for none, 'n/a' for NaN, else 3 significant digits."""
    if value is None:
        return "-"
    if value != value:  # NaN
        return "n/a"
    return "0" if value == 0 else f"{value:.2e}"


def _cell(text) -> str:
    return str(text).replace("|", "\\|")


def run(layers: Iterable[int] = DEFAULT_LAYERS, keras_backends: Sequence[str] = ("tensorflow",),
        variants: Sequence | None = None, checks_for: Callable[[int], list] | None = None,
        on_layer: Callable[[int, list[Result], float], None] | None = None) -> ParityRun:
    """Run the suite's `layers` against each Keras backend in `keras_backends`; returns a `ParityRun`.

    `variants` (e.g. from a variants file) are added to layers 1 and 7; `checks_for(layer) -> [Check]`
    replaces the suite's checks (a test plants a failing one with it); `on_layer(layer, rows, seconds)` is
    called as each layer ends. TensorFlow's Keras runs in this process, another backend's in a child
    process per layer. Raises ConfigError for an unknown layer, or for layer 8 or `variants` without
    TensorFlow among the backends (they run on TensorFlow only).

        result = run(layers=(1, 2))       # or ftmed.parity(layers=(1, 2))
        result.passed, result.summary()    # True, '23 checks: ...'
        result.write("runs/parity")        # parity.json and parity.md
    """
    layers = tuple(layers)
    keras_backends = tuple(keras_backends)
    unknown = [layer for layer in layers if layer not in LAYERS]
    if unknown:
        raise ConfigError(f"unknown parity layer {unknown[0]}; choose from {min(LAYERS)}-{max(LAYERS)}")
    require_tensorflow_for(layers, keras_backends, bool(variants))
    if checks_for is None:
        checks_for = user_variant_checks(variants, keras_backends) if variants else (
            lambda layer: layer_checks(layer, keras_backends))
    from ftmed_parity.sides import port_sides

    started = time.perf_counter()
    # Without TensorFlow only the port runs here (each other backend's Keras runs in a child process).
    sides = None if "tensorflow" in keras_backends else port_sides()
    results, seconds = run_layers(layers, sides=sides, on_layer=on_layer, checks_for=checks_for)
    return ParityRun(layers, keras_backends, results, seconds,
                     environment_info(time.perf_counter() - started, keras_backends))


def require_tensorflow_for(layers: Sequence[int], keras_backends: Sequence[str], with_variants: bool) -> None:
    """ConfigError unless TensorFlow is among the backends when layer 8 or user variants are asked for
    (they run on TensorFlow's Keras only)."""
    if "tensorflow" not in keras_backends and (8 in layers or with_variants):
        what = "layer 8 (--statistical)" if 8 in layers else "--variants-file"
        raise ConfigError(f"{what} runs on the TensorFlow backend only; add tensorflow to --keras-backends")


def user_variant_checks(user_variants, keras_backends: tuple[str, ...] = ("tensorflow",)) -> Callable:
    """`checks_for` with a variants file's variants added to the layers registry variants go through:
    1 (architecture, as every registry variant) and 7 (one epoch of training from the same weights and
    batch order, as the baseline), each row named after its variant; TensorFlow's reference only (it runs in
    this process)."""
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
