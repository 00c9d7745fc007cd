"""A safe arithmetic evaluator for the ``math`` tool: walks ``ast.parse(mode="eval")`` nodes.

Nothing is compiled or executed: only whitelisted characters reach the parser and only
whitelisted nodes are interpreted, so ``__import__('os')``, attributes, subscripts, lambdas
and strings are refused. Every failure is a ``ValueError``
with a message a planner can act on.

The language
    numbers (``12``, ``1.5e3``, ``1_000``), ``+ - * / // % **`` (``^`` also means power;
    ``×``, ``÷`` and ``−`` are read as ``*``, ``/`` and ``-``),
    unary ``-``/``+``, parentheses, comparisons (``< <= > >= == !=``, giving ``True``/``False``),
    ``and``/``or``/``not``, list literals ``[1, 2]`` as function arguments, constants ``pi``,
    ``e``, ``tau``, functions ``min max abs round sqrt log log2 log10 exp floor ceil pow sum
    mean avg``, and the context variables ``c0, c1, ...`` (see :func:`evaluate`).

Thousands separators
    A comma is a thousands separator exactly where it could be nothing else: ``1,234 * 2`` and
    ``(1,234.5 + 1)`` read as 1234 and 1234.5 (a tuple would be an error anyway), while inside a
    call or a list it separates items: ``max(1,234)`` is ``max(1, 234)``.

Limits (against denial of service)
    expressions up to :data:`MAX_LENGTH` characters and :data:`MAX_DEPTH` levels of nesting;
    integers up to :data:`MAX_INT_BITS` bits (``9**9**9`` is refused before it is computed).

Results
    ``int``, ``float`` or ``bool``. Floats are tidied for the reader: rounded to 15 significant
    digits (``0.1 + 0.2`` gives ``0.3``) and shown as ``int`` when whole (``10 / 2`` gives ``5``).
"""

from __future__ import annotations

import ast
import math
import operator
import re
import statistics
import warnings
from collections.abc import Callable, Mapping, Sequence
from numbers import Complex, Number as AnyNumber, Real
from typing import Any

MAX_LENGTH = 2000        # characters in an expression
MAX_DEPTH = 200          # nesting of AST nodes (a chain a+b+c+... nests once per term)
MAX_INT_BITS = 10_000    # size of any integer, operand or result
MAX_ITEMS = 10_000       # elements of one list

Number = int | float

_BINARY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
    ast.Div: operator.truediv, ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_COMPARE: dict[type[ast.cmpop], Callable[[Any, Any], bool]] = {
    ast.Lt: operator.lt, ast.LtE: operator.le, ast.Gt: operator.gt, ast.GtE: operator.ge,
    ast.Eq: operator.eq, ast.NotEq: operator.ne,
}
_CONSTANTS: dict[str, float] = {"pi": math.pi, "e": math.e, "tau": math.tau}


def _items(args: Sequence[Any]) -> list[Any]:
    """``f(1, 2, 3)`` and ``f([1, 2, 3])`` alike."""
    if len(args) == 1 and isinstance(args[0], list):
        return args[0]
    return list(args)


def _mean(*args: Any) -> float:
    items = _items(args)
    if not items:
        raise ValueError("mean() of nothing")
    return statistics.fmean(items)


def _round(x: Any, ndigits: Any = None) -> Number:
    if ndigits is None:
        return round(x)
    if not isinstance(ndigits, int) or abs(ndigits) > 400:
        raise ValueError("round(x, n): n must be a whole number between -400 and 400")
    return round(x, ndigits)


def _log(x: Any, base: Any = None) -> float:
    return math.log(x) if base is None else math.log(x, base)


_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "min": lambda *a: min(_items(a)), "max": lambda *a: max(_items(a)),
    "sum": lambda *a: sum(_items(a)), "mean": _mean, "avg": _mean,
    "abs": abs, "round": _round, "sqrt": math.sqrt, "log": _log, "log2": math.log2,
    "log10": math.log10, "exp": math.exp, "floor": math.floor, "ceil": math.ceil,
    "pow": lambda x, y: _power(x, y),
}


def _check_int(value: Any) -> Any:
    if isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
        raise ValueError(f"number too large (more than {MAX_INT_BITS} bits)")
    return value


