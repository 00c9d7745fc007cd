"""Tools: the protocol, ``@tool`` for Python functions, the LangChain adapter, the built-ins.

>>> from fleetcall.tools import tool, ToolRegistry, default_tools
>>> @tool
... def search(query: str) -> str:
...     '''Search the web.'''
...     return "..."
>>> sorted(ToolRegistry([search, *default_tools()]))
['llm', 'math', 'search']
"""

from fleetcall.tools.base import Tool, ToolContext, ToolOptions
from fleetcall.tools.builtins import LLMTool, MathTool, default_tools, llm_tool, math_tool
from fleetcall.tools.function import FunctionTool, tool
from fleetcall.tools.langchain import LangChainTool
from fleetcall.tools.registry import ToolRegistry, as_tool

__all__ = [
    "Tool", "ToolOptions", "ToolContext", "tool", "FunctionTool", "LangChainTool", "as_tool",
    "ToolRegistry", "math_tool", "llm_tool", "MathTool", "LLMTool", "default_tools",
]
