"""FunctionTool and @tool: schema from hints and docstrings, checks, binding, running."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Annotated, Any

import pytest
from pydantic import BaseModel, Field

from fleetcall.errors import ConfigError, ToolArgumentError
from fleetcall.plan import Interp, Ref
from fleetcall.tools import FunctionTool, Tool, ToolContext, ToolOptions, tool
from fleetcall.tools.docstring import arg_descriptions, summary

CTX = ToolContext(query_id="q1", task_id=3)


@tool
def search(query: str, k: int = 3, tags: list[str] | None = None) -> str:
    """Search the web for pages.

    Longer explanation that is not part of the description.

    Args:
        query: what to look for,
            in plain words.
        k (int): how many results.
        tags: optional filters.

    Returns:
        The results as text.
    """
    return f"{query}:{k}:{tags}"


def test_signature_description_and_schema_from_hints_and_docstring() -> None:
    assert isinstance(search, Tool)
    assert search.name == "search"
    assert search.description == "Search the web for pages."
    assert search.signature() == "search(query: str, k: int = 3, tags: list[str] | None = None) -> str"
    assert search.parameter_names() == ["query", "k", "tags"]
    schema = search.json_schema()
    assert schema["type"] == "object"
    assert schema["required"] == ["query"]
    props = schema["properties"]
    assert props["query"] == {"type": "string", "description": "what to look for, in plain words."}
    assert props["k"] == {"type": "integer", "default": 3, "description": "how many results."}
    assert "$defs" not in schema and "title" not in schema


def test_unhinted_parameters_are_any_and_overrides_apply() -> None:
    @tool(name="lookup", description="Look it up.", timeout_s=2, retries=1, max_concurrency=3,
          rate_limit=5, rate_period_s=0.5)
    def f(x, y=1):
        return x

    assert f.name == "lookup" and f.description == "Look it up."
    assert f.options == ToolOptions(timeout_s=2, retries=1, max_concurrency=3, rate_limit=5, rate_period_s=0.5)
    assert f.signature() == "lookup(x, y = 1)"
    assert f.json_schema()["properties"]["x"] == {}
    assert f.check_arguments(([1, {"a": object()}],), {}) == []


@pytest.mark.parametrize(
    "build",
    [
        lambda: FunctionTool(lambda *args: 0),
        lambda: FunctionTool(lambda **kw: 0),
        lambda: FunctionTool(lambda x: x, name="not valid"),
        lambda: FunctionTool(lambda x: x, name="ok", options=ToolOptions(retries=-1)),
        lambda: FunctionTool(lambda x: x, name="ok", options=ToolOptions(timeout_s=0)),
        lambda: FunctionTool(lambda x: x, name="ok", options=ToolOptions(max_concurrency=0)),
        lambda: FunctionTool(lambda x: x, name="ok", options=ToolOptions(rate_period_s=0)),
        lambda: FunctionTool(42),  # type: ignore[arg-type]  # the point of the test
    ],
)
def test_bad_definitions_raise_config_error(build: Any) -> None:
    with pytest.raises(ConfigError):
        build()


def test_star_args_error_names_the_tool() -> None:
    def many(*items: int) -> int:
        return 0

    with pytest.raises(ConfigError, match="many.*\\*args"):
        tool(many)


def test_check_arguments_structural_problems() -> None:
    assert search.check_arguments(("q", 1, [], 4), {}) == [
        "search() takes at most 3 positional arguments (4 given)"
    ]
    problems = search.check_arguments(("q",), {"query": "again", "limit": 2})
    assert "argument 'query' given twice (positionally and by keyword)" in problems
    assert "unknown argument 'limit' (arguments: query, k, tags)" in problems
    assert search.check_arguments((), {"k": 2}) == ["missing required argument 'query'"]
    assert search.check_arguments(("q",), {}) == []


def test_check_arguments_types_and_placeholders() -> None:
    (problem,) = search.check_arguments(("q",), {"k": "many"})
    assert problem.startswith("argument 'k': Input should be a valid integer")
    assert search.check_arguments(("q", "7"), {}) == []               # lax: "7" is an int
    assert search.check_arguments((Ref(1),), {"k": Ref(2, ("n",))}) == []  # refs fit any type
    assert search.check_arguments((Interp(("about ", Ref(1))),), {}) == []  # an Interp is a str
    assert search.check_arguments(("q",), {"k": Interp((Ref(1),))}) == []   # only a ref: unknown
    (bad,) = search.check_arguments(("q",), {"k": Interp(("top ", Ref(1)))})
    assert bad.startswith("argument 'k'")                                  # text is never an int
    assert search.check_arguments(("q",), {"tags": [Ref(1), "x"]}) == []    # nested ref: skipped
    (nested,) = search.check_arguments(("q",), {"tags": [1, "x"]})
    assert nested.startswith("argument 'tags'[0]")


def test_bind_validates_and_names_every_problem() -> None:
    assert search.bind(("q",), {"k": "5"}) == {"query": "q", "k": 5, "tags": None}
    with pytest.raises(ToolArgumentError) as info:
        search.bind((), {"k": "x", "tags": 3, "zz": 1})
    text = str(info.value)
    assert "4 problems" in text
    for needle in ("missing required argument 'query'", "unknown argument 'zz'", "argument 'k'", "argument 'tags'"):
        assert needle in text


def test_annotated_constraints_and_positional_only() -> None:
    @tool
    def add(a: int, /, b: Annotated[int, Field(ge=0, description="non-negative")] = 1) -> int:
        """Add."""
        return a + b

    assert add.signature() == "add(a: int, b: int = 1) -> int"
    assert add.json_schema()["properties"]["b"]["description"] == "non-negative"
    (problem,) = add.check_arguments((1, -1), {})
    assert "greater than or equal to 0" in problem
    assert asyncio.run(add.run(add.bind((2, 3), {}), CTX)) == 5
    assert add(2, 3) == 5  # the decorated name stays a plain function too


def test_async_tool_runs_on_the_loop_thread() -> None:
    @tool
    async def where(x: int) -> tuple[int, int]:
        await asyncio.sleep(0)
        return x, threading.get_ident()

    assert asyncio.run(where.run(where.bind((1,), {}), CTX)) == (1, threading.get_ident())


def test_sync_tool_runs_in_a_thread_without_blocking_the_loop() -> None:
    @tool
    def slow(x: int) -> tuple[int, int]:
        time.sleep(0.2)
        return x, threading.get_ident()

    async def main() -> tuple[Any, int]:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        async with asyncio.TaskGroup() as tg:
            tick_task = tg.create_task(ticker())
            result = await slow.run(slow.bind((7,), {}), CTX)
            tick_task.cancel()
        return result, ticks

    (value, thread_id), ticks = asyncio.run(main())
    assert value == 7 and thread_id != threading.get_ident()
    assert ticks >= 5  # the loop kept running while the function slept


def test_context_is_injected_and_not_in_the_schema() -> None:
    @tool
    async def who(name: str, *, ctx: ToolContext) -> str:
        return f"{name}@{ctx.query_id}#{ctx.task_id}"

    @tool
    def first(context: ToolContext | None, n: int = 1) -> str:
        assert context is not None
        return f"{context.query_id}:{n}"

    assert who.parameter_names() == ["name"] and "ctx" not in who.json_schema()["properties"]
    assert who.signature() == "who(name: str) -> str"
    assert asyncio.run(who.run(who.bind(("ann",), {}), CTX)) == "ann@q1#3"
    assert first.parameter_names() == ["n"]
    assert asyncio.run(first.run(first.bind((4,), {}), CTX)) == "q1:4"


def test_args_schema_style() -> None:
    class Query(BaseModel):
        """Arguments of find."""

        text: str = Field(description="what to find")
        limit: int = 10

    @tool(args_schema=Query)
    def find(text: str, limit: int) -> str:
        """Find things."""
        return f"{text}/{limit}"

    assert find.signature() == "find(text: str, limit: int = 10) -> str"
    assert find.json_schema()["properties"]["text"]["description"] == "what to find"
    assert find.check_arguments((), {"limit": "x"}) == [
        "missing required argument 'text'",
        "argument 'limit': Input should be a valid integer, unable to parse string as an integer (got 'x')",
    ]
    assert asyncio.run(find.run(find.bind(("a",), {}), CTX)) == "a/10"
    with pytest.raises(ConfigError, match="other"):
        tool(name="bad", args_schema=Query)(lambda text, other: text)


def test_docstring_parsing() -> None:
    doc = """Summary line
    continues here.

    Args:
        a (int): first,
            wrapped.
        b: second.

    Raises:
        ValueError: never listed as an argument.
    """
    assert summary(doc) == "Summary line continues here."
    assert arg_descriptions(doc) == {"a": "first, wrapped.", "b": "second."}
    assert summary(None) == "" and arg_descriptions("") == {}
