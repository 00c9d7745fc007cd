"""Literal values and references in plan actions: a small hand-written recursive-descent parser.

A plan action is ``tool(arg, ..., name=value, ...)`` where each value is a JSON or Python literal
(strings with any quoting and escapes, numbers, ``True``/``true``, ``None``/``null``, lists,
tuples, dicts) whose leaves may be references:

* a bare ``$1`` / ``${1}`` argument, optionally with a path (``$1.price``, ``$1[0]``,
  ``$1["key"]``, ``$1.items[2].name``) is a :class:`Ref`, always;
* inside a string, ``${1}`` is always a reference, while ``$1`` is one only if ``bare_ok(1)``
  says so (the text parser: ``1`` is an earlier task of this plan) and it is not a sum of money
  (``$1.50``, ``$1,000``). A string with references becomes an :class:`Interp`.

Nothing here evaluates model text; every failure is a :class:`SyntaxProblem` with an offset.

>>> parse_call('search("a $1 b", k=[1, 2.5, None])', bare_ok=lambda n: n == 1).kwargs
(('k', [1, 2.5, None]),)
"""

from __future__ import annotations

import functools
import re
import sys
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field

from fleetcall.plan import Interp, Ref, Value, iter_refs

MAX_DEPTH = 100          # nesting of brackets in one argument; deeper is a syntax problem
MAX_ID_DIGITS = 18       # task ids longer than this are not ids (keeps int() cheap and safe)
# Integers of a plan have at most this many decimal digits (Python's default limit of int <-> str
# conversion, sys.get_int_max_str_digits(), is 4,300: a longer int could not even be printed).
# Number literals longer than this many characters are refused before they are converted.
MAX_INT_DIGITS = 4300

BareOk = Callable[[int], bool]

_WS = re.compile(r"(?:\s|#[^\n]*)*")
# A name starts as a Python identifier does: a letter of any script or "_" ([^\W\d]), so that
# every name the tool registry accepts (str.isidentifier: "查询天气", "ünïcode") can be called.
_IDENT = re.compile(r"[^\W\d]\w*")
_TOOL_NAME = re.compile(r"[^\W\d][\w.\-]*")
_NUMBER = re.compile(
    r"[+-]?(?:0[xX][0-9a-fA-F_]+|0[oO][0-7_]+|0[bB][01_]+"
    r"|(?:\d[\d_]*(?:\.[\d_]*)?|\.\d[\d_]*)(?:[eE][+-]?\d+)?)"
)
_CONSTS: dict[str, Value] = {
    "True": True, "true": True, "False": False, "false": False, "None": None, "null": None,
}
_ESCAPES = {
    "n": "\n", "t": "\t", "r": "\r", "\\": "\\", "'": "'", '"': '"', "a": "\a", "b": "\b",
    "f": "\f", "v": "\v", "/": "/", "\n": "",
}
_CLOSER = {"(": ")", "[": "]", "{": "}"}
# inside strings: "${12}" or "$12", then optional path steps
_STR_REF = re.compile(r"\$(?:\{(\d+)\}|(\d+))")
_STR_STEP = re.compile(r"\.([^\W\d]\w*)|\[(-?\d{1,18})\]|\[\"([^\"\\\]\n]*)\"\]|\['([^'\\\]\n]*)'\]")
_MONEY_TAIL = re.compile(r"[.,]\d")
_BARE_REF = re.compile(r"\$(?:\{\s*(\d+)\s*\}|(\d+))")
_PREFIX = re.compile(r"(?:[rR][fF]?|[fF][rR]?|[uU])(?=['\"])")
_OCTAL = re.compile(r"[0-7]{1,3}")
_NAMED = re.compile(r"\{([^}\n]{1,80})\}")
_SPECIAL = {q: re.compile(r"[\\\n" + q + "]") for q in ("'", '"')}


class SyntaxProblem(Exception):
    """Internal: why an action does not parse, and where (offset into the action text)."""

    def __init__(self, message: str, offset: int) -> None:
        super().__init__(message)
        self.message = message
        self.offset = offset


@dataclass(slots=True)
class Call:
    """One parsed ``tool(...)`` action."""

    tool: str
    args: tuple[Value, ...]
    kwargs: tuple[tuple[str, Value], ...]
    refs: list[Ref] = field(default_factory=list)  # every reference, in written order


def split_refs(text: str, bare_ok: BareOk, refs: list[Ref] | None = None) -> str | Interp:
    """``text`` with its references found: a plain ``str`` if it has none, else an ``Interp``.

    Found references are appended to ``refs`` when given.
    """
    if "$" not in text:
        return text
    parts: list[str | Ref] = []
    last = 0
    pos = text.find("$")
    while pos >= 0:
        found = _ref_in_text(text, pos, bare_ok)
        if found is None:
            pos = text.find("$", pos + 1)
            continue
        ref, end = found
        if pos > last:
            parts.append(text[last:pos])
        parts.append(ref)
        if refs is not None:
            refs.append(ref)
        last = end
        pos = text.find("$", end)
    if not parts:
        return text
    if last < len(text):
        parts.append(text[last:])
    return Interp(tuple(parts))


