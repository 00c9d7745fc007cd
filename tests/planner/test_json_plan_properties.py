"""Property tests of the streamed JSON plan parser: never raises, chunking never matters, tasks come
out in an order they can run in, and the work is linear in the text."""

from __future__ import annotations

import json
import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fleetcall.planner import Join, JsonPlanParser, PlanIssue, Task, parse_json_plan
from fleetcall.planner.json_stream import TaskListScanner

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

Item = Task | Join | PlanIssue


def feed_in_chunks(text: str, cuts: list[int]) -> tuple[list[Item], JsonPlanParser]:
    parser = JsonPlanParser()
    out: list[Item] = []
    last = 0
    for cut in [*sorted(set(cuts)), len(text)]:
        out += parser.feed(text[last:cut])
        last = cut
    return out + parser.close(), parser


def chunkings(text: str) -> st.SearchStrategy[list[int]]:
    return st.lists(st.integers(0, len(text)), max_size=30)


def assert_runnable_order(items: list[Item]) -> None:
    """Every returned task refers only to itself or to tasks returned before it."""
    seen: set[int] = set()
    for item in items:
        if isinstance(item, Task):
            assert item.deps - {item.id} <= seen, (item, seen)
            seen.add(item.id)


# -- arbitrary text ----------------------------------------------------------------------------
FRAGMENTS = ['{"tasks": [', '[', ']', '{', '}', '"', '\\"', "\\", ",", ":", '"id": ', '"tool": "t"', '"args": ',
             '"$1"', '"${2}"', '"a $1 b"', "1", "-7", "1e999", "null", "true", " ", "\n", "```json\n", "```",
             '"plan": ', '{"id": 2, "tool": "t", "args": ["$1"]}', '{"id": 1, "tool": "t"}', '"\\ud800"', "\x00"]
noise = st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=5)), max_size=60).map("".join)


@SETTINGS
@given(st.data(), st.one_of(noise, st.text()))
def test_arbitrary_text_never_raises_and_chunking_does_not_matter(data: st.DataObject, text: str) -> None:
    whole, parser = feed_in_chunks(text, [])
    assert all(isinstance(i, (Task, Join, PlanIssue)) for i in whole)
    assert feed_in_chunks(text, data.draw(chunkings(text)))[0] == whole
    assert feed_in_chunks(text, list(range(len(text))))[0] == whole
    assert_runnable_order(whole)
    returned = {i.id for i in whole if isinstance(i, Task)}
    assert returned | {t.id for t in parser.held} == {t.id for t in parser.tasks}


# -- generated plans ---------------------------------------------------------------------------
JSON_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-10**30, 10**30),
                         st.floats(allow_nan=False, allow_infinity=False),
                         st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="$"), max_size=10))
JSON_VALUES = st.recursive(JSON_SCALARS, lambda c: st.one_of(st.lists(c, max_size=3),
                                                             st.dictionaries(st.text(max_size=5), c, max_size=3)),
                           max_leaves=8)


@st.composite
def json_plans(draw: st.DrawFn) -> tuple[str, list[dict]]:
    n = draw(st.integers(0, 8))
    ids = draw(st.lists(st.integers(1, 50), min_size=n, max_size=n, unique=True))
    tasks = []
    for task_id in ids:
        refs = draw(st.lists(st.sampled_from(ids), max_size=2)) if ids else []
        args = {f"a{i}": draw(JSON_VALUES) for i in range(draw(st.integers(0, 2)))}
        args.update({f"r{i}": f"${r}" for i, r in enumerate(refs)})
        tasks.append({"id": task_id, "thought": draw(st.text(max_size=8)), "tool": "t", "args": args})
    body = {"tasks": tasks} if draw(st.booleans()) else tasks
    text = json.dumps(body, indent=draw(st.sampled_from([None, 1, 2])), ensure_ascii=draw(st.booleans()))
    return draw(st.sampled_from(["", "Plan:\n```json\n"])) + text + draw(st.sampled_from(["", "\n```"])), tasks


@SETTINGS
@given(st.data(), json_plans())
def test_generated_plans_parse_whole_however_chunked(data: st.DataObject, spec: tuple[str, list[dict]]) -> None:
    text, tasks = spec
    whole, parser = feed_in_chunks(text, [])
    assert [i for i in whole if isinstance(i, PlanIssue)] == []
    assert isinstance(whole[-1], Join) and parser.complete
    assert [t.id for t in parser.tasks] == [t["id"] for t in tasks]
    assert all(t.line == pos for pos, t in enumerate(parser.tasks, start=1))
    assert feed_in_chunks(text, data.draw(chunkings(text)))[0] == whole
    assert_runnable_order(whole)
    # a task is held exactly when it (transitively) waits for a task in a cycle or on itself
    plan, issues = parse_json_plan(text)
    assert issues == [] and plan.tasks == parser.tasks


