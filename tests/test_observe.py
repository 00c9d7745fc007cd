"""fleetcall.observe: one rule for showing any value as JSON and as text; it never raises."""

from __future__ import annotations

import dataclasses
import enum
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from fleetcall.observe import BYTES_KEY, MAX_DEPTH, describe_exception, render, safe_repr, to_jsonable


class Raises:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc

    def __str__(self) -> str:
        raise self.exc

    __repr__ = __str__


class Color(enum.Enum):
    RED = "red"


@dataclasses.dataclass
class Point:
    x: float
    y: object


class Model(BaseModel):
    name: str = "m"
    data: bytes = b"\x00"


@pytest.mark.parametrize("value, expected", [
    (None, None), (True, True), (3, 3), (2.5, 2.5), ("text", "text"),
    (float("nan"), "NaN"), (float("inf"), "Infinity"), (float("-inf"), "-Infinity"),
    (b"\xff\x00", {BYTES_KEY: "/wA="}), (bytearray(b"a"), {BYTES_KEY: "YQ=="}), (memoryview(b"a"), {BYTES_KEY: "YQ=="}),
    ((1, [2, {3}]), [1, [2, [3]]]), ({1: "a", (2, 3): "b", None: "c"}, {"1": "a", "[2, 3]": "b", "None": "c"}),
    (Color.RED, "red"), (Point(1.0, b"\x01"), {"x": 1.0, "y": {BYTES_KEY: "AQ=="}}),
    (Model(), {"name": "m", "data": {BYTES_KEY: "AA=="}}), ("lone \ud800", "lone \\ud800"),
    (10**5000, "<int of 16610 bits>"),
], ids=lambda v: type(v).__name__)
def test_the_json_rule(value, expected):
    assert to_jsonable(value) == expected


def test_unrenderable_recursive_and_deep_values_get_placeholders():
    assert to_jsonable(Raises(ValueError("bad"))) == "<unrenderable Raises: str() raised ValueError: bad>"
    assert to_jsonable(Raises(SystemExit(1))) == "<unrenderable Raises: str() raised SystemExit: 1>"
    loop: list = [1]
    loop.append(loop)
    assert to_jsonable(loop) == [1, "<recursive list>"]
    deep: list = []
    for _ in range(MAX_DEPTH + 10):
        deep = [deep]
    out, depth = to_jsonable(deep), 0
    while isinstance(out, list):
        out, depth = out[0], depth + 1
    assert depth == MAX_DEPTH and out == f"<list nested deeper than {MAX_DEPTH} levels>"


def test_a_value_whose_str_raises_an_exception_whose_str_raises():
    class Opaque(Exception):
        def __str__(self) -> str:
            raise RuntimeError("nope")

    assert to_jsonable(Raises(Opaque())) == "<unrenderable Raises: str() raised Opaque>"
    assert render([Raises(Opaque())]) == '["<unrenderable Raises: str() raised Opaque>"]'


def test_keyboard_interrupt_is_not_swallowed():
    with pytest.raises(KeyboardInterrupt):
        to_jsonable(Raises(KeyboardInterrupt()))


def test_text_rendering():
    assert render("as is") == "as is"
    assert (render(None), render(True), render(2.5), render(float("nan"))) == ("None", "True", "2.5", "NaN")
    assert render({"a": (1, 2)}) == '{"a": [1, 2]}'
    assert render(Raises(ValueError("x"))).startswith("<unrenderable Raises")
    assert render(Point(1, 2)) == '{"x": 1, "y": 2}'


def test_a_limited_rendering_of_a_huge_value_is_short_and_cheap():
    huge = {"rows": list(range(5_000_000)), "blob": b"\x00" * 10_000_000}
    text = render(huge, 500)
    assert len(text) <= 501 and text.startswith('{"rows": [0, 1, 2')
    assert len(render("x" * 10_000, 100)) == 101


def test_safe_repr_and_describe_exception():
    class Opaque(Exception):
        def __str__(self) -> str:
            raise RuntimeError("nope")

    assert safe_repr(Raises(ValueError("v"))) == "<unrenderable Raises: repr() raised ValueError: v>"
    assert safe_repr("x" * 50, 10) == "'xxxxxx..."
    assert describe_exception(ValueError("bad")) == "ValueError: bad"
    assert describe_exception(SystemExit()) == "SystemExit"
    assert describe_exception(Opaque()) == "Opaque: <message unrenderable: str() raised RuntimeError>"


# Any value a tool could build from these parts: JSON never fails, text never raises. (Objects
# whose str() raises a BaseException are in the tests above: a failing example's report would
# call their repr.)
leaves = (st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True)
          | st.text(st.characters(exclude_categories=())) | st.binary()   # lone surrogates too | st.sampled_from([Color.RED, object])
          | st.builds(lambda: Raises(ValueError("v"))) | st.builds(lambda: Raises(RecursionError())))
values = st.recursive(
    leaves,
    lambda inner: (st.lists(inner, max_size=5) | st.tuples(inner, inner) | st.frozensets(st.integers(), max_size=3)
                   | st.dictionaries(st.text(max_size=5) | st.integers(), inner, max_size=4)
                   | st.builds(Point, inner, inner)),
    max_leaves=25,
)


@settings(max_examples=300, deadline=None)
@given(values, st.integers(min_value=1, max_value=300))
def test_any_value_serialises_and_renders(value, limit):
    data = to_jsonable(value)
    text = json.dumps(data, ensure_ascii=False, allow_nan=False)
    assert json.loads(text) == data
    text.encode("utf-8")
    shown = render(value, limit)
    shown.encode("utf-8")
    assert len(shown) <= limit + 1
    render(value).encode("utf-8")

