"""as_tool and ToolRegistry: what becomes a tool, and the naming rules."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from fleetcall.errors import ConfigError, UnknownToolError
from fleetcall.tools import (
    FunctionTool, LLMTool, MathTool, Tool, ToolRegistry, as_tool, default_tools, llm_tool,
    math_tool, tool,
)


def lookup(key: str) -> str:
    """Look a key up."""
    return key


def test_as_tool_variants() -> None:
    assert as_tool(math_tool) is math_tool
    made = as_tool(lookup)
    assert isinstance(made, FunctionTool) and made.name == "lookup"
    with pytest.raises(ConfigError, match="class"):
        as_tool(MathTool)
    with pytest.raises(ConfigError, match="builtins.int"):
        as_tool(42)


def test_registry_is_an_ordered_mapping() -> None:
    reg = ToolRegistry([lookup, *default_tools()])
    assert isinstance(reg, Mapping)
    assert list(reg) == ["lookup", "math", "llm"] and len(reg) == 3
    assert "math" in reg and "nope" not in reg
    assert isinstance(reg.get("lookup"), Tool)
    assert reg.get("nope") is None and reg.get("nope", 7) == 7  # the Mapping contract


def test_unknown_tool_lists_known_names() -> None:
    reg = ToolRegistry([lookup, math_tool])
    with pytest.raises(UnknownToolError, match="known tools: lookup, math") as info:
        reg["search"]
    assert info.value.known == ["lookup", "math"]
    with pytest.raises(KeyError):
        reg["search"]


def test_duplicate_and_reserved_names() -> None:
    with pytest.raises(ConfigError, match="'math'"):
        ToolRegistry([math_tool, MathTool()])
    with pytest.raises(ConfigError, match="reserved"):
        ToolRegistry([tool(name="join")(lookup)])


def test_default_tools() -> None:
    tools = default_tools()
    assert [t.name for t in tools] == ["math", "llm"]
    assert isinstance(tools[0], MathTool) and isinstance(tools[1], LLMTool)
    assert tools[1] is llm_tool


def test_public_surface() -> None:
    import fleetcall.tools as tools

    assert sorted(tools.__all__) == sorted([
        "Tool", "ToolOptions", "ToolContext", "tool", "FunctionTool", "LangChainTool", "as_tool",
        "ToolRegistry", "math_tool", "llm_tool", "MathTool", "LLMTool", "default_tools",
    ])
    assert all(hasattr(tools, name) for name in tools.__all__)