def _ref_in_text(text: str, pos: int, bare_ok: BareOk) -> tuple[Ref, int] | None:
    """The reference starting at ``text[pos] == '$'`` and where it ends, or None if it is text."""
    m = _STR_REF.match(text, pos)
    if m is None:
        return None
    digits = m.group(1) or m.group(2)
    if len(digits) > MAX_ID_DIGITS:
        return None
    task = int(digits)
    if m.group(2) is not None and (not bare_ok(task) or _MONEY_TAIL.match(text, m.end())):
        return None
    path, end = _text_path(text, m.end())
    return Ref(task, path), end


def _text_path(text: str, pos: int) -> tuple[tuple[str | int, ...], int]:
    """Path steps written right after a reference inside a string."""
    steps: list[str | int] = []
    while True:
        m = _STR_STEP.match(text, pos)
        if m is None:
            return tuple(steps), pos
        ident, index, dq, sq = m.groups()
        steps.append(ident if ident is not None else int(index) if index is not None else dq if dq is not None else sq)
        pos = m.end()


def parse_ref_string(text: str) -> Ref | None:
    """``text`` if it is exactly one reference (``$1``, ``${1}``, ``$1.price``), else None."""
    found = _ref_in_text(text, 0, lambda _n: True) if text.startswith("$") else None
    if found is None or found[1] != len(text):
        return None
    return found[0]


def parse_call(text: str, bare_ok: BareOk) -> Call:
    """Parse ``tool(args...)`` (the whole ``text``, trailing comments allowed) or raise."""
    return _Reader(text, bare_ok).call()