def _power(base: Any, exponent: Any) -> Any:
    """``base ** exponent``, refusing results beyond MAX_INT_BITS before computing them."""
    _number(base, "**")
    _number(exponent, "**")
    if isinstance(base, int) and isinstance(exponent, int) and exponent > 0 and abs(base) > 1:
        if exponent * math.log2(abs(base)) > MAX_INT_BITS:
            raise ValueError(f"{base} ** {exponent} is too large to compute")
    result = base**exponent
    if isinstance(result, complex):
        raise ValueError(f"({base}) ** {exponent} is not a real number")
    return _check_int(result)


def _number(value: Any, op: str) -> Number:
    if not isinstance(value, (int, float)):  # bools count as 0 and 1, as in Python
        raise ValueError(f"{op} needs numbers, got {_describe(value)}")
    return value


def _describe(value: Any) -> str:
    return "a list" if isinstance(value, list) else repr(value)


_THOUSANDS = re.compile(r"(?<![\w.])\d{1,3}(?:,\d{3})+(?:\.\d+)?(?!\w)")


def normalize(expression: str) -> str:
    """Drop thousands commas where a comma cannot separate items; ``^`` becomes ``**``.

    Items are separated only inside a call's or a list's brackets; elsewhere ``1,234`` would be
    a tuple, which the language does not have, so it can only be the number 1234.
    """
    out: list[str] = []
    stack: list[bool] = []  # per open bracket: True iff its commas separate items
    last = ""               # the last non-space character copied to out
    i = 0
    while i < len(expression):
        ch = expression[i]
        match = _THOUSANDS.match(expression, i) if ch.isdigit() else None
        if match is not None:
            text = match.group(0)
            out.append(text if stack and stack[-1] else text.replace(",", ""))
            last, i = text[-1], match.end()
            continue
        if ch == "(":
            stack.append(last.isalnum() or last in ("_", ")", "]"))
        elif ch == "[":
            stack.append(True)
        elif ch in ")]" and stack:
            stack.pop()
        out.append("**" if ch == "^" else ch)
        last = ch if not ch.isspace() else last
        i += 1
    return "".join(out)


