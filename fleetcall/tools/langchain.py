"""LangChain tools (``BaseTool``, ``StructuredTool``, ``@langchain_core.tools.tool``) as tools.

The LangChain tool is used as it is: its argument schema (a pydantic model, or a JSON-schema
dict in newer versions, or the single ``tool_input`` string of a plain ``Tool``) drives the
plan-time checks and binding, and it runs through ``await lc_tool.ainvoke(arguments)``; a tool
with only a sync implementation runs ``lc_tool.invoke(arguments)`` in the tool's own worker
threads (``ctx.threads``) instead of LangChain's default, the loop's shared executor.

>>> from langchain_core.tools import tool as lc_tool
>>> @lc_tool
... def search(query: str) -> str:
...     '''Search the web.'''
...     return "..."
>>> LangChainTool(search).signature()
'search(query: str) -> str'
"""

from __future__ import annotations

import inspect
import typing
from typing import Any

from langchain_core.tools import BaseTool, StructuredTool
from langchain_core.tools import Tool as LCTool
from pydantic import BaseModel

from fleetcall.errors import ConfigError
from fleetcall.tools.base import ToolContext, ToolOptions, check_options
from fleetcall.tools.schema import SchemaBackedTool
from fleetcall.tools.schema import (
    ArgumentSchema,
    model_from_json_schema,
    strip_titles,
)

SINGLE_INPUT = "tool_input"  # the one argument of a plain (string-input) LangChain ``Tool``


def _schema_source(lc_tool: BaseTool) -> type[BaseModel] | dict[str, Any] | None:
    """The schema the model is asked to fill: ``tool_call_schema`` hides injected arguments."""
    if lc_tool.args_schema is None:
        return None
    try:
        schema = lc_tool.tool_call_schema
    except Exception:  # older or unusual tools: fall back to the declared schema
        schema = lc_tool.args_schema
    return schema  # type: ignore[return-value]  # a pydantic.v1 model is read through its own schema()


def _build_schema(name: str, lc_tool: BaseTool) -> tuple[ArgumentSchema, bool]:
    """The argument schema and whether the tool takes a single string ``tool_input``."""
    source = _schema_source(lc_tool)
    if isinstance(source, type) and issubclass(source, BaseModel):
        return ArgumentSchema.from_model(name, source, exclude_unset=True), False
    if isinstance(source, dict):
        model = model_from_json_schema(name, source)
        shown = strip_titles({k: v for k, v in source.items() if k != "description"})
        return ArgumentSchema.from_model(name, model, exclude_unset=True, json_schema=shown), False
    if source is not None and hasattr(source, "schema"):  # a pydantic.v1 model
        raw = source.schema()
        model = model_from_json_schema(name, raw)
        return ArgumentSchema.from_model(name, model, exclude_unset=True, json_schema=strip_titles(raw)), False
    props = dict(lc_tool.args) or {SINGLE_INPUT: {"type": "string"}}
    raw = {"type": "object", "properties": props, "required": list(props)}
    model = model_from_json_schema(name, raw)
    single = list(props) == [SINGLE_INPUT]
    return ArgumentSchema.from_model(name, model, exclude_unset=True, json_schema=raw), single


def _return_annotation(lc_tool: BaseTool) -> Any:
    """The wrapped function's return type, when there is one (``StructuredTool.func``)."""
    for attr in ("func", "coroutine"):
        fn = getattr(lc_tool, attr, None)
        if callable(fn):
            try:
                return typing.get_type_hints(fn).get("return", Any)
            except Exception:
                ret = inspect.signature(fn).return_annotation
                return Any if ret is inspect.Signature.empty or isinstance(ret, str) else ret
    return Any


def _sync_only(lc_tool: BaseTool) -> bool:
    """True iff the tool has no async implementation of its own (LangChain's ``ainvoke`` would
    run its sync one in the loop's default executor)."""
    if getattr(lc_tool, "coroutine", None) is not None:
        return False
    arun = getattr(type(lc_tool), "_arun", None)
    return arun in _DEFAULT_ARUNS


_DEFAULT_ARUNS = tuple({getattr(cls, "_arun", None) for cls in (BaseTool, StructuredTool, LCTool)} - {None})


class LangChainTool(SchemaBackedTool):
    """A LangChain ``BaseTool`` behind the fleetcall :class:`~fleetcall.tools.Tool` protocol.

    ``name`` renames it (plans call tools by Python-identifier names); ``options`` sets the
    executor's limits, which LangChain tools do not carry.
    """

    def __init__(
        self,
        lc_tool: BaseTool,
        *,
        name: str | None = None,
        options: ToolOptions | None = None,
    ) -> None:
        if not isinstance(lc_tool, BaseTool):
            raise ConfigError(f"LangChainTool needs a langchain_core BaseTool, got {type(lc_tool).__name__}")
        self.lc_tool = lc_tool
        self.name = name if name is not None else lc_tool.name
        if not isinstance(self.name, str) or not self.name.isidentifier():
            raise ConfigError(
                f"tool name must be a Python identifier, got {self.name!r}; "
                "rename it with LangChainTool(tool, name=...)"
            )
        self.description = lc_tool.description or ""
        self.options = check_options(options if options is not None else ToolOptions())
        self._schema, self._single_input = _build_schema(self.name, lc_tool)
        self._return = _return_annotation(lc_tool)
        self._sync_only = _sync_only(lc_tool)

    async def run(self, arguments: dict[str, Any], ctx: ToolContext) -> Any:
        given = arguments[SINGLE_INPUT] if self._single_input else arguments
        if self._sync_only and ctx.threads is not None:
            return await ctx.threads.run(self.lc_tool.invoke, given)
        return await self.lc_tool.ainvoke(given)

    def __repr__(self) -> str:
        return f"<LangChainTool {self.signature()}>"
