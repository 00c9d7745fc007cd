"""The tools of an MCP server as fleetcall tools (the ``mcp`` extra).

    async with McpToolset(StdioServerParameters(command="python", args=["server.py"])) as mcp:
        orch = Orchestrator(tools=[*mcp.tools, search], llm=llm)     # the toolset stays yours
    # or: the orchestrator owns it, and closing the orchestrator closes the session
    orch = Orchestrator(tools=[await mcp_tools("http://127.0.0.1:8000/mcp")], llm=llm)
    ...
    await orch.aclose()

``server`` is what the SDK's ``mcp.Client`` connects to: a URL (streamable HTTP), a
``StdioServerParameters`` (the command runs as a subprocess speaking over stdin/stdout), any
``mcp`` transport (for headers or auth: ``streamable_http_client(url, http_client=...)``), an
in-process ``MCPServer``, or an unentered ``mcp.Client``.

Lifetime (structured concurrency): the SDK's client session is an anyio context that must be
entered and left by one task. The toolset therefore runs one *session owner* task, which enters
the client, lists the tools, and waits for :meth:`McpToolset.aclose` (from any task) to leave it;
tool calls from any task of the loop go through the open session. The owner task is the toolset's
own and ends with it; ``aclose`` waits for it.

Each tool is a :class:`McpTool`: its name made a Python identifier (``fail-now`` ->
``fail_now``, optionally prefixed), the description and ``inputSchema`` shown to the planner,
arguments checked at plan time (types of a simple schema) and validated against the full
``inputSchema`` with ``jsonschema`` before each call (:class:`~fleetcall.errors.ToolArgumentError`
naming each problem, so a bad call is a failed task and never reaches the server). Results:
``structuredContent`` is returned as it is (a dict; the SDK's ``{"result": value}`` wrapper of a
non-object return is unwrapped, and the signature shows that value's type), otherwise the text of
a single text block, otherwise a list of the blocks (text as strings, other blocks as dicts).
A tool error (``isError``), a server that died mid-call or a closed session raise
:class:`~fleetcall.errors.ToolServerError`, which the executor turns into a failed task.
"""

from __future__ import annotations

import asyncio
import keyword
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, overload

from pydantic_core import PydanticSerializationError, to_jsonable_python

try:
    import jsonschema
    import mcp
    import mcp_types
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(f"MCP tools need the mcp extra: pip install 'fleetcall[mcp]' ({exc})") from exc

from fleetcall.errors import ConfigError, ToolArgumentError, ToolServerError
from fleetcall.logs import shown_url
from fleetcall.tools.base import ToolContext, ToolOptions, check_options
from fleetcall.tools.schema import (
    ArgumentSchema,
    SchemaBackedTool,
    json_type,
    model_from_json_schema,
    strip_titles,
)

__all__ = ["McpTool", "McpToolset", "mcp_tools"]

_NOT_IDENTIFIER = re.compile(r"\W")


def tool_name(remote: str, prefix: str = "") -> str:
    """A Python identifier for an MCP tool name: ``fail-now`` -> ``fail_now``, ``3d`` -> ``_3d``."""
    name = prefix + _NOT_IDENTIFIER.sub("_", remote)
    if not name or name[0].isdigit() or keyword.iskeyword(name):
        name = "_" + name
    return name


def _is_result_wrapper(schema: Mapping[str, Any] | None) -> bool:
    """True for the SDK's wrapper of a non-object return: ``{"result": value}``, titled
    ``<function>Output``, with ``result`` its only (required) property."""
    if not schema:
        return False
    props = schema.get("properties")
    return (isinstance(props, dict) and list(props) == ["result"] and schema.get("required") == ["result"]
            and str(schema.get("title", "")).endswith("Output"))


