"""Tools: the protocol, ``@tool`` for Python functions, the LangChain adapter, the built-ins.

>>> from fleetcall.tools import tool, ToolRegistry, default_tools
>>> @tool
... def search(query: str) -> str:
...     '''Search the web.'''
...     return "..."
>>> sorted(ToolRegistry([search, *default_tools()]))
['llm', 'math', 'search']
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fleetcall._lazy import lazy_exports

if TYPE_CHECKING:
    from fleetcall.tools.base import Tool, ToolContext, ToolOptions
    from fleetcall.tools.builtins import LLMTool, MathTool, default_tools, llm_tool, math_tool
    from fleetcall.tools.function import FunctionTool, tool
    from fleetcall.tools.langchain import LangChainTool
    from fleetcall.tools.registry import ToolRegistry, as_tool

__all__ = [
    "Tool", "ToolOptions", "ToolContext", "tool", "FunctionTool", "LangChainTool", "as_tool",
    "ToolRegistry", "math_tool", "llm_tool", "MathTool", "LLMTool", "default_tools",
]

__getattr__, __dir__ = lazy_exports(__name__, {
    'Tool': 'fleetcall.tools.base',
    'ToolContext': 'fleetcall.tools.base',
    'ToolOptions': 'fleetcall.tools.base',
    'LLMTool': 'fleetcall.tools.builtins',
    'MathTool': 'fleetcall.tools.builtins',
    'default_tools': 'fleetcall.tools.builtins',
    'llm_tool': 'fleetcall.tools.builtins',
    'math_tool': 'fleetcall.tools.builtins',
    'FunctionTool': 'fleetcall.tools.function',
    'tool': 'fleetcall.tools.function',
    'LangChainTool': 'fleetcall.tools.langchain',
    'ToolRegistry': 'fleetcall.tools.registry',
    'as_tool': 'fleetcall.tools.registry',
})
