"""Property tests of the text-plan parser: never raises, and chunking never changes the result."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fleetcall.planner import Interp, Join, PlanIssue, PlanParser, Ref, Task

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

Item = Task | Join | PlanIssue


def parse_in_chunks(text: str, cuts: list[int]) -> list[Item]:
    parser = PlanParser()
    out: list[Item] = []
    last = 0
    for cut in [*sorted(set(cuts)), len(text)]:
        out += parser.feed(text[last:cut])
        last = cut
    return out + parser.close()


def parse_whole(text: str) -> list[Item]:
    parser = PlanParser()
    return parser.feed(text) + parser.close()


def chunkings(text: str) -> st.SearchStrategy[list[int]]:
    return st.lists(st.integers(0, len(text)), max_size=30)


# -- (a) arbitrary text ------------------------------------------------------------------------
FRAGMENTS = ["1. ", "2. ", "12. ", "f(", "search(", "join()", ")", "(", '"', "'", '"""', "'''", "\\", "$1", "$2",
             "${", "}", "{", "[", "]", ",", "=", "k=", "#", "\n", "\r\n", " ", "Thought: ", "<END_OF_PLAN>",
             "<END_OF", "_PLAN>", "```", "True", "null", "1e5", "-", ".", "$1.a", "[0]", "\\n", "\\u12", "x"]
noise = st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=5)), max_size=60).map("".join)


@SETTINGS
@given(st.data(), st.one_of(noise, st.text()))
def test_arbitrary_text_never_raises_and_chunking_does_not_matter(data: st.DataObject, text: str) -> None:
    whole = parse_whole(text)
    assert all(isinstance(i, (Task, Join, PlanIssue)) for i in whole)
    assert parse_in_chunks(text, data.draw(chunkings(text))) == whole
    assert parse_in_chunks(text, list(range(len(text)))) == whole


# -- (b) generated valid plans -------------------------------------------------------------------
SAFE_TEXT = st.text(st.characters(blacklist_characters="$", blacklist_categories=("Cs",)), max_size=12)
IDENT = st.builds(lambda head, tail: head + tail, st.sampled_from("abcxyz_"),
                  st.text("abcdefghij0123456789_", max_size=5)).map(lambda s: s + "_" if s == "null" else s)


@dataclass
class Spec:
    """A value and how it is written in a plan."""

    value: object
    text: str


@st.composite
def string_spec(draw: st.DrawFn) -> Spec:
    s = draw(SAFE_TEXT)
    style = draw(st.sampled_from(["repr", "json", "json_ascii", "triple"]))
    if style == "triple" and '"' not in s and "\\" not in s and "\r" not in s:
        return Spec(s, f'"""{s}"""')
    if style == "json":
        return Spec(s, json.dumps(s, ensure_ascii=False))
    if style == "json_ascii":
        return Spec(s, json.dumps(s))
    return Spec(s, repr(s))


# Strategies draw *builders*: functions of the ids of the earlier tasks, so one strategy serves
# every task (building strategies per task is slow).
Builder = Callable[[list[int]], Spec]


@st.composite
def ref_builder(draw: st.DrawFn) -> Callable[[list[int]], Ref | None]:
    pick = draw(st.integers(0, 1000))
    path = tuple(draw(st.lists(st.one_of(IDENT, st.integers(0, 99)), max_size=3)))
    return lambda earlier: Ref(earlier[pick % len(earlier)], path) if earlier else None


def ref_text(ref: Ref, braced: bool) -> str:
    head = f"${{{ref.task}}}" if braced else f"${ref.task}"
    return head + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in ref.path)


def bare_ref(draw_ref: Callable[[list[int]], Ref | None], braced: bool) -> Builder:
    def build(earlier: list[int]) -> Spec:
        ref = draw_ref(earlier)
        return Spec(0, "0") if ref is None else Spec(ref, ref_text(ref, braced))
    return build