class McpTool(SchemaBackedTool):
    """One tool of an MCP server behind the fleetcall :class:`~fleetcall.tools.Tool` protocol.

    Made by :class:`McpToolset`; ``remote_name`` is the server's name for it.
    """

    def __init__(self, toolset: "McpToolset", spec: mcp_types.Tool, *, name: str,
                 options: ToolOptions) -> None:
        self._toolset = toolset
        self.remote_name = spec.name
        self.name = name
        self.description = spec.description or spec.title or ""
        self.options = check_options(options)
        input_schema = dict(spec.input_schema or {"type": "object"})
        try:
            model = model_from_json_schema(name, input_schema)
        except (NameError, TypeError, ValueError) as exc:   # a parameter name pydantic reserves
            raise ConfigError(f"MCP tool {spec.name!r} of {toolset.server_name}: its parameters cannot be "
                              f"modelled ({exc}); leave it out with include=") from exc
        shown = strip_titles({k: v for k, v in input_schema.items() if k not in ("description", "$schema")})
        self._schema = ArgumentSchema.from_model(name, model, exclude_unset=True, json_schema=shown)
        try:
            validator_class = jsonschema.validators.validator_for(input_schema, default=jsonschema.Draft202012Validator)
            validator_class.check_schema(input_schema)
        except jsonschema.SchemaError as exc:
            raise ConfigError(f"MCP tool {spec.name!r} of {toolset.server_name}: its inputSchema is not a "
                              f"valid JSON schema: {exc.message}") from exc
        self._validator = validator_class(input_schema)
        output = spec.output_schema
        self._unwrap = _is_result_wrapper(output)
        if self._unwrap:
            self._return: Any = json_type(output["properties"]["result"])  # type: ignore[index]
        else:
            self._return = json_type(output) if output else Any

    def bind(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        """Arguments by name, validated against the tool's ``inputSchema``; raises
        ToolArgumentError naming every problem."""
        bound = self._schema.bind(args, kwargs)
        try:
            arguments = to_jsonable_python(bound)
        except PydanticSerializationError as exc:   # an earlier result that JSON cannot carry
            raise ToolArgumentError(f"{self.signature()}: the arguments cannot be sent as JSON: {exc}") from exc
        problems = [_problem(e) for e in sorted(self._validator.iter_errors(arguments), key=lambda e: list(e.path))]
        if problems:
            head = f"{self.signature()} (MCP tool {self.remote_name!r} of {self._toolset.server_name})"
            raise ToolArgumentError(f"{head}: " + "; ".join(problems))
        return arguments

    async def run(self, arguments: dict[str, Any], ctx: ToolContext) -> Any:
        result = await self._toolset.call(self.remote_name, arguments)
        if result.is_error:
            raise ToolServerError(f"MCP tool {self.remote_name!r} of {self._toolset.server_name} failed: "
                                  f"{_content_text(result.content) or 'no message'}")
        if result.structured_content is not None:
            structured = result.structured_content
            return structured.get("result") if self._unwrap else structured
        return _content_value(result.content)

    def __repr__(self) -> str:
        return f"<McpTool {self.signature()} of {self._toolset.server_name}>"


def _problem(error: jsonschema.ValidationError) -> str:
    path = list(error.absolute_path)
    if not path:
        return error.message
    where = repr(path[0]) + "".join(f"[{p!r}]" for p in path[1:])
    return f"argument {where}: {error.message}"


def _content_text(content: Sequence[Any]) -> str:
    return "\n".join(block.text for block in content if getattr(block, "type", None) == "text")


def _content_value(content: Sequence[Any]) -> Any:
    """One text block: its text; no block: None; else a list (text as str, other blocks as dicts)."""
    if not content:
        return None
    if len(content) == 1 and getattr(content[0], "type", None) == "text":
        return content[0].text
    return [block.text if getattr(block, "type", None) == "text"
            else block.model_dump(mode="json", by_alias=True, exclude_none=True) for block in content]


def _describe(server: object) -> str:
    if isinstance(server, str):
        return shown_url(server)   # a URL's user info and query (tokens) are not shown
    if isinstance(server, mcp.StdioServerParameters):
        return "stdio: " + " ".join([server.command, *server.args])
    return type(server).__name__


class McpToolset(Sequence[McpTool]):
    """The tools of one MCP server over one client session the toolset owns (see the module doc).

    Args:
        server: what ``mcp.Client`` connects to (URL, ``StdioServerParameters``, transport,
            in-process server) or an unentered ``mcp.Client``.
        prefix: put before every tool name (two servers with a tool of the same name).
        include: the server's tool names to take (default: all); an unknown one is a ConfigError.
        options: executor limits for every tool, or a mapping from tool name (the server's or
            fleetcall's) to options; tools not in the mapping get the defaults.
        connect_timeout_s: bound on starting the session and listing the tools.
        call_timeout_s: the SDK's read timeout for each call (None: none; ``ToolOptions.timeout_s``
            bounds a call from the executor's side).

    Use ``async with McpToolset(...) as toolset`` or ``await McpToolset(...).open()`` /
    ``await toolset.aclose()``. Opening raises :class:`~fleetcall.errors.ToolServerError` when
    the server cannot be reached, :class:`~fleetcall.errors.ConfigError` when its tools cannot be
    turned into fleetcall tools (two names that clash once made identifiers, an invalid schema).
    """

    def __init__(self, server: object, *, prefix: str = "", include: Iterable[str] | None = None,
                 options: ToolOptions | Mapping[str, ToolOptions] | None = None,
                 connect_timeout_s: float = 30.0, call_timeout_s: float | None = None,
                 close_timeout_s: float = 10.0) -> None:
        self._server = server
        self.server_name = f"MCP server {_describe(server)!r}"
        self._prefix = prefix
        self._include = None if include is None else tuple(include)
        self._options = options
        self._connect_timeout_s = connect_timeout_s
        self._call_timeout_s = call_timeout_s
        self._close_timeout_s = close_timeout_s
        self._tools: tuple[McpTool, ...] = ()
        self._client: mcp.Client | None = None       # the open session; None before open and after it ends
        self._owner: asyncio.Task[None] | None = None  # the session owner task, once opened
        self._closing = asyncio.Event()                # set by aclose: the owner leaves the session
        self._ended: BaseException | str | None = None  # why the session ended, once it has

    # -- lifetime --------------------------------------------------------------------------------
    async def open(self) -> "McpToolset":
        """Start the session owner, connect, list the tools; returns ``self``."""
        if self._owner is not None:
            raise ConfigError(f"{self.server_name}: this toolset was already opened")
        ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._owner = asyncio.get_running_loop().create_task(self._own(ready), name=f"mcp-session {self.server_name}")
        try:
            async with asyncio.timeout(self._connect_timeout_s):
                await asyncio.shield(ready)
        except TimeoutError:
            await self._abort()
            raise ToolServerError(f"{self.server_name}: no session within {self._connect_timeout_s:g} s") from None
        except BaseException:
            await self._abort()
            raise
        return self

    async def _abort(self) -> None:
        """Stop an owner that has not reached its session (still connecting): cancel and wait."""
        self._closing.set()
        owner = self._owner
        if owner is not None and not owner.done():
            owner.cancel()
            await asyncio.wait([owner])

    async def _own(self, ready: asyncio.Future[None]) -> None:
        """The session owner: enters the client, lists the tools, waits for aclose, leaves."""
        try:
            client = self._server if isinstance(self._server, mcp.Client) else mcp.Client(
                self._server, read_timeout_seconds=self._call_timeout_s)  # type: ignore[arg-type]
            async with client:
                info = client.server_info
                if info is not None and info.name:
                    self.server_name = f"MCP server {info.name!r}"
                self._tools = self._make_tools(await _list_tools(client))
                self._client = client
                ready.set_result(None)
                await self._closing.wait()
            self._ended = "closed"
        except asyncio.CancelledError:
            self._ended = "closed"
            raise
        except Exception as exc:   # the server went away (or never came): kept for the error texts
            self._ended = exc
            if not ready.done():
                leaf = _leaf(exc)   # anyio's task groups wrap what is raised inside the session
                ready.set_exception(leaf if isinstance(leaf, (ConfigError, ToolServerError)) else ToolServerError(
                    f"{self.server_name}: could not start a session: {_cause(exc)}"))
        finally:
            self._client = None
            if not ready.done():
                ready.cancel()

    async def aclose(self) -> None:
        """Leave the session (closing the server's subprocess or HTTP session); idempotent, from any task."""
        self._closing.set()
        owner = self._owner
        if owner is None or owner.done():
            if owner is not None and not owner.cancelled():
                owner.exception()   # retrieved: the cause is in self._ended
            return
        try:
            async with asyncio.timeout(self._close_timeout_s):
                await asyncio.shield(owner)
        except TimeoutError:
            owner.cancel()
            await asyncio.wait([owner])

    async def __aenter__(self) -> "McpToolset":
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- calls -----------------------------------------------------------------------------------
    async def call(self, remote_name: str, arguments: dict[str, Any]) -> mcp_types.CallToolResult:
        """Call a tool by the server's name for it; raises ToolServerError when the session is
        closed or ends during the call."""
        client = self._client
        if client is None:
            raise ToolServerError(f"{self.server_name}: {self._why_gone()}; cannot call {remote_name!r}")
        try:
            return await client.call_tool(remote_name, arguments)
        except mcp.MCPError as exc:
            raise ToolServerError(f"{self.server_name}: tool {remote_name!r}: {exc}") from exc
        except (OSError, EOFError) as exc:  # a transport that breaks without the SDK wrapping it
            raise ToolServerError(f"{self.server_name}: tool {remote_name!r}: {_cause(exc)}") from exc

    def _why_gone(self) -> str:
        if self._owner is None:
            return "the toolset is not open (use 'async with' or 'await toolset.open()')"
        if self._ended is None or self._ended == "closed":
            return "the session is closed"
        return f"the session ended: {_cause(self._ended)}"  # type: ignore[arg-type]

    # -- the tools -------------------------------------------------------------------------------
    def _make_tools(self, specs: list[mcp_types.Tool]) -> tuple[McpTool, ...]:
        by_remote = {s.name: s for s in specs}
        if self._include is not None:
            unknown = [n for n in self._include if n not in by_remote]
            if unknown:
                raise ConfigError(f"{self.server_name} has no tool {', '.join(map(repr, unknown))}; "
                                  f"its tools: {', '.join(by_remote) or '(none)'}")
            specs = [by_remote[n] for n in self._include]
        tools: list[McpTool] = []
        taken: dict[str, str] = {}   # fleetcall name -> the server's name it was made from
        for spec in specs:
            name = tool_name(spec.name, self._prefix)
            if name in taken:
                raise ConfigError(f"{self.server_name}: tools {taken[name]!r} and {spec.name!r} both become "
                                  f"{name!r}; pass include= to take one of them")
            taken[name] = spec.name
            tools.append(McpTool(self, spec, name=name, options=self._options_for(spec.name, name)))
        return tuple(tools)

    def _options_for(self, remote: str, name: str) -> ToolOptions:
        options = self._options
        if options is None or isinstance(options, ToolOptions):
            return options or ToolOptions()
        return options.get(remote) or options.get(name) or ToolOptions()

    @property
    def tools(self) -> tuple[McpTool, ...]:
        """The server's tools as fleetcall tools (empty until opened)."""
        return self._tools

    @overload
    def __getitem__(self, index: int) -> McpTool: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[McpTool]: ...

    def __getitem__(self, index: int | slice) -> McpTool | Sequence[McpTool]:
        return self._tools[index]

    def __len__(self) -> int:
        return len(self._tools)

    def __iter__(self) -> Iterator[McpTool]:
        return iter(self._tools)

    def __repr__(self) -> str:
        return f"<McpToolset {self.server_name}: {', '.join(t.name for t in self._tools) or 'not open'}>"


async def _list_tools(client: mcp.Client) -> list[mcp_types.Tool]:
    """Every tool the server lists, following its pages (at most 1,000 pages)."""
    tools: list[mcp_types.Tool] = []
    cursor: str | None = None
    for _ in range(1000):
        page = await client.list_tools(cursor=cursor)
        tools.extend(page.tools)
        cursor = page.next_cursor
        if cursor is None:
            return tools
    raise ToolServerError("the server's tool list did not end after 1,000 pages")


def _leaf(exc: BaseException) -> BaseException:
    """The first exception inside (nested) exception groups, which anyio's task groups raise."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def _cause(exc: BaseException) -> str:
    """One line for an exception, looking inside exception groups."""
    exc = _leaf(exc)
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


async def mcp_tools(server: object, **options: Any) -> McpToolset:
    """An opened :class:`McpToolset` for ``server`` (keyword options as for McpToolset).

    Give it to ``Orchestrator(tools=[toolset, ...])`` and the orchestrator closes it with
    ``await orch.aclose()``; otherwise close it yourself (``await toolset.aclose()``).
    """
    return await McpToolset(server, **options).open()
