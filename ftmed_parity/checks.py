"""What a parity check is, and how one is judged. numpy/stdlib only: no framework is imported here.

A `Check` is declared once: an id, its layer, a name, a `Tolerance`, the one-line reason for that
tolerance, the subjects it runs on, and a function measuring one number per subject. `run_checks`
measures and judges every (check, subject) into a `Result`:

- verdict from the number against the tolerance: "pass" / "FAIL"; "info" where the tolerance is
  informational (measured, never asserted);
- an exception while measuring is an "ERROR" with a one-line note (type, message, file:line); it fails
  the suite when the check is asserted and is shown, without failing, when the check is informational.

Measuring functions get a `Context`: the implementations under test (`ctx.sides`, see sides.py; a test
plants a bug by passing modified sides), a scratch folder, and `ctx.memo(key, fn)` so the checks of one
layer can share one expensive computation (an exception is remembered and raised again for each of them).
"""

from __future__ import annotations

import math
import tempfile
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

PASS, FAIL, INFO, ERROR = "pass", "FAIL", "info", "ERROR"


@dataclass(frozen=True)
class Tolerance:
    """`limit` (None: informational), optionally relative to a scale the measurement reports.

    - `scale`: what the limit multiplies, e.g. "max|g|" ("" = absolute);
    - `ulps`: > 0 makes the bound max(limit, ulps float32 ulps of the scale) instead;
    - `compare`: "<=" (a distance), "<" (a p-value below alpha), ">" or ">=" (a gap that must stay large).
    """

    limit: float | None
    scale: str = ""
    ulps: int = 0
    compare: str = "<="

    @property
    def asserted(self) -> bool:
        return self.limit is not None

    def bound(self, scale: float | None) -> float | None:
        if self.limit is None:
            return None
        if self.ulps:
            return max(self.limit, self.ulps * float(np.spacing(np.float32(scale))))
        return self.limit * scale if self.scale else self.limit

    def holds(self, value: float, bound: float) -> bool:
        if not math.isfinite(value):
            return False
        return {"<=": value <= bound, "<": value < bound, ">": value > bound, ">=": value >= bound}[self.compare]

    def describe(self) -> str:
        if self.limit is None:
            return "informational"
        if self.ulps:
            return f"max({_short(self.limit)}, {self.ulps} ulp of {self.scale})"
        text = "0 (exact)" if self.limit == 0 else _short(self.limit)
        if self.scale:
            text = f"{_short(self.limit)} * {self.scale}"
        return text if self.compare == "<=" else f"{self.compare} {text}"


def _short(x: float) -> str:
    """1e-05 -> '1e-5', 0.0001 -> '1e-4', 0.05 -> '0.05'."""
    if 0 < abs(x) < 1e-3:
        for text in (f"{x:.0e}", f"{x:.1e}"):
            if float(text) == x:
                return text.replace("e-0", "e-")
    return f"{x:g}".replace("e-0", "e-")


def informational() -> Tolerance:
    return Tolerance(None)


@dataclass(frozen=True)
class Measurement:
    """One measured number; `scale` feeds a relative tolerance; `note` is one line for the reader."""

    value: float
    note: str = ""
    scale: float | None = None


@dataclass(frozen=True)
class Check:
    id: str
    layer: int
    name: str
    tolerance: Tolerance
    reason: str
    measure: Callable[["Context", str], Measurement] = field(compare=False, repr=False)
    subjects: tuple[str, ...] = ("",)
    subject_key: str = ""  # "output": subjects show as output=softmax
    frameworks: str = ""  # the pair it compares, when not the sides' (e.g. "keras[jax] vs lightning")

    def label(self, subject: str) -> str:
        return f"{self.subject_key}={subject}" if self.subject_key else subject


@dataclass(frozen=True)
class Result:
    check_id: str
    layer: int
    name: str
    subject: str
    value: float
    tolerance: float | None
    verdict: str
    note: str
    asserted: bool
    frameworks: str = ""

    @property
    def passed(self) -> bool | None:
        """True/False for asserted checks, None for informational ones (ERROR included)."""
        if not self.asserted:
            return None
        return self.verdict == PASS

    @property
    def failed(self) -> bool:
        return self.passed is False

    def to_dict(self) -> dict:
        def finite(x):
            return x if x is None or math.isfinite(x) else None

        return {"id": self.check_id, "layer": self.layer, "name": self.name, "subject": self.subject,
                "value": finite(self.value), "tolerance": finite(self.tolerance), "verdict": self.verdict,
                "passed": self.passed, "note": self.note, "frameworks": self.frameworks}


class Context:
    """What a measuring function may use: the sides under test, a scratch folder, a shared memo."""

    def __init__(self, sides, workdir: Path):
        self.sides = sides
        self.workdir = workdir
        self._memo: dict[Any, tuple[bool, Any]] = {}

    def memo(self, key: Any, compute: Callable[[], Any]) -> Any:
        if key not in self._memo:
            try:
                self._memo[key] = (True, compute())
            except Exception as exc:  # remembered: every check sharing it reports the same error
                self._memo[key] = (False, exc)
        ok, value = self._memo[key]
        if not ok:
            raise value
        return value


def error_note(exc: BaseException) -> str:
    """One line: type, message (TF's span many lines; cut at 300 characters), where it was raised."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" ({Path(frames[-1].filename).name}:{frames[-1].lineno})" if frames else ""
    message = " ".join(str(exc).split())
    message = message if len(message) <= 300 else message[:300] + " ..."
    return f"{type(exc).__name__}: {message}{where}"


def judge(check: Check, subject: str, ctx: Context) -> Result:
    frameworks = check.frameworks or (ctx.sides.label if ctx.sides is not None else "")
    asserted = check.tolerance.asserted
    try:
        m = check.measure(ctx, subject)
    except Exception as exc:  # a broken framework function is a failed check, not a crashed suite
        return Result(check.id, check.layer, check.name, check.label(subject), float("nan"),
                      check.tolerance.limit, ERROR, error_note(exc), asserted, frameworks)
    bound = check.tolerance.bound(m.scale if m.scale is not None else 1.0)
    if bound is None:
        verdict = INFO
    else:
        verdict = PASS if check.tolerance.holds(m.value, bound) else FAIL
    return Result(check.id, check.layer, check.name, check.label(subject), float(m.value), bound, verdict,
                  m.note, asserted, frameworks)


def run_checks(checks: Iterable[Check], sides=None, workdir: str | Path | None = None) -> list[Result]:
    """Measure and judge every subject of every check, in order, in one fresh scratch folder.

    `sides`: the implementations under test (default: keras_ref vs lightning_ft, `sides.default_sides()`).
    """
    if sides is None:
        from ftmed_parity.sides import default_sides

        sides = default_sides()
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        ctx = Context(sides, Path(tmp))
        return [judge(check, subject, ctx) for check in checks for subject in check.subjects]
