"""MCP servers' tools as fleetcall tools, against a real MCP server (the SDK's MCPServer, in
tests/tools/mcp_server.py) started by the tests over stdio and over streamable HTTP on 127.0.0.1:
schemas and names, arguments validated against inputSchema before any call, structured results,
tool errors as failed tasks, a server that dies mid-call, and the session closed with the
orchestrator. Real processes and real time: every bound is generous."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mcp import StdioServerParameters

from fleetcall import (
    ConfigError, McpToolset, Orchestrator, RunStatus, ScriptedLLM, ToolArgumentError, ToolServerError, mcp_tools,
)
from fleetcall.plan import Ref
from fleetcall.tools import ToolContext, ToolOptions

SERVER = str(Path(__file__).with_name("mcp_server.py"))
STDIO = StdioServerParameters(command=sys.executable, args=[SERVER, "stdio"])
CTX = ToolContext(query_id="q", task_id=1)
LIMIT_S = 60   # bound on each test's real time (a server start is ~1 s)


def run(coro: Any) -> Any:
    async def bounded() -> Any:
        async with asyncio.timeout(LIMIT_S):
            return await coro
    return asyncio.run(bounded())


@contextlib.contextmanager
def http_server() -> Iterator[str]:
    """The test server over streamable HTTP in a subprocess; yields its URL; kills it after."""
    proc = subprocess.Popen([sys.executable, SERVER, "http"], stdout=subprocess.PIPE, text=True)
    try:
        port = int(proc.stdout.readline())   # the server prints its port once it listens
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)
        proc.stdout.close()


async def _served(toolset: McpToolset) -> dict[str, int]:
    tool = next(t for t in toolset if t.name == "served")
    return await tool.run({}, CTX)


# -- the tools as the planner sees them -------------------------------------------------------
def test_stdio_tools_have_identifier_names_signatures_and_schemas():
    async def main() -> None:
        async with McpToolset(STDIO) as tools:
            by_name = {t.name: t for t in tools}
            assert {"country", "add", "greet_person", "clamp", "order", "fail_now", "die"} <= set(by_name)
            greet = by_name["greet_person"]
            assert greet.remote_name == "greet-person"
            assert greet.signature() == "greet_person(name: str, times: int | None = 1) -> str"
            assert greet.description == "Greet someone, perhaps more than once."
            assert by_name["add"].signature() == "add(a: int, b: int) -> int"      # the result unwrapped
            assert by_name["country"].signature() == "country(name: str) -> dict[str, Any]"
            assert by_name["clamp"].json_schema()["properties"]["value"]["maximum"] == 10
            assert by_name["add"].check_arguments((Ref(1),), {"b": "x"})[0].startswith("argument 'b'")
            assert by_name["greet_person"].bind(("ann",), {}) == {"name": "ann"}

    run(main())


def test_arguments_are_validated_against_the_input_schema_and_never_reach_the_server():
    async def main() -> None:
        async with McpToolset(STDIO) as tools:
            by_name = {t.name: t for t in tools}
            with pytest.raises(ToolArgumentError, match="argument 'value': 11 is greater than the maximum of 10"):
                by_name["clamp"].bind((11,), {})
            with pytest.raises(ToolArgumentError, match=r"argument 'item'\['qty'\]: 0 is less than the minimum of 1"):
                by_name["order"].bind(({"sku": "x", "qty": 0},), {})
            with pytest.raises(ToolArgumentError, match=r"argument 'item': 'sku' is a required property"):
                by_name["order"].bind(({"qty": 2},), {})
            with pytest.raises(ToolArgumentError, match="missing required argument 'a'"):
                by_name["add"].bind((), {"b": 1})
            with pytest.raises(ToolArgumentError, match="cannot be sent as JSON"):
                by_name["order"].bind(({"sku": object(), "qty": 1},), {})
            arguments = by_name["order"].bind(({"sku": "x", "qty": 2},), {})
            assert await by_name["order"].run(arguments, CTX) == "ordered 2 x x"
            assert await _served(tools) == {"order": 1}

    run(main())


# -- whole runs -------------------------------------------------------------------------------
PLAN = """1. country("France")
2. add($1.population, $1.area_km2)
3. clamp(11)
4. fail_now("no reason")
5. greet_person("Ann", times=2)
6. join()"""


def _check_run(result: Any) -> None:
    assert result.status is RunStatus.ANSWERED, result.error
    tasks = {t.id: t for t in result.tasks}
    assert tasks[1].observation == {"name": "France", "population": 68_170_000, "area_km2": 551_695}
    assert tasks[2].observation == 68_170_000 + 551_695              # structured, unwrapped int
    assert tasks[3].status == "error" and "greater than the maximum of 10" in tasks[3].error
    assert tasks[4].status == "error" and "refused: no reason" in tasks[4].error
    assert tasks[5].observation == "hello Ann hello Ann"


def test_a_run_over_a_stdio_server_with_the_orchestrator_owning_the_session():
    async def main() -> tuple[Any, dict[str, int], int]:
        toolset = await mcp_tools(STDIO)
        orch = Orchestrator(tools=[toolset], llm=ScriptedLLM([PLAN, "Finish(done)"]))
        result = await orch.run("q")
        served = await _served(toolset)
        server_pid = await next(t for t in toolset if t.name == "pid").run({}, CTX)
        await orch.aclose()                      # closes the MCP session and so the server
        with pytest.raises(ToolServerError, match="the session is closed"):
            await toolset.tools[0].run({"name": "x"}, CTX)
        return result, served, server_pid

    result, served, server_pid = run(main())
    _check_run(result)
    assert "clamp" not in served and served["fail_now"] == 1       # the bad call never went out
    with pytest.raises(ProcessLookupError):   # the server process ended (and was reaped)
        os.kill(server_pid, 0)


def test_a_run_over_a_streamable_http_server():
    async def main(url: str) -> Any:
        async with McpToolset(url) as toolset, Orchestrator(
                tools=toolset, llm=ScriptedLLM([PLAN, "Finish(done)"])) as orch:
            return await orch.run("q")

    with http_server() as url:
        _check_run(run(main(url)))


# -- a server that dies mid-call --------------------------------------------------------------
DYING_PLAN = "1. die()\n2. add(1, 2)\n3. join()"


@pytest.mark.parametrize("transport", ["stdio", "http"])
def test_a_server_that_dies_mid_call_fails_its_tasks_and_later_calls(transport):
    async def main(server: object) -> tuple[Any, Any]:
        async with McpToolset(server) as toolset:
            add = next(t for t in toolset if t.name == "add")
            orch = Orchestrator(tools=[*toolset], llm=ScriptedLLM([DYING_PLAN, "Finish(gone)"]))
            result = await orch.run("q")
            await asyncio.sleep(0.5)   # let the session notice; a later call fails at once either way
            with pytest.raises(ToolServerError) as later:
                await add.run({"a": 1, "b": 2}, CTX)
            return result, later.value

    if transport == "stdio":
        result, later = run(main(STDIO))
    else:
        with http_server() as url:
            result, later = run(main(url))
    assert result.status is RunStatus.ANSWERED     # the run itself goes on: errors are observations
    died = result.tasks[0]
    assert died.status == "error" and "ToolServerError" in died.error and "'die'" in died.error
    assert "MCP server" in str(later)


# -- opening and closing ----------------------------------------------------------------------
def test_a_server_that_cannot_start_is_a_tool_server_error_at_open():
    broken = StdioServerParameters(command=sys.executable, args=["-c", "import sys; sys.exit(2)"])
    with pytest.raises(ToolServerError, match="could not start a session"):
        run(mcp_tools(broken, connect_timeout_s=30))


def test_nothing_listening_at_the_url_is_a_tool_server_error_at_open():
    import socket

    sock = socket.create_server(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    with pytest.raises(ToolServerError, match=f"127.0.0.1:{port}"):
        run(mcp_tools(f"http://127.0.0.1:{port}/mcp", connect_timeout_s=30))


def test_options_include_prefix_and_closing_from_another_task():
    async def main() -> None:
        toolset = await asyncio.create_task(mcp_tools(   # opened in one task ...
            STDIO, prefix="fs_", include=["add", "greet-person"], options={"add": ToolOptions(timeout_s=5)}))
        assert [t.name for t in toolset] == ["fs_add", "fs_greet_person"]
        assert toolset[0].options.timeout_s == 5 and toolset[1].options.timeout_s is None
        assert await toolset[0].run({"a": 2, "b": 3}, CTX) == 5
        await asyncio.create_task(toolset.aclose())      # ... closed in another
        await toolset.aclose()                           # twice is fine
        with pytest.raises(ToolServerError, match="closed"):
            await toolset[0].run({"a": 2, "b": 3}, CTX)

    run(main())


def test_unknown_included_tools_and_unopened_toolsets_are_config_errors():
    with pytest.raises(ConfigError, match="has no tool 'nope'; its tools: country, add"):
        run(mcp_tools(STDIO, include=["add", "nope"]))
    with pytest.raises(ConfigError, match="is it open"):
        Orchestrator(tools=[McpToolset(STDIO)], llm=ScriptedLLM([]))


def test_a_server_that_never_answers_times_out_at_open_and_is_stopped(tmp_path):
    pid_file = tmp_path / "pid"
    silent = StdioServerParameters(command=sys.executable, args=[
        "-c", "import os, sys, time; open(sys.argv[1], 'w').write(str(os.getpid())); time.sleep(120)", str(pid_file)])
    with pytest.raises(ToolServerError, match="no session within 1 s"):
        run(mcp_tools(silent, connect_timeout_s=1))
    with pytest.raises(ProcessLookupError):   # the silent server was stopped, not left behind
        os.kill(int(pid_file.read_text()), 0)


def test_credentials_in_the_servers_url_are_not_shown_in_errors():
    # before: "MCP server 'http://me:pw-s3cret@127.0.0.1:.../mcp?api_key=k-s3cret': could not ..."
    import socket

    sock = socket.create_server(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    with pytest.raises(ToolServerError, match=f"'http://127.0.0.1:{port}/mcp'") as raised:
        run(mcp_tools(f"http://me:pw-s3cret@127.0.0.1:{port}/mcp?api_key=k-s3cret", connect_timeout_s=30))
    assert "s3cret" not in str(raised.value)