class _Reader:
    """Recursive descent over one action's text; ``pos`` is the next unread offset."""

    __slots__ = ("text", "pos", "bare_ok", "refs")

    def __init__(self, text: str, bare_ok: BareOk) -> None:
        self.text = text
        self.pos = 0
        self.bare_ok = bare_ok
        self.refs: list[Ref] = []

    # -- helpers ---------------------------------------------------------------------------------
    def fail(self, message: str, offset: int | None = None) -> SyntaxProblem:
        return SyntaxProblem(message, self.pos if offset is None else offset)

    def skip(self) -> None:
        self.pos = _WS.match(self.text, self.pos).end()  # type: ignore[union-attr]  # always matches

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def expect(self, char: str) -> None:
        self.skip()
        if self.peek() != char:
            got = repr(self.peek()) if self.peek() else "end of action"
            raise self.fail(f"expected {char!r}, found {got}")
        self.pos += 1

    # -- the call ----------------------------------------------------------------------------------
    def call(self) -> Call:
        self.skip()
        m = _TOOL_NAME.match(self.text, self.pos)
        if m is None:
            raise self.fail("expected a tool name")
        self.pos = m.end()
        self.expect("(")
        args, kwargs = self.arguments()
        self.skip()
        if self.pos < len(self.text):
            raise self.fail(f"unexpected text after the call: {self.text[self.pos:self.pos + 30]!r}")
        return Call(m.group(), tuple(args), tuple(kwargs), self.refs)

    def arguments(self) -> tuple[list[Value], list[tuple[str, Value]]]:
        args: list[Value] = []
        kwargs: list[tuple[str, Value]] = []
        while True:
            self.skip()
            if self.peek() == ")":
                self.pos += 1
                return args, kwargs
            name = self.keyword()
            value = self.value(1)
            if name is not None:
                if any(k == name for k, _ in kwargs):
                    raise self.fail(f"keyword argument {name!r} given twice")
                kwargs.append((name, value))
            elif kwargs:
                raise self.fail("positional argument after a keyword argument")
            else:
                args.append(value)
            self.skip()
            if self.peek() == ",":
                self.pos += 1
            elif self.peek() != ")":
                raise self.fail("expected ',' or ')' between arguments")

    def keyword(self) -> str | None:
        """``name=`` at the cursor (consumed), or None."""
        m = _IDENT.match(self.text, self.pos)
        if m is None:
            return None
        after = _WS.match(self.text, m.end()).end()  # type: ignore[union-attr]  # always matches
        if self.text.startswith("=", after) and not self.text.startswith("==", after):
            self.pos = after + 1
            return m.group()
        return None

    # -- values ----------------------------------------------------------------------------------
    def value(self, depth: int) -> Value:
        if depth > MAX_DEPTH:
            raise self.fail(f"values nested more than {MAX_DEPTH} deep")
        self.skip()
        c = self.peek()
        if not c:
            raise self.fail("expected a value, found end of action")
        if c in _CLOSER:
            return self.container(c, depth)
        if c == "$":
            return self.bare_ref()
        if c in "'\"" or (c in "rRuUfF" and self._string_prefix() is not None):
            return self.strings()
        if c.isdigit() or c in "+-.":
            return self.number()
        m = _IDENT.match(self.text, self.pos)
        if m is not None:
            if m.group() in _CONSTS:
                self.pos = m.end()
                return _CONSTS[m.group()]
            after = _WS.match(self.text, m.end()).end()  # type: ignore[union-attr]  # always matches
            if self.text.startswith("(", after):
                raise self.fail(f"nested call {m.group()}(...) is not allowed; give it its own task and use $N")
            raise self.fail(f"unexpected name {m.group()!r} (text must be quoted)")
        raise self.fail(f"expected a value, found {c!r}")

    def container(self, opener: str, depth: int) -> Value:
        start = self.pos
        self.pos += 1
        closer = _CLOSER[opener]
        items: list[Value] = []
        pairs: dict[object, Value] = {}
        trailing_comma = False
        while True:
            self.skip()
            if self.peek() == closer:
                self.pos += 1
                break
            if not self.peek():
                raise self.fail(f"unclosed {opener!r}", start)
            item = self.value(depth + 1)
            if opener == "{":
                self.expect(":")
                key = self._key(item)
                pairs[key] = self.value(depth + 1)
            else:
                items.append(item)
            self.skip()
            trailing_comma = self.peek() == ","
            if trailing_comma:
                self.pos += 1
            elif self.peek() != closer:
                raise self.fail(f"expected ',' or {closer!r}")
        if opener == "{":
            return pairs
        if opener == "[":
            return items
        return items[0] if len(items) == 1 and not trailing_comma else tuple(items)

    def _key(self, key: Value) -> object:
        if isinstance(key, (Ref, Interp)) or (isinstance(key, tuple) and any(True for _ in iter_refs(key))):
            raise self.fail("a dict key cannot hold a reference")
        if isinstance(key, (list, dict)):
            raise self.fail("a dict key must be a string, number, bool, None or tuple")
        try:
            hash(key)
        except TypeError as exc:
            raise self.fail("a dict key must be hashable") from exc
        return key

    def number(self) -> Value:
        start = self.pos
        m = _NUMBER.match(self.text, self.pos)
        if m is None or m.group() in ("+", "-", "."):
            raise self.fail(f"expected a value, found {self.peek()!r}")
        text = m.group()
        if _IDENT.match(self.text, m.end()) or (m.end() < len(self.text) and self.text[m.end()].isdigit()):
            raise self.fail("malformed number", start)
        self.pos = m.end()
        if len(text) > MAX_INT_DIGITS:
            raise self.fail(f"number too long ({len(text)} characters; at most {MAX_INT_DIGITS})", start)
        body = text.lstrip("+-")
        try:
            if body[:2].lower() in ("0x", "0o", "0b"):
                value: Value = int(text, 0)
            elif any(ch in body for ch in ".eE"):
                value = float(text)
            else:
                value = int(text)
        except ValueError as exc:
            raise self.fail(f"bad number {text[:30]!r}", start) from exc
        if isinstance(value, int) and int_too_long(value):
            raise self.fail(f"integer too large (more than {max_int_digits()} digits)", start)
        return value

    def bare_ref(self) -> Ref:
        start = self.pos
        m = _BARE_REF.match(self.text, self.pos)
        if m is None:
            raise self.fail("expected a task number after '$' (like $1 or ${1})")
        digits = m.group(1) or m.group(2)
        if len(digits) > MAX_ID_DIGITS:
            raise self.fail("task number too long", start)
        self.pos = m.end()
        ref = Ref(int(digits), self.ref_path())
        self.refs.append(ref)
        return ref

    def ref_path(self) -> tuple[str | int, ...]:
        steps: list[str | int] = []
        while True:
            c = self.peek()
            if c == ".":
                m = _IDENT.match(self.text, self.pos + 1)
                if m is None:
                    raise self.fail("expected a field name after '.' in a reference")
                steps.append(m.group())
                self.pos = m.end()
            elif c == "[":
                self.pos += 1
                self.skip()
                key = self.strings() if self.peek() and self.peek() in "'\"" else self.number()
                if not isinstance(key, (str, int)) or isinstance(key, bool):
                    raise self.fail("a reference index must be an integer or a plain string")
                steps.append(key)
                self.expect("]")
            else:
                return tuple(steps)

    # -- strings ---------------------------------------------------------------------------------
    def _string_prefix(self) -> str | None:
        """A string prefix (r, u, f, rf, fr, any case) followed by a quote, or None."""
        m = _PREFIX.match(self.text, self.pos)
        return m.group() if m else None

    def strings(self) -> str | Interp:
        """One or more adjacent string literals, concatenated, with references found."""
        pieces: list[str] = []
        while True:
            prefix = self._string_prefix() or ""
            self.pos += len(prefix)
            pieces.append(self.string_literal(raw="r" in prefix.lower()))
            after = _WS.match(self.text, self.pos).end()  # type: ignore[union-attr]  # always matches
            nxt = self.text[after:after + 1]
            if nxt and (nxt in "'\"" or (nxt in "rRuUfF" and self._prefix_at(after))):
                self.pos = after
                continue
            return split_refs("".join(pieces), self.bare_ok, self.refs)

    def _prefix_at(self, pos: int) -> bool:
        saved, self.pos = self.pos, pos
        try:
            return self._string_prefix() is not None
        finally:
            self.pos = saved

    def string_literal(self, raw: bool) -> str:
        start = self.pos
        quote = self.text[self.pos]
        if self.text.startswith(quote * 3, self.pos):
            quote *= 3
        self.pos += len(quote)
        out: list[str] = []
        text = self.text
        special = _SPECIAL[quote[0]]
        while True:
            m = special.search(text, self.pos)
            if m is None:
                raise self.fail("unterminated string", start)
            out.append(text[self.pos:m.start()])
            self.pos = m.start()
            c = m.group()
            if c == "\n":
                if len(quote) == 1:
                    raise self.fail("unterminated string (only triple-quoted strings may span lines)", start)
                out.append("\n")
                self.pos += 1
            elif c == "\\":
                if len(quote) == 1 and text.startswith("\n", self.pos + 1):
                    raise self.fail("unterminated string (only triple-quoted strings may span lines)", start)
                out.append(self.escape(raw))
            elif text.startswith(quote, self.pos):
                self.pos += len(quote)
                value = "".join(out)
                return clean_text(value)
            else:
                out.append(c)
                self.pos += 1

    def escape(self, raw: bool) -> str:
        """Decode the escape at the cursor (a backslash)."""
        text = self.text
        start = self.pos
        c = text[self.pos + 1:self.pos + 2]
        if raw:
            self.pos += 2 if c else 1
            return text[start:self.pos]
        self.pos += 2
        if c in _ESCAPES:
            return _ESCAPES[c]
        if c in ("x", "u", "U"):
            width = {"x": 2, "u": 4, "U": 8}[c]
            digits = text[self.pos:self.pos + width]
            if len(digits) != width or not all(ch in "0123456789abcdefABCDEF" for ch in digits):
                raise self.fail(f"bad \\{c} escape", start)
            self.pos += width
            code = int(digits, 16)
            if code > 0x10FFFF:
                raise self.fail(f"bad \\{c} escape", start)
            return chr(code)
        if c and c in "01234567":
            m = _OCTAL.match(text, self.pos - 1)
            self.pos = m.end()  # type: ignore[union-attr]  # c is an octal digit
            return chr(int(m.group(), 8))  # type: ignore[union-attr]
        if c == "N":
            m = _NAMED.match(text, self.pos)
            try:
                if m is None:
                    raise KeyError(c)
                char = unicodedata.lookup(m.group(1))
            except KeyError as exc:
                raise self.fail("bad \\N{...} escape", start) from exc
            self.pos = m.end()
            return char
        if not c:
            self.pos = start + 1
            return "\\"
        return "\\" + c  # unknown escapes keep their backslash, as in Python