def test_each_task_comes_out_as_soon_as_its_object_is_complete() -> None:
    text = json.dumps({"tasks": [{"id": 1, "tool": "t", "args": {}}, {"id": 2, "tool": "t", "args": ["$1"]}]})
    parser = JsonPlanParser()
    out: list[tuple[int, Item]] = []
    for i, ch in enumerate(text):
        out += [(i, item) for item in parser.feed(ch)]
    first_end = text.index("}}") + 1
    assert [(i, type(x).__name__) for i, x in out] == [(first_end, "Task"), (len(text) - 3, "Task"), (len(text) - 2, "Join")]


def test_tasks_refer_to_later_ones_and_cycles_stay_held() -> None:
    text = json.dumps([{"id": 3, "tool": "t", "args": ["$1", "$2"]}, {"id": 1, "tool": "t"},
                       {"id": 4, "tool": "t", "args": ["$5"]}, {"id": 5, "tool": "t", "args": ["$4"]},
                       {"id": 2, "tool": "t", "args": ["$1"]}, {"id": 6, "tool": "t", "args": ["$6"]}])
    items, parser = feed_in_chunks(text, [])
    assert [i.id for i in items if isinstance(i, Task)] == [1, 2, 3, 6]
    assert [t.id for t in parser.held] == [4, 5]


# -- hostile inputs and linear work --------------------------------------------------------------
def test_hostile_inputs_are_issues() -> None:
    cases = {
        "nested": "[" * 200_000,
        "nested element": '{"tasks": [' + "[" * 50_000 + "]" * 50_000 + "]}",
        "huge int": '{"tasks": [{"id": 1, "tool": "t", "args": [' + "9" * 5000 + "]}]}",
        "huge id": '{"tasks": [{"id": ' + "9" * 40 + ', "tool": "t"}]}',
        "huge float": '{"tasks": [{"id": 1, "tool": "t", "args": [1e999999, ' + "1" * 100_000 + ".5]}]}",
        "nul and surrogates": '{"tasks": [{"id": 1, "tool": "t\\u0000", "args": ["\\ud800\\x00"]}]}',
        "mismatched": '{"tasks": [{"id": 1, "tool": "t"]}',
        "unterminated": '{"tasks": [{"id": 1, "tool": "t", "args": ["abc',
    }
    for name, text in cases.items():
        items, parser = feed_in_chunks(text, list(range(0, len(text), 997)))
        assert all(isinstance(i, (Task, Join, PlanIssue)) for i in items), name
        for task in parser.tasks:
            str(task.args), repr(task)                       # every value can be shown
    _, parser = feed_in_chunks(cases["huge float"], [])
    assert parser.tasks[0].args[0] == float("inf")


def _cpu_seconds(text: str, chunk: int) -> float:
    import time
    best = float("inf")
    for _ in range(3):
        start = time.process_time()
        parser = JsonPlanParser()
        for i in range(0, len(text), chunk):
            parser.feed(text[i:i + chunk])
        parser.close()
        best = min(best, time.process_time() - start)
    return best


def test_parsing_work_is_linear_in_the_plan() -> None:
    """Four times the plan, at most ~eight times the work (quadratic would be sixteen), for wide
    plans, plans listed backwards (every task held until the last), and one-character chunks."""
    def wide(n: int) -> str:
        return json.dumps({"tasks": [{"id": i, "tool": "t", "args": {"x": i}} for i in range(1, n + 1)]})

    def backwards(n: int) -> str:
        return json.dumps([{"id": i, "tool": "t", "args": [f"${i + 1}"] if i < n else []} for i in range(1, n + 1)])

    def one_string(n: int) -> str:
        return '{"tasks": [{"id": 1, "tool": "t", "args": ["' + "ab\\\"" * (n * 10) + '"]}]}'

    random.seed(0)
    for make, chunk in ((wide, 7), (backwards, 64), (one_string, 1)):
        small, large = _cpu_seconds(make(2000), chunk), _cpu_seconds(make(8000), chunk)
        assert large < 8 * max(small, 1e-3), (make.__name__, small, large)


def test_the_scanner_finds_elements_of_the_named_list_only() -> None:
    scanner = TaskListScanner()
    text = '{"note": "[not it]", "other": [1, 2], "tasks": [{"a": "]"}, 3], "plan": [9]}'
    assert [e.text for e in scanner.feed(text)] == ['{"a": "]"}', "3"] and scanner.list_closed
