"""Your own variants, from a TOML file instead of code: each entry a name plus `ExperimentConfig` fields
(optimizer fields included) applied on top of the baseline (or of another registry variant).

    [[variant]]
    name = "adam-3e-4-tanh"            # required; must not clash with a registry variant
    purpose = "tanh with a smaller lr"  # optional, shown by `ftmed variants --file`
    base = "baseline"                   # optional: the registry variant to start from
    hidden_activation = "tanh"          # any ExperimentConfig field ...
    learning_rate = 3e-4                # ... or optimizer field (optimizer = "sgd" starts from SGD's
                                        # Keras defaults, then the optimizer fields apply)

Validation reports every mistake in the file, one line each (`file: variant 'x': problem`): an unknown
field, a value of the wrong type, a bad value (the config's own validation), a duplicate name, a name that
is a registry variant. A file is UTF-8 TOML of at most 1 MiB. `seed` and `data_dir` are not variant
fields: `compare` sets them for every run.

Standard library only (tomllib, or tomli on Python 3.10), like the rest of the core.
"""

from __future__ import annotations

import sys
from dataclasses import fields, replace
from pathlib import Path
from typing import Any, Iterable

from ftmed_core.config import ExperimentConfig, OptimizerConfig, optimizer_config, parse_hidden, validate_optimizer
from ftmed_core.errors import ConfigError
from ftmed_core.variants import BASELINE, GROUPS, VARIANTS, Variant, get_variant

GROUP = "file"  # the group name of a file's variants (`--variants file` selects all of them)
META_KEYS = ("name", "purpose", "base")
PROTOCOL_KEYS = {"seed": "seeds are chosen per run (--seeds)", "data_dir": "the data folder is chosen per run (--data-dir)"}

# A variants file is hand-written and short; a bound keeps a wrong file (a data set, a binary) from being
# parsed for minutes. 1 MiB holds thousands of variants.
MAX_FILE_BYTES = 1 << 20

_DEFAULTS_EXPERIMENT = ExperimentConfig()
_DEFAULTS_OPTIMIZER = OptimizerConfig()
EXPERIMENT_FIELDS = tuple(f.name for f in fields(ExperimentConfig)
                          if f.name not in ("name", "optimizer", *PROTOCOL_KEYS))
OPTIMIZER_FIELDS = tuple(f.name for f in fields(OptimizerConfig) if f.name != "name")


def _load_toml(path: Path) -> dict:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        import tomli as tomllib
    try:
        if path.is_dir():
            raise ConfigError(f"variants file {path} is a directory; pass the .toml file itself")
        with open(path, "rb") as handle:
            blob = handle.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError(f"variants file {path} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"variants file {path} cannot be read: {exc.strerror or exc}") from None
    if len(blob) > MAX_FILE_BYTES:
        raise ConfigError(f"variants file {path} is larger than {MAX_FILE_BYTES // 2**20} MiB; a variants file is a "
                          f"short hand-written TOML list (docs/api.md, 'Your own variants')")
    try:
        text = blob.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"variants file {path} is not UTF-8 text (byte {exc.start}); it must be a TOML file") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except RecursionError:
        raise ConfigError(f"{path}: not valid TOML: nested too deeply") from None


def _type_name(value: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list",
            dict: "a table"}.get(type(value), type(value).__name__)


def _coerce(key: str, value: Any, default: Any) -> Any:
    """`value` as the type of the field's `default`; raises TypeError naming what was expected."""
    if key == "hidden_units":
        if isinstance(value, str):
            return parse_hidden(value)
        if isinstance(value, list) and value and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            return tuple(value)
        raise TypeError(f"must be a list of integers like [512, 256, 128], got {value!r}")
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        raise TypeError(f"must be true or false, got {_type_name(value)} ({value!r})")
    if isinstance(default, int):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise TypeError(f"must be an integer, got {_type_name(value)} ({value!r})")
    if isinstance(default, float):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise TypeError(f"must be a number, got {_type_name(value)} ({value!r})")
    if isinstance(default, str):
        if isinstance(value, str):
            return value
        raise TypeError(f"must be a string, got {_type_name(value)} ({value!r})")
    raise TypeError("cannot be set from a file")  # pragma: no cover - every field is covered above


