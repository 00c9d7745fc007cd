"""One rule for showing whatever a tool returns: as JSON (results, events, the service) and as text
(the joiner's and planner's prompts, ``"$1"`` formatted into a string).

A tool may return any Python object; nothing downstream may fail because of it. The rule, applied
by :func:`to_jsonable` (and by :func:`render`, which builds on it):

* ``None``, ``bool``, ``int``, finite ``float`` and ``str`` stay as they are. A string holding
  characters UTF-8 cannot encode (lone surrogates) has them written as ``\\udXXX`` escapes; an
  ``int`` too long for ``str()`` (over 4,300 digits) becomes ``"<int of N bits>"``.
* ``nan``, ``inf`` and ``-inf`` become the strings ``"NaN"``, ``"Infinity"``, ``"-Infinity"``.
* ``bytes``, ``bytearray`` and ``memoryview`` become ``{"$bytes_b64": "<base64>"}``.
* Enums become their value; dataclass instances and pydantic models a dict of their fields;
  mappings a dict with string keys (a non-string key is rendered as text); lists, tuples, sets,
  frozensets and deques a list.
* Any other object becomes ``str(obj)`` (``repr(obj)`` if that raises); if both raise,
  ``"<unrenderable Foo: str() raised ValueError: ...>"``.
* A container inside itself becomes ``"<recursive list>"``; nesting deeper than
  :data:`MAX_DEPTH` becomes ``"<dict nested deeper than 64 levels>"``.

Text (:func:`render`): a string is itself; ``None``, booleans and numbers read as Python writes
them (``None``, ``True``, ``12.5``); everything else is the compact JSON of :func:`to_jsonable`
(or its string, unquoted). With a ``limit`` the text is cut to about that many characters, and
large containers are never converted whole (a 10-million-item list costs as much as a short one).

Neither function raises, whatever the value: an exception (``BaseException`` included) raised by a
value's own ``__str__``, ``__repr__``, ``__len__`` or iteration is shown by a placeholder. Only
``KeyboardInterrupt`` goes through: that is the user's Ctrl-C, not the value's.
"""

from __future__ import annotations

import base64
import collections
import dataclasses
import enum
import json
import math
from collections.abc import Mapping
from typing import Any

__all__ = ["BYTES_KEY", "MAX_DEPTH", "describe_exception", "render", "safe_repr", "to_jsonable"]

BYTES_KEY = "$bytes_b64"      # the marker key of bytes in JSON: {"$bytes_b64": "<base64>"}
MAX_DEPTH = 64                # containers nested deeper are shown by a placeholder
_SEQUENCES = (list, tuple, set, frozenset, collections.deque)
_CUT = "…"                    # ends a string or list shortened for a text rendering


def to_jsonable(value: Any) -> Any:
    """``value`` as plain JSON types (dict, list, str, int, float, bool, None) by the module's rule.

    >>> to_jsonable({"raw": b"\\xff", "ratio": float("nan"), 1: {2}})
    {'raw': {'$bytes_b64': '/w=='}, 'ratio': 'NaN', '1': [2]}
    """
    return _Converter(None).convert(value, 0, ())


def render(value: Any, limit: int | None = None) -> str:
    """``value`` as text for a prompt; at most about ``limit`` characters when given.

    >>> render({"name": "France", "tags": ("a", "b")})
    '{"name": "France", "tags": ["a", "b"]}'
    >>> render(None), render(True), render(2.5), render(b"hi")
    ('None', 'True', '2.5', '{"$bytes_b64": "aGk="}')
    """
    if isinstance(value, str):
        text = _safe_str(value)
    elif value is None or isinstance(value, (bool, float)) and math.isfinite(value):
        text = str(value)
    elif isinstance(value, int) and not isinstance(value, enum.Enum):
        text = _int_text(int(value))
    else:
        converted = _Converter(None if limit is None else 2 * limit).convert(value, 0, ())
        text = converted if isinstance(converted, str) else _dumps(converted)
    if limit is not None and len(text) > limit:
        text = text[:limit] + _CUT
    return text