@st.composite
def interp_builder(draw: st.DrawFn) -> Builder:
    pieces = draw(st.lists(st.one_of(ref_builder(), SAFE_TEXT.map(lambda s: s or "t")), min_size=1, max_size=4))
    pieces.append(draw(ref_builder()))
    braces = draw(st.lists(st.booleans(), min_size=len(pieces), max_size=len(pieces)))
    ascii_only = draw(st.booleans())

    def build(earlier: list[int]) -> Spec:
        if not earlier:
            return Spec("", '""')
        parts: list[str | Ref] = []
        texts: list[str] = []
        for piece, braced in zip(pieces, braces):
            if isinstance(piece, str):
                text = " " + piece if parts and isinstance(parts[-1], Ref) else piece  # don't extend a path
                if parts and isinstance(parts[-1], str):
                    parts[-1] += text
                else:
                    parts.append(text)
                texts.append(text)
            else:
                ref = piece(earlier)
                parts.append(ref)
                texts.append(ref_text(ref, braced))
        return Spec(Interp(tuple(parts)), json.dumps("".join(texts), ensure_ascii=ascii_only))
    return build


def const(spec: Spec) -> Builder:
    return lambda earlier: spec


SCALARS: st.SearchStrategy[Builder] = st.one_of(
    st.integers().map(lambda i: const(Spec(i, str(i)))),
    st.floats(allow_nan=False, allow_infinity=False).map(lambda f: const(Spec(f, repr(f)))),
    st.sampled_from([Spec(True, "True"), Spec(False, "false"), Spec(None, "None"), Spec(None, "null")]).map(const),
    string_spec().map(const),
    ref_builder().map(lambda r: bare_ref(r, False)),
    ref_builder().map(lambda r: bare_ref(r, True)),
    interp_builder(),
)


def _list(xs: list[Builder]) -> Builder:
    def build(earlier: list[int]) -> Spec:
        specs = [x(earlier) for x in xs]
        return Spec([s.value for s in specs], "[" + ", ".join(s.text for s in specs) + "]")
    return build


def _tuple(xs: list[Builder]) -> Builder:
    def build(earlier: list[int]) -> Spec:
        specs = [x(earlier) for x in xs]
        tail = "," if len(specs) == 1 else ""
        return Spec(tuple(s.value for s in specs), "(" + ", ".join(s.text for s in specs) + tail + ")")
    return build


def _dict(d: dict[str, Builder]) -> Builder:
    def build(earlier: list[int]) -> Spec:
        specs = {k: v(earlier) for k, v in d.items()}
        return Spec({k: v.value for k, v in specs.items()},
                    "{" + ", ".join(f"{json.dumps(k)}: {v.text}" for k, v in specs.items()) + "}")
    return build


VALUES: st.SearchStrategy[Builder] = st.recursive(
    SCALARS,
    lambda children: st.one_of(st.lists(children, max_size=3).map(_list), st.lists(children, max_size=3).map(_tuple),
                               st.dictionaries(SAFE_TEXT, children, max_size=3).map(_dict)),
    max_leaves=6,
)


@st.composite
def plan_spec(draw: st.DrawFn) -> tuple[str, list[Task]]:
    n = draw(st.integers(0, 6))
    ids = sorted(draw(st.sets(st.integers(1, 40), min_size=n, max_size=n)))
    lines: list[str] = [draw(st.sampled_from(["", "Plan:", "```"]))]
    expected: list[Task] = []
    for pos, task_id in enumerate(ids):
        earlier = ids[:pos]
        tool = draw(st.sampled_from(["search", "math", "web-search", "llm_call"]))
        args = [b(earlier) for b in draw(st.lists(VALUES, max_size=3))]
        names = draw(st.lists(IDENT, max_size=3, unique=True))
        kwargs = [(k, draw(VALUES)(earlier)) for k in names]
        sep = draw(st.sampled_from([", ", ",", " , ", ",\n    "]))
        written = [a.text for a in args] + [f"{k}={v.text}" for k, v in kwargs]
        thought = draw(st.one_of(st.none(), st.text("abcXYZ ,.", min_size=1, max_size=20).map(lambda t: "T" + t)))
        if thought is not None:
            thought = thought.strip()
            lines.append(f"Thought: {thought}")
        lines.append(f"{task_id}. {tool}({sep.join(written)})")
        expected.append(Task(task_id, tool, tuple(a.value for a in args), tuple((k, v.value) for k, v in kwargs),
                             thought or None))
        if draw(st.booleans()):
            lines.append(draw(st.sampled_from(["", "   ", "```"])))
    lines.append(draw(st.sampled_from(["join()", f"{(ids[-1] if ids else 0) + 1}. join()"])))
    if draw(st.booleans()):
        lines.append("<END_OF_PLAN>")
    return "\n".join(lines) + draw(st.sampled_from(["", "\n"])), expected