def apply_fields(base: ExperimentConfig, settings: dict[str, Any], name: str | None = None) -> ExperimentConfig:
    """`base` with `settings` (ExperimentConfig and optimizer field names) applied, and renamed to `name`.

    `optimizer = "sgd"` switches to that optimizer at its Keras defaults before the optimizer fields apply.
    Raises ConfigError with one line per problem (unknown field, wrong type, bad value).

    Example:
        >>> apply_fields(BASELINE, {"optimizer": "sgd", "momentum": 0.9}, name="sgd-m").optimizer.describe()
        'sgd(lr=0.01, momentum=0.9)'
    """
    problems: list[str] = []
    experiment: dict[str, Any] = {}
    optimizer: dict[str, Any] = {}
    for key, value in settings.items():
        if key in PROTOCOL_KEYS:
            problems.append(f"field {key!r} cannot be set per variant: {PROTOCOL_KEYS[key]}")
            continue
        if key == "optimizer":
            if not isinstance(value, str):
                problems.append(f"field 'optimizer' must be an optimizer name (a string), got {_type_name(value)} "
                                f"({value!r})")
            continue
        if key in EXPERIMENT_FIELDS:
            target, default = experiment, getattr(_DEFAULTS_EXPERIMENT, key)
        elif key in OPTIMIZER_FIELDS:
            target, default = optimizer, getattr(_DEFAULTS_OPTIMIZER, key)
        else:
            problems.append(f"unknown field {key!r}; known fields: "
                            f"{', '.join((*META_KEYS, 'optimizer', *EXPERIMENT_FIELDS, *OPTIMIZER_FIELDS))}")
            continue
        try:
            target[key] = _coerce(key, value, default)
        except TypeError as exc:
            problems.append(f"field {key!r} {exc}")
        except ConfigError as exc:
            problems.append(f"field {key!r}: {exc}")
    if problems:
        raise ConfigError("\n".join(problems))
    try:
        opt = base.optimizer
        chosen = settings.get("optimizer")
        if chosen is not None and chosen != opt.name:
            opt = optimizer_config(chosen)
        if optimizer:
            opt = validate_optimizer(replace(opt, **optimizer))
        return replace(base, name=name or base.name, optimizer=opt, **experiment)
    except ConfigError as exc:
        raise ConfigError(f"bad value: {exc}") from None


def parse_variants(entries: Any, source: str = "variants") -> list[Variant]:
    """`Variant`s from parsed TOML (`{"variant": [{...}, ...]}`); every problem is one line of the error."""
    problems: list[str] = []
    if not isinstance(entries, dict) or set(entries) - {"variant"}:
        extra = sorted(set(entries) - {"variant"}) if isinstance(entries, dict) else []
        raise ConfigError(f"{source}: expected only [[variant]] tables, found {extra}; see docs/api.md, 'Your own variants'")
    items = entries.get("variant", [])
    if not isinstance(items, list) or not items:
        raise ConfigError(f"{source}: no [[variant]] entries; each needs at least name = \"...\"")
    variants: list[Variant] = []
    seen: set[str] = set()
    for index, item in enumerate(items, start=1):
        name = item.get("name") if isinstance(item, dict) else None
        where = f"{source}: variant {name!r}" if isinstance(name, str) and name else f"{source}: variant #{index}"
        if not isinstance(name, str) or not name.strip():
            problems.append(f"{where}: needs name = \"...\" (a non-empty string)")
            continue
        if name in VARIANTS or name in GROUPS:
            problems.append(f"{where}: the name is already a registry {'variant' if name in VARIANTS else 'group'}; "
                            f"choose another name")
            continue
        if name in seen:
            problems.append(f"{where}: duplicate name (each variant needs its own)")
            continue
        seen.add(name)
        purpose = item.get("purpose", f"from {Path(source).name}")
        base_name = item.get("base", BASELINE.name)
        if not isinstance(purpose, str):
            problems.append(f"{where}: field 'purpose' must be a string, got {_type_name(purpose)} ({purpose!r})")
            continue
        if not isinstance(base_name, str) or base_name not in VARIANTS:
            problems.append(f"{where}: field 'base' must name a registry variant, got {base_name!r}")
            continue
        settings = {k: v for k, v in item.items() if k not in META_KEYS}
        try:
            config = apply_fields(get_variant(base_name).config, settings, name=name)
        except ConfigError as exc:
            problems.extend(f"{where}: {line}" for line in str(exc).splitlines())
            continue
        variants.append(Variant(config, purpose, GROUP))
    if problems:
        raise ConfigError("\n".join(problems))
    return variants


def load_variants_file(path: str | Path) -> list[Variant]:
    """The variants defined in a TOML file (format: this module's docstring); ConfigError lists every mistake.

    Example:
        >>> load_variants_file("my_variants.toml")  # doctest: +SKIP
        [Variant(config=ExperimentConfig(name='adam-3e-4-tanh', ...), purpose='...', group='file')]
    """
    path = Path(path)
    return parse_variants(_load_toml(path), str(path))


def select(spec: str | Iterable[str] | None, extra: list[Variant] | None = None) -> list[Variant]:
    """Like `variants.select_variants`, with a file's variants as well: their names, or the group `file`.

    `spec` None: the study's five variants without a file; with one, the baseline plus all of the file's.
    """
    from ftmed_core.variants import select_variants

    extra = list(extra or [])
    if spec is None:
        spec = "study" if not extra else ["baseline", GROUP]
    if not extra:
        return select_variants(spec)
    by_name = {v.name: v for v in extra}
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    chosen: list[Variant] = []
    for item in (i.strip() for i in items):
        if not item:
            continue
        if item == GROUP:
            found = list(extra)
        elif item in by_name:
            found = [by_name[item]]
        else:
            try:
                found = select_variants(item)
            except ConfigError:
                raise ConfigError(f"unknown variant {item!r}; choose a registry variant or group, or one of the "
                                  f"file's: {', '.join(by_name)} (or '{GROUP}' for all of them)") from None
        for variant in found:
            if variant.name not in {c.name for c in chosen}:
                chosen.append(variant)
    if not chosen:
        raise ConfigError(f"no variants selected; choose groups ({', '.join(GROUPS)}, {GROUP}) or names")
    return chosen
