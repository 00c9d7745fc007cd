"""An emulated OpenAI-compatible server over real HTTP on 127.0.0.1 for the LLM adapter tests:
``fleetcall.sim.fronts.create_app`` under uvicorn on a free port, with a responder that plans in
the format each request asks for (text, JSON schema, forced tool call) and answers the joiner."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import uvicorn

from fleetcall import tool
from fleetcall.sim.emulator import EmulatedEndpoint, Faults
from fleetcall.sim.fronts import create_app
from fleetcall.sim.responders import Reply, ScriptedResponder

MODEL = "llama-3.2-1b"
PLAN = '1. search("France")\n2. math("c0 / c1", context=[$1.population, $1.area_km2])\n3. join()'
JSON_PLAN = {"tasks": [
    {"id": 1, "thought": "look it up", "tool": "search", "args": {"query": "France"}},
    {"id": 2, "thought": "", "tool": "math", "args": {"expression": "c0 / c1", "context": ["$1.population", "$1.area_km2"]}},
]}
ANSWER = "about 124 people per km2"


@tool
async def search(query: str) -> dict:
    """Look up a country: returns name, population and area_km2."""
    return {"name": query, "population": 68_170_000, "area_km2": 551_695}


@contextlib.asynccontextmanager
async def emulated_server(respond: Callable[[dict[str, Any]], str | Reply], *,
                          faults: Faults | None = None) -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
    """An emulated endpoint under uvicorn on a free port of 127.0.0.1: (base URL, request bodies)."""
    bodies: list[dict[str, Any]] = []

    def record(body: dict[str, Any]) -> str | Reply:
        bodies.append(body)
        return respond(body)

    endpoint = EmulatedEndpoint("A100-80G", MODEL, responder=ScriptedResponder(record), faults=faults,
                                stream_interval_s=0.01)
    sock = socket.create_server(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(create_app(endpoint), log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        async with asyncio.timeout(30):
            while not server.started:   # uvicorn has no readiness event
                await asyncio.sleep(0.01)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/v1", bodies
    finally:
        server.should_exit = True
        await task
        await endpoint.aclose()
        sock.close()


def _is_joiner(body: dict[str, Any]) -> bool:
    return body["messages"][-1]["content"].endswith("answer the question, or ask for a new plan.")


def respond(body: dict[str, Any]) -> str | Reply:
    """Plans in the format the request asks for; the joiner's Finish."""
    if _is_joiner(body):
        if body.get("response_format"):
            return json.dumps({"thought": "ok", "action": "finish", "answer": ANSWER, "reason": ""})
        return f"Thought: done\nAction: Finish({ANSWER})"
    if body.get("tools"):
        return Reply(tool_calls=[{"type": "function", "function": {
            "name": body["tool_choice"]["function"]["name"], "arguments": json.dumps(JSON_PLAN)}}])
    if body.get("response_format"):
        return json.dumps(JSON_PLAN)
    return PLAN
