"""The configuration vocabulary: declared fields flatten, build back, check and become CLI options."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

import pytest

from netvlad_ros.config import (
    ConfigError,
    add_arguments,
    build,
    check_fields,
    flatten,
    from_arguments,
    param,
    specs,
)


@dataclass
class Inner:
    ratio: float = param(0.8, "a ratio", range=(0.0, 1.0))
    kind: str = param("orb", "a choice", choices=("orb", "sift"))


@dataclass
class Outer:
    top_k: int = param(10, "how many", range=(1, 100), read_only=True)
    on: bool = param(True, "a switch")
    speeds: tuple[float, ...] = param((0.5, 1.0), "a list")
    inner: Inner = field(default_factory=Inner)
    internal: int = 3  # not declared: not a parameter


def test_specs_flatten_nested_classes_in_order():
    rows = specs(Outer, "x.")
    assert [r.name for r in rows] == ["x.top_k", "x.on", "x.speeds", "x.inner.ratio", "x.inner.kind"]
    assert [r.kind for r in rows] == ["int", "bool", "float_array", "float", "str"]
    assert rows[0].read_only and rows[0].range == (1.0, 100.0)
    assert rows[4].choices == ("orb", "sift")


def test_build_is_the_inverse_of_flatten_and_casts_ints_to_floats():
    obj = build(Outer, {"x.top_k": 7, "x.inner.ratio": 1, "x.speeds": [1, 2], "other": 5}, "x.")
    assert obj.top_k == 7 and obj.inner.ratio == 1.0 and isinstance(obj.inner.ratio, float)
    assert obj.speeds == (1.0, 2.0) and obj.on is True
    assert build(Outer, flatten(obj, "x."), "x.") == obj


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"top_k": 2.5}, "top_k must be an integer"),
        ({"top_k": True}, "top_k must be an integer"),
        ({"on": 1}, "on must be true or false"),
        ({"inner.kind": 3}, "inner.kind must be a string"),
        ({"speeds": "1 2"}, "speeds must be a list of numbers"),
    ],
)
def test_build_refuses_wrong_types_naming_the_parameter(values, message):
    with pytest.raises(ConfigError, match=message):
        build(Outer, values)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"top_k": 0}, r"Outer.top_k must be in \[1, 100\], got 0"),
        ({"inner.ratio": float("nan")}, "Outer.inner.ratio must be finite"),
        ({"inner.kind": "surf"}, "Outer.inner.kind must be one of orb, sift; got 'surf'"),
        ({"speeds": [1.0, float("inf")]}, "Outer.speeds must be finite"),
    ],
)
def test_check_fields_names_the_field(values, message):
    with pytest.raises(ConfigError, match=message):
        check_fields(build(Outer, values))


def test_cli_options_keep_defaults_unless_given():
    parser = argparse.ArgumentParser()
    add_arguments(parser, Outer, "x.")
    assert from_arguments(Outer, parser.parse_args([]), "x.") == Outer()
    args = parser.parse_args(
        ["--x-top-k", "5", "--x-on", "false", "--x-inner-kind", "sift", "--x-speeds", "1", "3"]
    )
    got = from_arguments(Outer, args, "x.")
    assert (got.top_k, got.on, got.inner.kind, got.speeds) == (5, False, "sift", (1.0, 3.0))
    with pytest.raises(SystemExit):
        parser.parse_args(["--x-inner-kind", "surf"])  # choices come from the declaration
