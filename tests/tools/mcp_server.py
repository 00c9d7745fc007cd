"""A real MCP server for the MCP tests, built with the SDK's MCPServer (FastMCP in mcp 1.x).

    python mcp_server.py stdio     # speaks MCP over stdin/stdout
    python mcp_server.py http      # streamable HTTP on a free port of 127.0.0.1, printed first

Tools: structured results (``country``), a wrapped scalar (``add``), a name that is not an
identifier (``greet-person``), schema bounds and a nested object (``clamp``, ``order``), a tool
that reports an error (``fail_now``), one that kills the server mid-call (``die``), and ``served``
(how many calls of each tool reached the server) and ``pid``.
"""

from __future__ import annotations

import asyncio
import collections
import os
import socket
import sys
from typing import Annotated

from pydantic import BaseModel, Field

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

app = MCPServer("fleetcall-test", log_level="ERROR")
SERVED: collections.Counter[str] = collections.Counter()   # tool name -> calls that reached it


class Country(BaseModel):
    name: str
    population: int
    area_km2: int


class Item(BaseModel):
    sku: str
    qty: Annotated[int, Field(ge=1)]


@app.tool()
def country(name: str) -> Country:
    """Look up a country: its name, population and area in km2."""
    SERVED["country"] += 1
    return Country(name=name, population=68_170_000, area_km2=551_695)


@app.tool()
def add(a: int, b: int) -> int:
    """Add two integers."""
    SERVED["add"] += 1
    return a + b


@app.tool(name="greet-person")
def greet_person(name: str, times: int = 1) -> str:
    """Greet someone, perhaps more than once."""
    SERVED["greet-person"] += 1
    return " ".join([f"hello {name}"] * times)


@app.tool()
def clamp(value: Annotated[int, Field(ge=0, le=10)]) -> int:
    """Return a value between 0 and 10."""
    SERVED["clamp"] += 1
    return value


@app.tool()
def order(item: Item) -> str:
    """Order some units of an item."""
    SERVED["order"] += 1
    return f"ordered {item.qty} x {item.sku}"


@app.tool()
def fail_now(reason: str) -> str:
    """Always fails, with the reason given."""
    SERVED["fail_now"] += 1
    raise ToolError(f"refused: {reason}")   # reported to the client as an isError result


@app.tool()
async def die(after_s: float = 0.2) -> str:
    """Kills the whole server process while the call is in flight."""
    SERVED["die"] += 1
    await asyncio.sleep(after_s)
    os._exit(3)


@app.tool()
def served() -> dict[str, int]:
    """How many calls of each tool reached the server."""
    return dict(SERVED)


@app.tool()
def pid() -> int:
    """The server's process id."""
    return os.getpid()


def _serve_http() -> None:
    import uvicorn

    sock = socket.create_server(("127.0.0.1", 0))
    print(sock.getsockname()[1], flush=True)   # the port, for the test to read
    config = uvicorn.Config(app.streamable_http_app(), log_level="warning")
    asyncio.run(uvicorn.Server(config).serve(sockets=[sock]))


if __name__ == "__main__":
    if sys.argv[1:] == ["http"]:
        _serve_http()
    else:
        app.run()