def safe_repr(value: Any, limit: int | None = None) -> str:
    """``repr(value)``, or the unrenderable placeholder if it raises; cut to ``limit`` characters."""
    try:
        text = repr(value)
        if not isinstance(text, str):
            raise TypeError(f"__repr__ returned {type(text).__name__}")
    except BaseException as exc:  # a value's own repr failing must not fail the caller
        _passthrough(exc)
        text = _unrenderable(value, "repr()", exc)
    text = _safe_str(text)
    if limit is not None and len(text) > limit:
        text = text[: max(0, limit - 3)] + "..."
    return text


def describe_exception(exc: BaseException) -> str:
    """``"ValueError: message"`` (just the type name when the message is empty); never raises."""
    name = _type_name(exc)
    try:
        text = str(exc)
        if not isinstance(text, str):
            raise TypeError(f"__str__ returned {type(text).__name__}")
    except BaseException as inner:  # an exception whose __str__ raises is still a failure to report
        _passthrough(inner)
        text = f"<message unrenderable: str() raised {_type_name(inner)}>"
    text = _safe_str(text)
    return f"{name}: {text}" if text else name


class _Converter:
    """One conversion; ``budget`` (characters, approximate) stops large containers early."""

    __slots__ = ("budget",)

    def __init__(self, budget: int | None) -> None:
        self.budget = budget   # characters still to spend, or None for no bound

    def _spend(self, n: int) -> None:
        if self.budget is not None:
            self.budget -= n

    def _broke(self) -> bool:
        return self.budget is not None and self.budget <= 0

    def convert(self, value: Any, depth: int, path: tuple[int, ...]) -> Any:
        if value is None or isinstance(value, bool):
            self._spend(5)
            return value
        if isinstance(value, enum.Enum):
            return self.convert(value.value, depth, path)
        if isinstance(value, str):
            return self._text(_safe_str(value))
        if isinstance(value, int):
            return self._int(int(value))
        if isinstance(value, float):
            self._spend(8)
            value = float(value)
            return value if math.isfinite(value) else ("NaN" if value != value else
                                                       "Infinity" if value > 0 else "-Infinity")
        if isinstance(value, (bytes, bytearray, memoryview)):
            return self._bytes(value)
        if id(value) in path:
            return f"<recursive {_type_name(value)}>"
        if depth >= MAX_DEPTH:
            return f"<{_type_name(value)} nested deeper than {MAX_DEPTH} levels>"
        return self._composite(value, depth, (*path, id(value)))

    def _composite(self, value: Any, depth: int, path: tuple[int, ...]) -> Any:
        fields = _fields(value)
        if fields is not None:
            return self._mapping(fields, depth, path)
        if isinstance(value, Mapping):
            try:
                items = list(value.items()) if self.budget is None else _first_items(value, self.budget)
            except BaseException as exc:  # a mapping whose iteration raises
                _passthrough(exc)
                return _unrenderable(value, "items()", exc)
            return self._mapping(items, depth, path, total=_safe_len(value))
        if isinstance(value, _SEQUENCES):
            try:
                return self._sequence(value, depth, path)
            except BaseException as exc:  # a subclass whose iteration raises
                _passthrough(exc)
                return _unrenderable(value, "iteration", exc)
        return self._text(_str_of(value))

    def _mapping(self, items: Any, depth: int, path: tuple[int, ...], total: int | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, item in items:
            if self._broke():
                out[_CUT] = f"{(total or 0) - len(out)} more entries" if total else "more entries"
                break
            name = _safe_str(key) if isinstance(key, str) else render(key, 200)
            self._spend(len(name) + 4)
            out[name] = self.convert(item, depth + 1, path)
        return out

    def _sequence(self, value: Any, depth: int, path: tuple[int, ...]) -> list[Any]:
        out: list[Any] = []
        for item in value:
            if self._broke():
                out.append(f"{_CUT} {_safe_len(value) or 'more'} items in all")
                break
            self._spend(2)
            out.append(self.convert(item, depth + 1, path))
        return out

    def _text(self, text: str) -> str:
        if self.budget is not None and len(text) > max(self.budget, 0) + 1:
            text = text[: max(self.budget, 0)] + _CUT
        self._spend(len(text) + 2)
        return text

    def _int(self, value: int) -> int | str:
        text = _int_text(value)
        self._spend(len(text))
        return value if text[0] != "<" else text

    def _bytes(self, value: bytes | bytearray | memoryview) -> dict[str, str]:
        try:
            raw = value.tobytes() if isinstance(value, memoryview) else bytes(value)
        except BaseException as exc:  # a memoryview of an unusual buffer
            _passthrough(exc)
            return {BYTES_KEY: "", "error": _unrenderable(value, "bytes()", exc)}
        if self.budget is not None:
            raw = raw[: max(0, self.budget) * 3 // 4 + 3]
        text = base64.b64encode(raw).decode("ascii")
        self._spend(len(text) + 16)
        return {BYTES_KEY: text}


def _fields(value: Any) -> list[tuple[str, Any]] | None:
    """(name, value) of a dataclass instance or a pydantic model's fields; None for other values."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        try:
            return [(f.name, getattr(value, f.name)) for f in dataclasses.fields(value)]
        except BaseException as exc:  # a field whose attribute access raises: shown by str()
            _passthrough(exc)
            return None
    model_fields = getattr(type(value), "model_fields", None)
    if isinstance(model_fields, dict) and hasattr(value, "model_dump"):
        try:
            return [(name, getattr(value, name)) for name in model_fields]
        except BaseException as exc:  # same
            _passthrough(exc)
            return None
    return None


def _first_items(value: Mapping[Any, Any], budget: int) -> list[tuple[Any, Any]]:
    """The first items of a mapping, enough for ``budget`` characters (at least 2 per item)."""
    out: list[tuple[Any, Any]] = []
    for item in value.items():
        if len(out) > budget // 2:
            break
        out.append(item)
    return out


def _safe_len(value: Any) -> int | None:
    try:
        return len(value)
    except BaseException as exc:  # a container whose __len__ raises
        _passthrough(exc)
        return None


def _str_of(value: Any) -> str:
    """``str(value)``, else ``repr(value)``, else the unrenderable placeholder."""
    try:
        text = str(value)
        if isinstance(text, str):
            return _safe_str(text)
        raise TypeError(f"__str__ returned {type(text).__name__}")
    except BaseException as exc:
        _passthrough(exc)
        first = exc
    try:
        text = repr(value)
        if isinstance(text, str):
            return _safe_str(text)
    except BaseException as exc:  # both raised: the placeholder names the first failure
        _passthrough(exc)
    return _unrenderable(value, "str()", first)


def _unrenderable(value: Any, what: str, exc: BaseException) -> str:
    try:
        message = str(exc)
    except BaseException as inner:  # the exception's own message fails too
        _passthrough(inner)
        message = ""
    message = _safe_str(message)[:200]
    return f"<unrenderable {_type_name(value)}: {what} raised {_type_name(exc)}" + (f": {message}>" if message else ">")


def _type_name(value: Any) -> str:
    name = getattr(type(value), "__name__", None)
    return _safe_str(name) if isinstance(name, str) else "object"


def _int_text(value: int) -> str:
    try:
        return str(value)
    except ValueError:  # beyond sys.get_int_max_str_digits()
        return f"<int of {value.bit_length()} bits>"


def _safe_str(text: str) -> str:
    """A plain ``str`` that UTF-8 can encode: lone surrogates written as backslash escapes."""
    if type(text) is not str:
        text = str.__str__(text)
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def _passthrough(exc: BaseException) -> None:
    """Re-raise what must never be swallowed (Ctrl-C); anything else a value raised is shown."""
    if isinstance(exc, KeyboardInterrupt):
        raise exc


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, allow_nan=False)
