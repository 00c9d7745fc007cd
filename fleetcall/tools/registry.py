"""Turning user objects into tools (:func:`as_tool`) and looking tools up by name.

>>> registry = ToolRegistry([search_fn, langchain_tool, math_tool])   # doctest: +SKIP
>>> registry.get("search").signature()                                # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from fleetcall.errors import ConfigError, UnknownToolError
from fleetcall.plan import JOIN
from fleetcall.tools.base import Tool

def _is_langchain_tool(obj: object) -> bool:
    try:
        from langchain_core.tools import BaseTool
    except ImportError:  # pragma: no cover - langchain-core is a dependency
        return False
    return isinstance(obj, BaseTool)


def as_tool(obj: object) -> Tool:
    """A tool from a ``Tool``, a LangChain ``BaseTool`` or a plain (sync or async) callable."""
    if isinstance(obj, type):
        raise ConfigError(f"expected a tool, got the class {obj.__name__}; pass an instance or a function")
    if _is_langchain_tool(obj):
        from fleetcall.tools.langchain import LangChainTool

        return LangChainTool(obj)  # type: ignore[arg-type]  # checked by _is_langchain_tool
    if isinstance(obj, Tool):
        return obj
    if callable(obj):
        from fleetcall.tools.function import FunctionTool

        return FunctionTool(obj)
    raise ConfigError(
        f"cannot make a tool of {type(obj).__module__}.{type(obj).__qualname__}: expected a "
        "fleetcall Tool, a LangChain BaseTool or a callable"
    )


class ToolRegistry(Mapping[str, Tool]):
    """The tools of an orchestrator by name, in the order given.

    Names must be Python identifiers, unique, and not ``join`` (the plan's final action).
    """

    def __init__(self, tools: Iterable[object] = ()) -> None:
        self._tools: dict[str, Tool] = {}   # tool name -> tool, in registration order
        for obj in tools:
            self._add(as_tool(obj))

    def _add(self, tool: Tool) -> None:
        name = tool.name
        if not isinstance(name, str) or not name.isidentifier():
            raise ConfigError(f"tool name must be a Python identifier, got {name!r}")
        if name == JOIN:
            raise ConfigError(f"the tool name {JOIN!r} is reserved for the plan's final action")
        if name in self._tools:
            raise ConfigError(f"two tools are named {name!r}; tool names must be unique")
        self._tools[name] = tool

    def __getitem__(self, name: str) -> Tool:
        try:
            return self._tools[name]
        except KeyError:
            raise UnknownToolError(name, list(self._tools)) from None

    def get(self, name: str, default: Any = None) -> Tool | Any:
        """The tool named ``name``, or ``default`` (the Mapping contract); ``registry[name]``
        raises :class:`UnknownToolError` listing the known names instead."""
        return self._tools.get(name, default)

    def __iter__(self) -> Iterator[str]:
        return iter(self._tools)

    def __len__(self) -> int:
        return len(self._tools)

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def __repr__(self) -> str:
        return f"ToolRegistry({list(self._tools)})"


