"""The configuration vocabulary: parameter dataclasses whose fields describe themselves.

Every tunable of the product is a field of a dataclass in the layer that owns it
(``LocalizerParams`` in ``recognition/``, ``ExtractorParams`` in ``model/``, ...),
declared with :func:`param`, which stores the field's description, range, choices
and whether it may change at run time in the field's metadata. Everything else is
derived from those declarations, so a default or a limit is written once:

- :func:`specs` flattens a params class into named :class:`ParamSpec` rows
  (``prefix.field``; a nested params dataclass adds a level: ``verification.ratio``);
  ``ros/params.py`` declares the node's ROS parameters from them;
- :func:`build` makes the dataclass back from a flat ``name -> value`` mapping (ROS
  parameter values, a YAML file), casting ints to floats where the field is a float;
- :func:`check_fields` checks a params object against the declared ranges and
  choices (the classes' own ``validate()`` calls it, then adds cross-field rules);
- :func:`add_arguments` / :func:`from_arguments` derive ``argparse`` options
  (``--prefix-field``) for the CLI.

"Off" is written one way: a number ``0`` (documented per field), never ``None`` or a
negative value, so ROS parameters, YAML files, the CLI and the Python API agree.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

__all__ = [
    "ConfigError",
    "ParamSpec",
    "add_arguments",
    "build",
    "check_fields",
    "flatten",
    "from_arguments",
    "param",
    "specs",
]

T = TypeVar("T")

_META_KEY = "netvlad_ros.param"


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the parameter."""


@dataclass(frozen=True)
class ParamSpec:
    """One flattened parameter: dotted name, default (its type is the parameter's type), limits."""

    name: str
    default: Any
    description: str
    range: tuple[float, float] | None = None
    choices: tuple[str, ...] | None = None
    read_only: bool = False

    @property
    def kind(self) -> str:
        """``bool``, ``int``, ``float``, ``str`` or ``float_array`` (a tuple of floats)."""
        return _kind(self.default)


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "str"
    if isinstance(value, tuple) and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in value
    ):
        return "float_array"
    raise TypeError(f"unsupported parameter default {value!r} ({type(value).__name__})")


def param(
    default: Any,
    description: str,
    *,
    range: tuple[float, float] | None = None,
    choices: Iterable[str] | None = None,
    read_only: bool = False,
) -> Any:
    """A dataclass field with its description and limits (``range`` is inclusive).

    ``read_only``: the value is fixed when the owner is built (e.g. the inference device);
    a node refuses to change it at run time.
    """
    _kind(default)  # refuse defaults that no ROS parameter / CLI option can hold
    meta = {
        _META_KEY: {
            "description": description,
            "range": None if range is None else (float(range[0]), float(range[1])),
            "choices": None if choices is None else tuple(choices),
            "read_only": read_only,
        }
    }
    return dataclasses.field(default=default, metadata=meta)


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _nested_class(cls: type, f: dataclasses.Field[Any]) -> type | None:
    hint = _hints(cls).get(f.name)
    return hint if isinstance(hint, type) and dataclasses.is_dataclass(hint) else None


def specs(cls: type, prefix: str = "") -> tuple[ParamSpec, ...]:
    """Every declared parameter of params class ``cls`` (and its nested params classes), in order."""
    out: list[ParamSpec] = []
    for f in dataclasses.fields(cls):
        name = f"{prefix}{f.name}"
        sub = _nested_class(cls, f)
        if sub is not None:
            out.extend(specs(sub, name + "."))
            continue
        meta = f.metadata.get(_META_KEY)
        if meta is None:
            continue  # an internal field, not a parameter
        out.append(
            ParamSpec(name, f.default, meta["description"], meta["range"], meta["choices"], meta["read_only"])
        )
    return tuple(out)


def _cast(spec_default: Any, value: Any, name: str) -> Any:
    kind = _kind(spec_default)
    if kind == "bool":
        if not isinstance(value, bool):
            raise ConfigError(f"{name} must be true or false, got {value!r}")
        return value
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{name} must be an integer, got {value!r}")
        return int(value)
    if kind == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{name} must be a number, got {value!r}")
        return float(value)
    if kind == "str":
        if not isinstance(value, str):
            raise ConfigError(f"{name} must be a string, got {value!r}")
        return value
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise ConfigError(f"{name} must be a list of numbers, got {value!r}")
    items = list(value)
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in items):
        raise ConfigError(f"{name} must be a list of numbers, got {value!r}")
    return tuple(float(v) for v in items)