def same(a: object, b: object) -> bool:
    """Equal, with types compared too (True == 1 but not the same literal); NaN-free."""
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    return repr(a) == repr(b)


@SETTINGS
@given(st.data(), plan_spec())
def test_generated_plans_parse_to_their_structure_however_chunked(data: st.DataObject, spec: tuple[str, list[Task]]) -> None:
    text, expected = spec
    whole = parse_whole(text)
    issues = [i for i in whole if isinstance(i, PlanIssue)]
    assert issues == [], (text, issues)
    got = [i for i in whole if isinstance(i, Task)]
    assert [(t.id, t.tool, t.thought) for t in got] == [(t.id, t.tool, t.thought) for t in expected]
    for g, e in zip(got, expected):
        assert same(g.args, e.args) and same(g.kwargs, e.kwargs), (text, g, e)
    assert isinstance(whole[-1], Join)
    assert parse_in_chunks(text, data.draw(chunkings(text))) == whole
    assert parse_in_chunks(text, list(range(len(text)))) == whole


# -- (c) hostile inputs and linear work ------------------------------------------------------------
def test_hostile_text_plans_are_issues_and_every_task_can_be_shown() -> None:
    cases = {
        "nested": "1. f(" + "[" * 100_000 + "\n2. join()",
        "closed nesting": "1. f(" + "[" * 5000 + "]" * 5000 + ")\n2. join()",
        "huge hex": "1. f(0x" + "f" * 3600 + ")\njoin()",
        "huge decimal": "1. f(" + "9" * 100_000 + ")\njoin()",
        "huge float": "1. f(1e999999, " + "1" * 4000 + ".5)\njoin()",
        "huge id": "1" * 40 + ". f()\njoin()",
        "huge ref": "1. f()\n2. g($" + "1" * 40 + ")\njoin()",
        "nul and surrogates": '1. f("a\\x00\\ud800", "\x00\ud800")\njoin()',
        "one endless line": "1. f(" + "x, " * 100_000,
        "many unclosed strings": '1. f("' + '\n"' * 10_000,
    }
    for name, text in cases.items():
        items = parse_in_chunks(text, list(range(0, len(text), 997)))
        assert all(isinstance(i, (Task, Join, PlanIssue)) for i in items), name
        for task in (i for i in items if isinstance(i, Task)):
            str(task.args), repr(task)                      # every value can be shown


def _cpu_seconds(text: str, chunk: int) -> float:
    import time
    best = float("inf")
    for _ in range(3):
        start = time.process_time()
        parser = PlanParser()
        for i in range(0, len(text), chunk):
            parser.feed(text[i:i + chunk])
        parser.close()
        best = min(best, time.process_time() - start)
    return best


def test_parsing_work_is_linear_in_the_plan() -> None:
    """Four times the plan, at most ~eight times the work (quadratic would be sixteen): many
    tasks, one call wrapped over many lines, one long line, fed in small chunks."""
    def wide(n: int) -> str:
        return "\n".join(f'{i}. search("item {i}", k=[{i}, $1])' if i > 1 else '1. search("x")'
                         for i in range(1, n + 1)) + "\njoin()"

    def wrapped(n: int) -> str:
        return "1. f(\n" + ",\n".join(f'  "{i}"' for i in range(n)) + "\n)\njoin()"

    def long_line(n: int) -> str:
        return '1. f("' + "ab\\\"" * (n * 10) + '")\njoin()'

    for make, chunk in ((wide, 5), (wrapped, 3), (long_line, 2)):
        small, large = _cpu_seconds(make(2000), chunk), _cpu_seconds(make(8000), chunk)
        assert large < 8 * max(small, 1e-3), (make.__name__, small, large)