_SURROGATE = re.compile("[\ud800-\udfff]")


def clean_text(text: str) -> str:
    """``text`` with UTF-16 surrogate pairs combined and lone surrogates replaced by U+FFFD.

    A lone surrogate (``"\\ud800"`` in model output) is a valid Python string that no UTF-8
    encoder takes: left in an argument, it would make every later prompt that shows it unsendable.
    """
    if _SURROGATE.search(text) is None:
        return text
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def max_int_digits() -> int:
    """The most decimal digits an integer of a plan may have: :data:`MAX_INT_DIGITS`, or less if
    the interpreter's own int/str conversion limit is set lower."""
    limit = sys.get_int_max_str_digits()
    return MAX_INT_DIGITS if limit == 0 else min(limit, MAX_INT_DIGITS)


@functools.lru_cache(maxsize=4)
def _power_of_ten(digits: int) -> int:
    return 10 ** digits


def int_too_long(value: int) -> bool:
    """Whether ``value`` has more than :func:`max_int_digits` decimal digits (it could not be
    printed, so no prompt, log or record could show it). Cheap: one comparison."""
    digits = max_int_digits()
    if value.bit_length() <= digits * 3:   # 2**(3d) < 10**d: surely short enough
        return False
    return abs(value) >= _power_of_ten(digits)