def build(cls: type[T], values: Mapping[str, Any], prefix: str = "") -> T:
    """A ``cls`` from flat ``prefix.field -> value`` entries; missing names keep their defaults.

    Types are checked (ints become floats where the field is a float; a float where an
    int is declared is refused); ranges are not: call the object's ``validate()``.
    """
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        name = f"{prefix}{f.name}"
        sub = _nested_class(cls, f)
        if sub is not None:
            kwargs[f.name] = build(sub, values, name + ".")
        elif f.metadata.get(_META_KEY) is not None and name in values:
            kwargs[f.name] = _cast(f.default, values[name], name)
    return cls(**kwargs)


def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """``prefix.field -> value`` of every declared parameter of a params object (the inverse of build)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        name = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            out.update(flatten(value, name + "."))
        elif f.metadata.get(_META_KEY) is not None:
            out[name] = value
    return out


def check_fields(obj: Any, owner: str | None = None, error: type[ValueError] = ConfigError) -> None:
    """Raise ``error`` naming the first field outside its declared range or choices.

    Floats must be finite. Nested params objects are checked too. ``owner`` prefixes the
    field names in messages (default: the class name, e.g. ``LocalizerParams.min_score``);
    ``error``: the layer's own error class (a ``ValueError``; :class:`ConfigError` by default).
    """
    label = owner if owner is not None else type(obj).__name__
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            check_fields(value, f"{label}.{f.name}", error)
            continue
        meta = f.metadata.get(_META_KEY)
        if meta is None:
            continue
        name = f"{label}.{f.name}"
        values = value if isinstance(value, tuple) else (value,)
        for v in values:
            if isinstance(v, float) and not math.isfinite(v):
                raise error(f"{name} must be finite, got {value!r}")
            if meta["range"] is not None and isinstance(v, (int, float)) and not isinstance(v, bool):
                lo, hi = meta["range"]
                if not lo <= v <= hi:
                    raise error(f"{name} must be in [{lo:g}, {hi:g}], got {v!r}")
        if meta["choices"] is not None and value not in meta["choices"]:
            raise error(f"{name} must be one of {', '.join(meta['choices'])}; got {value!r}")


def _option(name: str) -> str:
    return "--" + name.replace(".", "-").replace("_", "-")


def _dest(name: str) -> str:
    return "cfg__" + name.replace(".", "__")


def add_arguments(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    cls: type,
    prefix: str = "",
    only: Iterable[str] | None = None,
) -> None:
    """Add one ``--prefix-field`` option per parameter of ``cls`` (``only``: these dotted names).

    Options default to "not given", so :func:`from_arguments` keeps the dataclass default
    unless the user typed a value. Booleans take ``true``/``false``.
    """
    wanted = None if only is None else set(only)
    for s in specs(cls, prefix):
        if wanted is not None and s.name not in wanted:
            continue
        kind = s.kind
        extra: dict[str, Any] = {}
        if kind == "bool":
            extra["type"] = _parse_bool
            extra["metavar"] = "{true,false}"
        elif kind == "int":
            extra["type"] = int
        elif kind == "float":
            extra["type"] = float
        elif kind == "float_array":
            extra["type"] = float
            extra["nargs"] = "+"
        if s.choices:
            extra["choices"] = s.choices
        default = s.default if kind != "float_array" else " ".join(f"{v:g}" for v in s.default)
        parser.add_argument(
            _option(s.name),
            dest=_dest(s.name),
            default=None,
            help=f"{s.description} (default {default})",
            **extra,
        )


def from_arguments(cls: type[T], args: argparse.Namespace, prefix: str = "", base: T | None = None) -> T:
    """The params object from parsed options of :func:`add_arguments` (given options over ``base``)."""
    values = flatten(base, prefix) if base is not None else {}
    for s in specs(cls, prefix):
        v = getattr(args, _dest(s.name), None)
        if v is not None:
            values[s.name] = v
    return build(cls, values, prefix)


def _parse_bool(text: str) -> bool:
    t = text.strip().lower()
    if t in ("true", "1", "yes", "on"):
        return True
    if t in ("false", "0", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