class _Evaluator:
    """Interprets whitelisted nodes; every other node is refused by name."""

    def __init__(self, variables: Mapping[str, Callable[[], Any]]) -> None:
        self.variables = variables   # name -> thunk giving its value (errors raise on use)

    def eval(self, node: ast.AST, depth: int = 0) -> Any:
        if depth > MAX_DEPTH:
            raise ValueError(f"expression nested too deeply (more than {MAX_DEPTH} levels); "
                             "for long sums write sum([...])")
        method = getattr(self, f"_{type(node).__name__}", None)
        if method is None:
            raise ValueError(f"{_node_name(node)} is not allowed in arithmetic")
        return method(node, depth + 1)

    def _Expression(self, node: ast.Expression, depth: int) -> Any:
        return self.eval(node.body, depth)

    def _Constant(self, node: ast.Constant, depth: int) -> Any:
        value = node.value
        if isinstance(value, (int, float)):  # bools included
            return _check_int(value)
        raise ValueError(f"{value!r} is not a number")

    def _Name(self, node: ast.Name, depth: int) -> Any:
        if node.id in _CONSTANTS:
            return _CONSTANTS[node.id]
        if node.id in self.variables:
            return self.variables[node.id]()
        if node.id in _FUNCTIONS:
            raise ValueError(f"{node.id} is a function: call it, e.g. {node.id}(...)")
        known = ", ".join([*_CONSTANTS, *self.variables])
        raise ValueError(f"unknown name {node.id!r} (names: {known}); "
                         "put values from earlier results in context=[...] and use c0, c1, ...")

    def _List(self, node: ast.List, depth: int) -> list[Any]:
        if len(node.elts) > MAX_ITEMS:
            raise ValueError(f"list too long (more than {MAX_ITEMS} items)")
        return [self.eval(e, depth) for e in node.elts]

    def _Tuple(self, node: ast.Tuple, depth: int) -> Any:
        raise ValueError("a comma outside a function call: write max(a, b), or 1234 for 1,234")

    def _UnaryOp(self, node: ast.UnaryOp, depth: int) -> Any:
        value = self.eval(node.operand, depth)
        if isinstance(node.op, ast.Not):
            return not value
        if isinstance(node.op, ast.USub):
            return -_number(value, "-")
        if isinstance(node.op, ast.UAdd):
            return +_number(value, "+")
        raise ValueError(f"operator {_node_name(node.op)} is not allowed")

    def _BinOp(self, node: ast.BinOp, depth: int) -> Any:
        fn = _BINARY.get(type(node.op))
        if fn is None:
            raise ValueError(f"operator {_node_name(node.op)} is not allowed")
        left, right = self.eval(node.left, depth), self.eval(node.right, depth)
        if fn is operator.pow:
            return _power(left, right)
        _number(left, _symbol(node.op))
        _number(right, _symbol(node.op))
        if isinstance(node.op, (ast.Div, ast.FloorDiv, ast.Mod)) and right == 0:
            raise ValueError("division by zero")
        return _check_int(fn(left, right))

    def _Compare(self, node: ast.Compare, depth: int) -> bool:
        left = self.eval(node.left, depth)
        for op, comparator in zip(node.ops, node.comparators):
            fn = _COMPARE.get(type(op))
            if fn is None:
                raise ValueError(f"comparison {_node_name(op)} is not allowed")
            right = self.eval(comparator, depth)
            if not fn(_number(left, "comparison"), _number(right, "comparison")):
                return False
            left = right
        return True

    def _BoolOp(self, node: ast.BoolOp, depth: int) -> Any:
        want = isinstance(node.op, ast.Or)   # `or` stops at the first true value, `and` at false
        value: Any = not want
        for operand in node.values:
            value = self.eval(operand, depth)
            if bool(value) == want:
                return value
        return value

    def _Call(self, node: ast.Call, depth: int) -> Any:
        if not isinstance(node.func, ast.Name) or node.func.id not in _FUNCTIONS:
            shown = node.func.id if isinstance(node.func, ast.Name) else _node_name(node.func)
            raise ValueError(f"function {shown!r} is not allowed (functions: {', '.join(_FUNCTIONS)})")
        if node.keywords:
            raise ValueError(f"{node.func.id}() takes no keyword arguments")
        args = [self.eval(a, depth) for a in node.args]
        try:
            return _check_int(_FUNCTIONS[node.func.id](*args))
        except ValueError as exc:
            raise ValueError(f"{node.func.id}(): {exc}") from None
        except TypeError as exc:
            raise ValueError(f"{node.func.id}(): {exc}") from None


def _symbol(op: ast.operator) -> str:
    symbols = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.FloorDiv: "//", ast.Mod: "%"}
    return symbols.get(type(op), _node_name(op))


def _node_name(node: ast.AST) -> str:
    names = {"Attribute": "attribute access", "Subscript": "indexing", "Lambda": "lambda",
             "JoinedStr": "an f-string", "Starred": "*unpacking", "NamedExpr": ":=",
             "IfExp": "if/else", "BitXor": "^ (xor)", "BitAnd": "&", "BitOr": "|",
             "LShift": "<<", "RShift": ">>", "Invert": "~", "MatMult": "@"}
    kind = type(node).__name__
    return names.get(kind, kind)


