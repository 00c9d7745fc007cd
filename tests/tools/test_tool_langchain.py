"""LangChain tools used as they are: schema, checks, binding and running via ainvoke."""

from __future__ import annotations

import asyncio
from typing import Annotated

import pytest
from langchain_core.tools import InjectedToolArg, StructuredTool
from langchain_core.tools import Tool as LCTool
from langchain_core.tools import tool as lc_tool

from fleetcall.errors import ConfigError, ToolArgumentError
from fleetcall.plan import Ref
from fleetcall.tools import LangChainTool, Tool, ToolContext, ToolOptions, as_tool

CTX = ToolContext(query_id="q", task_id=1)


@lc_tool
def search(query: str, k: int = 2) -> str:
    """Search the corpus."""
    return "|".join([query] * k)


def test_decorated_langchain_tool_is_accepted_and_runs() -> None:
    t = as_tool(search)
    assert isinstance(t, LangChainTool) and isinstance(t, Tool)
    assert t.name == "search" and t.description == "Search the corpus."
    assert t.signature() == "search(query: str, k: int = 2) -> str"
    assert t.parameter_names() == ["query", "k"]
    assert t.json_schema()["required"] == ["query"]
    assert t.check_arguments((Ref(1),), {"k": "x"})[0].startswith("argument 'k'")
    assert t.bind(("a",), {}) == {"query": "a"}  # LangChain applies its own defaults
    assert asyncio.run(t.run(t.bind(("a",), {"k": "3"}), CTX)) == "a|a|a"


def test_structured_tool_from_function_sync_and_async() -> None:
    def add(a: int, b: int) -> int:
        """Add two numbers."""
        return a + b

    async def mul(a: float, b: float) -> float:
        """Multiply two numbers."""
        await asyncio.sleep(0)
        return a * b

    adder = as_tool(StructuredTool.from_function(add))
    multiplier = LangChainTool(StructuredTool.from_function(coroutine=mul, name="mul"),
                               options=ToolOptions(timeout_s=5))
    assert adder.signature() == "add(a: int, b: int) -> int"
    assert asyncio.run(adder.run(adder.bind((2, "3"), {}), CTX)) == 5
    assert multiplier.options.timeout_s == 5
    assert asyncio.run(multiplier.run(multiplier.bind((2, 4), {}), CTX)) == 8.0
    with pytest.raises(ToolArgumentError, match="missing required argument 'b'"):
        adder.bind((1,), {})


def test_json_schema_dict_args_schema() -> None:
    schema = {
        "type": "object",
        "properties": {"a": {"type": "integer", "description": "a number"},
                       "unit": {"type": "string", "enum": ["m", "km"]}},
        "required": ["a"],
    }
    lc = StructuredTool(name="inc", description="Increment.", args_schema=schema, func=lambda a, unit="m": f"{a + 1}{unit}")
    t = as_tool(lc)
    assert t.json_schema()["properties"]["a"] == {"type": "integer", "description": "a number"}
    assert t.check_arguments(("x",), {})[0].startswith("argument 'a'")
    assert t.check_arguments((1,), {"unit": "mi"})[0].startswith("argument 'unit'")
    assert t.bind(("4",), {}) == {"a": 4}
    assert asyncio.run(t.run(t.bind(("4",), {"unit": "km"}), CTX)) == "5km"


def test_plain_single_input_tool() -> None:
    t = as_tool(LCTool(name="echo", func=lambda s: s + "!", description="Echo it."))
    assert t.signature() == "echo(tool_input: str)"
    assert t.check_arguments((Ref(1),), {}) == []
    assert asyncio.run(t.run(t.bind(("hi",), {}), CTX)) == "hi!"


def test_injected_arguments_are_hidden_from_the_plan() -> None:
    @lc_tool
    def scoped(query: str, user_id: Annotated[str, InjectedToolArg]) -> str:
        """Scoped search."""
        return query

    assert as_tool(scoped).parameter_names() == ["query"]


def test_names_must_be_identifiers_unless_renamed() -> None:
    lc = StructuredTool.from_function(lambda q: q, name="web-search", description="Search.")
    with pytest.raises(ConfigError, match="web-search"):
        as_tool(lc)
    assert LangChainTool(lc, name="web_search").name == "web_search"