def _tidy(value: Any) -> Number | bool:
    """Result for the reader: 15 significant digits, whole floats as int; lists refused."""
    if isinstance(value, bool) or isinstance(value, int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError("the result is not a finite number")
        value = float(f"{value:.15g}")
        return int(value) if value.is_integer() and abs(value) < 1e15 else value
    raise ValueError(f"the result must be a number, got {_describe(value)}")


def evaluate(expression: str, context: Sequence[Any] | None = None) -> Number | bool:
    """Evaluate ``expression``; the context items are the variables ``c0, c1, ...``.

    Each context item is read with :func:`to_number` when the expression uses it, so text
    results like ``"$3.5 million"`` work as ``c0``; a list of values becomes a list of numbers.

    >>> evaluate("c0 * 2 + max(1, 3)", ["1,234.5"])
    2472
    """
    if not isinstance(expression, str):
        raise ValueError(f"the expression must be a string, got {type(expression).__name__}")
    if len(expression) > MAX_LENGTH:
        raise ValueError(f"expression too long ({len(expression)} > {MAX_LENGTH} characters)")
    text = normalize(expression.strip().translate(_SYMBOLS))
    if not text:
        raise ValueError("empty expression")
    variables = {f"c{i}": _thunk(i, item) for i, item in enumerate(context or ())}
    tree = _parse(text, expression)
    try:
        return _tidy(_Evaluator(variables).eval(tree))
    except ValueError:
        raise
    except ZeroDivisionError:
        raise ValueError("division by zero") from None
    except (ArithmeticError, TypeError, RecursionError, MemoryError) as exc:
        raise ValueError(f"cannot compute {_clip(expression)}: {exc or type(exc).__name__}") from None


def _clip(text: str, limit: int = 80) -> str:
    return repr(text) if len(text) <= limit else repr(text[: limit - 3] + "...")


_NOT_ARITHMETIC = re.compile(r"[^0-9A-Za-z_\s.,+\-*/%()\[\]<>=!]")
_SYMBOLS = str.maketrans({"−": "-", "×": "*", "÷": "/"})


def _parse(text: str, expression: str) -> ast.Expression:
    """The syntax tree, or a ValueError saying what is not arithmetic in ``expression``."""
    odd = _NOT_ARITHMETIC.search(text)
    why = f"character {odd.group(0)!r} is not allowed" if odd else ""
    if not why:
        try:
            with warnings.catch_warnings():  # e.g. "invalid decimal literal" for 1and2
                warnings.simplefilter("ignore")
                return ast.parse(text, mode="eval")
        except (SyntaxError, ValueError, OverflowError, MemoryError, RecursionError) as exc:
            why = type(exc).__name__
    raise ValueError(
        f"not an arithmetic expression: {_clip(expression)} ({why}); write plain arithmetic "
        "and pass earlier results as context=[...], used as c0, c1, ..."
    )


def _thunk(index: int, item: Any) -> Callable[[], Any]:
    def value() -> Any:
        try:
            if isinstance(item, (list, tuple)):
                return [to_number(v) for v in item]
            return to_number(item)
        except ValueError as exc:
            raise ValueError(f"c{index}: {exc}") from None

    return value


# --- numbers in text ------------------------------------------------------------------------

_NUMBER = re.compile(
    r"(?:(?<![\w.])(?P<sign>[-−]))?\s*[$€£¥]?\s*"
    r"(?P<num>(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|\.\d+)"
    r"(?P<exp>[eE][-+]?\d+)?"
    r"(?:\s*(?P<pct>%|percent\b)|\s*(?P<word>thousand|million|billion|trillion)\b"
    r"|(?P<abbr>k|K|M|bn|B|T)(?![A-Za-z]))?"
)
_SCALE = {"thousand": 1e3, "million": 1e6, "billion": 1e9, "trillion": 1e12,
          "k": 1e3, "K": 1e3, "M": 1e6, "bn": 1e9, "B": 1e9, "T": 1e12}


def to_number(value: Any) -> Number:
    """The number a value stands for: numbers as they are, text by its first number.

    Text may use thousands commas (``1,234.5``), a currency sign and sign (``-$3``), percent
    (``15%`` is ``0.15``) and scale words or suffixes (``3.5 million``, ``2k``, ``4bn``).

    >>> to_number("$3.5 million"), to_number("15%"), to_number(" 1,234 ")
    (3500000, 0.15, 1234)
    """
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return _check_int(value)
    if isinstance(value, Real) or (isinstance(value, AnyNumber) and not isinstance(value, Complex)):
        return float(value)  # type: ignore[arg-type]  # a Number that is not Complex converts with float()
    if not isinstance(value, str):
        raise ValueError(f"no number in {type(value).__name__} {str(value)[:60]!r}")
    match = _NUMBER.search(value[:MAX_LENGTH])
    if match is None:
        raise ValueError(f"no number in {value[:60]!r}")
    text = match.group("num").replace(",", "") + (match.group("exp") or "")
    number: Number = float(text) if any(c in text for c in ".eE") else _check_int(int(text))
    scale = match.group("word") or match.group("abbr")
    if match.group("pct"):
        number = number / 100
    elif scale:
        number = number * _SCALE[scale]
    if match.group("sign"):
        number = -number
    if isinstance(number, float):
        if not math.isfinite(number):
            raise ValueError(f"number out of range in {value[:60]!r}")
        number = float(f"{number:.15g}")
        if number.is_integer() and abs(number) < 1e15:
            return int(number)
    return number
